//! Two-way sync through the binary: both sides write at once, every change reaches the
//! other side exactly once, and nothing loops.

mod common;

use std::time::Duration;

use common::{PGBENCH_TABLES, Pgsync, TaskFile, pgbench_pair, wait_converged};
use pgsync_testkit::PgbenchLoad;

/// pgbench's simple update on the key range [lo, hi]; history.tid records the side.
const SCRIPT: &str = "\\set aid random(:lo, :hi)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:side, 1, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

#[tokio::test]
async fn both_sides_writing_disjoint_keys_converge_and_nothing_loops() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "[sync]\ntwo_way = true");
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("update.sql");
    std::fs::write(&script, SCRIPT).unwrap();
    let load = |lo: u32, hi: u32, side: u32| {
        PgbenchLoad::script(&script)
            .clients(2)
            .duration(Duration::from_secs(6))
            .define("lo", lo)
            .define("hi", hi)
            .define("side", side)
    };
    let on_a = a.pgbench().spawn(&load(1, 50_000, 1)).unwrap();
    let on_b = b.pgbench().spawn(&load(50_001, 100_000, 2)).unwrap();
    let (ra, rb) = (on_a.finish().await.unwrap(), on_b.finish().await.unwrap());
    assert!(
        ra.transactions > 50 && rb.transactions > 50,
        "{ra:?} {rb:?}"
    );

    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(120), || {
        pgsync.log_text()
    })
    .await;
    // Each transaction inserted one history row on its own side: no row came back.
    let expected = (ra.transactions + rb.transactions) as i64;
    assert_eq!(history(&a).await, expected);
    assert_eq!(history(&b).await, expected);
    // Still equal a moment later: nothing is bouncing between the sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(history(&a).await, expected, "{}", pgsync.log_text());
    assert!(pgsync.stop().await.success());
}

async fn history(c: &pgsync_testkit::Cluster) -> i64 {
    c.client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn rows_written_on_b_while_the_initial_copy_runs_reach_a() {
    let (a, b) = pgbench_pair(3).await;
    let task = TaskFile::new(&a, &b, "[sync]\ntwo_way = true");
    let pgsync = Pgsync::run(&task);
    // As soon as the schema sync has made the table on B, an application writes to it.
    let cb = b.client().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cb
        .query_one(
            "SELECT to_regclass('public.pgbench_history') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never got the table:\n{}",
            pgsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut written = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        cb.execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (2, 1, 1, 1, now())",
            &[],
        )
        .await
        .unwrap();
        written += 1;
    }
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(120), || {
        pgsync.log_text()
    })
    .await;
    assert_eq!(history(&a).await, written);
    assert!(pgsync.stop().await.success());
}
