//! Renames on the way, two-way: schema `app` on A is `app_copy` on B, one table and one
//! column have other names there, and every other name is lower-cased. Both sides run a
//! pgbench-like load on their own keys; afterwards each A table equals its B counterpart
//! row for row (names aside).

mod common;

use std::time::Duration;

use common::{Pgsync, TaskFile, checksum};
use pgsync_testkit::{Cluster, PgbenchLoad};

const SCHEMA_A: &str = r#"
CREATE SCHEMA app;
CREATE TABLE app."Accounts" (aid int PRIMARY KEY, bid int NOT NULL, "Balance" int NOT NULL DEFAULT 0,
                             filler char(84));
CREATE TABLE app."Branches" (bid int PRIMARY KEY, "Total" bigint NOT NULL DEFAULT 0);
CREATE TABLE app."History" (side int NOT NULL, aid int NOT NULL, delta int NOT NULL,
                            "At" timestamptz NOT NULL DEFAULT now());
ALTER TABLE app."History" REPLICA IDENTITY FULL;
INSERT INTO app."Branches" (bid) SELECT g FROM generate_series(1, 10) g;
INSERT INTO app."Accounts" (aid, bid) SELECT g, 1 + g % 10 FROM generate_series(1, 20000) g;
"#;

const TASK: &str = r#"
[sync]
two_way = true
[objects]
include = ["app.*"]
[mapping]
case = "lower"
schemas = { app = "app_copy" }
[mapping.tables]
'app."Branches"' = "app_copy.branch_totals"
[mapping.columns]
'app."Accounts"' = { Balance = "bal" }
"#;

/// The same transaction on each side, under that side's names.
const SCRIPT_A: &str = r#"\set aid random(:lo, :hi)
\set bid random(:blo, :bhi)
\set delta random(-5000, 5000)
BEGIN;
UPDATE app."Accounts" SET "Balance" = "Balance" + :delta WHERE aid = :aid;
UPDATE app."Branches" SET "Total" = "Total" + :delta WHERE bid = :bid;
INSERT INTO app."History" (side, aid, delta) VALUES (:side, :aid, :delta);
END;
"#;

const SCRIPT_B: &str = r#"\set aid random(:lo, :hi)
\set bid random(:blo, :bhi)
\set delta random(-5000, 5000)
BEGIN;
UPDATE app_copy.accounts SET bal = bal + :delta WHERE aid = :aid;
UPDATE app_copy.branch_totals SET total = total + :delta WHERE bid = :bid;
INSERT INTO app_copy.history (side, aid, delta) VALUES (:side, :aid, :delta);
END;
"#;

/// (A table, its B name).
const PAIRS: [(&str, &str); 3] = [
    (r#"app."Accounts""#, "app_copy.accounts"),
    (r#"app."Branches""#, "app_copy.branch_totals"),
    (r#"app."History""#, "app_copy.history"),
];

async fn wait_mapped_equal(a: &Cluster, b: &Cluster, timeout: Duration, log: &dyn Fn() -> String) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut diffs = Vec::new();
        for (ta, tb) in PAIRS {
            let (x, y) = (checksum(a, ta).await, checksum(b, tb).await);
            if x != y {
                diffs.push(format!("{ta} {x:?} vs {tb} {y:?}"));
            }
        }
        if diffs.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not converged after {timeout:?}:\n{}\n--- pgsync log ---\n{}",
            diffs.join("\n"),
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_renamed_lower_cased_schema_syncs_both_ways_under_load_and_ends_equal() {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute(SCHEMA_A)
        .await
        .unwrap();
    let task = TaskFile::new(&a, &b, TASK);
    let pgsync = Pgsync::run(&task);
    let log = || pgsync.log_text();
    wait_mapped_equal(&a, &b, Duration::from_secs(90), &log).await;

    // B's names are the mapped ones, and nothing else was created there.
    let tables: Vec<String> = b
        .client()
        .await
        .unwrap()
        .query(
            "SELECT table_schema || '.' || table_name || '(' || string_agg(column_name::text, ',' ORDER BY ordinal_position) || ')'
             FROM information_schema.columns WHERE table_schema IN ('app', 'app_copy')
             GROUP BY table_schema, table_name ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "app_copy.accounts(aid,bid,bal,filler)",
            "app_copy.branch_totals(bid,total)",
            "app_copy.history(side,aid,delta,at)",
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let (script_a, script_b) = (dir.path().join("a.sql"), dir.path().join("b.sql"));
    std::fs::write(&script_a, SCRIPT_A).unwrap();
    std::fs::write(&script_b, SCRIPT_B).unwrap();
    let load = |script: &std::path::Path, keys: (u32, u32), branches: (u32, u32), side: u32| {
        PgbenchLoad::script(script)
            .clients(2)
            .duration(Duration::from_secs(8))
            .define("lo", keys.0)
            .define("hi", keys.1)
            .define("blo", branches.0)
            .define("bhi", branches.1)
            .define("side", side)
    };
    let on_a = a
        .pgbench()
        .database("shop")
        .spawn(&load(&script_a, (1, 10_000), (1, 5), 1))
        .unwrap();
    let on_b = b
        .pgbench()
        .database("shop")
        .spawn(&load(&script_b, (10_001, 20_000), (6, 10), 2))
        .unwrap();
    let (ra, rb) = (on_a.finish().await.unwrap(), on_b.finish().await.unwrap());
    assert!(
        ra.transactions > 100 && rb.transactions > 100,
        "{ra:?} {rb:?}"
    );
    wait_mapped_equal(&a, &b, Duration::from_secs(120), &log).await;

    // Every transaction wrote one history row on its side; each side has all of them once.
    let expected = (ra.transactions + rb.transactions) as i64;
    assert_eq!(checksum(&a, r#"app."History""#).await.0, expected);
    assert_eq!(checksum(&b, "app_copy.history").await.0, expected);
    // Still equal a moment later: nothing travels back and forth.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        checksum(&a, r#"app."History""#).await.0,
        expected,
        "{}",
        log()
    );
    assert!(pgsync.stop().await.success());
}
