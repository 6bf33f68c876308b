//! Conflicts through the binary: both sides write the SAME keys at once under
//! last-write-wins and end equal, nothing loops, delta columns keep every increment, and
//! `fail` stops the task until the data is fixed, then resumes without skipping anything.

mod common;

use std::time::Duration;

use common::{PGBENCH_TABLES, Pgsync, TaskFile, checksum, pgbench_pair, wait_converged};
use pgsync_testkit::{Cluster, PgbenchLoad, RunningPgbench};

/// pgbench -N over the hot keys [1, 1000] on both sides; history.tid records the side.
const HOT_UPDATES: &str = "\\set aid random(1, 1000)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:side, 1, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

/// Deletes, re-inserts and updates over 200 hot keys; every run also inserts one row into
/// an insert-only table. Paced: most of these changes meet a conflict on the other side,
/// and each such transaction is applied on the careful path.
const DELETES_AND_REINSERTS: &str = "\\set k random(1, 200)
\\set op random(1, 3)
\\set v random(1, 1000000)
\\if :op = 1
DELETE FROM kv WHERE k = :k;
\\elif :op = 2
INSERT INTO kv VALUES (:k, :v, :side) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, side = EXCLUDED.side;
\\else
UPDATE kv SET v = :v, side = :side WHERE k = :k;
\\endif
INSERT INTO runs (side, k) VALUES (:side, :k);
\\sleep 5 ms
";

const KV: &str = "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL, side int NOT NULL);
INSERT INTO kv SELECT g, 0, 0 FROM generate_series(1, 200) g;
CREATE TABLE runs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), side int NOT NULL, k int NOT NULL);";

/// The load runs this long on each side (the bench script runs the 60 s version).
const LOAD: Duration = Duration::from_secs(20);

fn load(script: &std::path::Path, side: u32) -> PgbenchLoad {
    PgbenchLoad::script(script)
        .clients(2)
        .duration(LOAD)
        .define("side", side)
}

/// Runs `script` on both sides at once; returns the transactions of each.
async fn both_sides(a: &Cluster, b: &Cluster, script: &str) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load.sql");
    std::fs::write(&path, script).unwrap();
    let on_a: RunningPgbench = a.pgbench().spawn(&load(&path, 1)).unwrap();
    let on_b: RunningPgbench = b.pgbench().spawn(&load(&path, 2)).unwrap();
    let (ra, rb) = (on_a.finish().await.unwrap(), on_b.finish().await.unwrap());
    assert!(
        ra.transactions > 100 && rb.transactions > 100,
        "{ra:?} {rb:?}"
    );
    (ra.transactions, rb.transactions)
}

async fn one(c: &Cluster, sql: &str) -> i64 {
    c.client()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// Conflicts logged on `c`, per kind.
async fn conflicts(c: &Cluster) -> Vec<(String, i64)> {
    c.client()
        .await
        .unwrap()
        .query(
            "SELECT kind, count(*) FROM pgsync.conflicts GROUP BY kind ORDER BY kind",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until every table of `tables` has its primary key on B and, with
/// last-write-wins, the tombstone trigger on both sides: the task is streaming both ways.
async fn ready(a: &Cluster, b: &Cluster, tables: &[&str], triggers: bool, log: &Pgsync) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let list = tables.join(",");
    let sql = format!(
        "SELECT (SELECT count(*) FROM pg_index WHERE indisprimary
                   AND indrelid::regclass::text = ANY (string_to_array('{list}', ',')))
              + (SELECT count(*) FROM pg_trigger WHERE tgname = 'pgsync_tombstone'
                   AND tgrelid::regclass::text = ANY (string_to_array('{list}', ',')))"
    );
    let want = tables.len() as i64 * if triggers { 2 } else { 1 };
    loop {
        let b_ok = one(b, &sql).await >= want;
        let a_ok = !triggers || one(a, &sql).await >= want;
        if a_ok && b_ok {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never got ready:\n{}",
            log.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both sides still equal a moment later: nothing is bouncing between them.
async fn still_equal(a: &Cluster, b: &Cluster, tables: &[&str], log: &Pgsync) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in tables {
        let (x, y) = (checksum(a, t).await, checksum(b, t).await);
        assert_eq!(x, y, "{t}\n{}", log.log_text());
    }
}

#[tokio::test]
async fn both_sides_updating_the_same_keys_converge_under_last_write_wins_and_nothing_loops() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(
        &a,
        &b,
        "[sync]\ntwo_way = true\nconflict_policy = \"last_write_wins\"",
    );
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;

    ready(&a, &b, &["pgbench_accounts"], true, &pgsync).await;
    let (ta, tb) = both_sides(&a, &b, HOT_UPDATES).await;
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    let expected = (ta + tb) as i64;
    for c in [&a, &b] {
        assert_eq!(
            one(c, "SELECT count(*) FROM pgbench_history").await,
            expected
        );
    }
    still_equal(&a, &b, &PGBENCH_TABLES, &pgsync).await;
    // The crossing updates were seen and decided, on both sides.
    let (ca, cb) = (conflicts(&a).await, conflicts(&b).await);
    assert!(
        ca.iter()
            .chain(&cb)
            .any(|(k, n)| k == "update_newer_local" && *n > 0),
        "no crossing update was logged: A {ca:?} B {cb:?}"
    );
    // ... and counted in `pgsync status`.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(["status", "--config"])
        .arg(&task.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("conflicts: ") && text.contains("update_newer_local"),
        "{text}"
    );
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn with_abalance_as_a_delta_column_every_increment_of_both_sides_is_kept() {
    let (a, b) = pgbench_pair(1).await;
    a.client()
        .await
        .unwrap()
        .batch_execute("ALTER TABLE pgbench_accounts REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let task = TaskFile::new(
        &a,
        &b,
        "[sync]\ntwo_way = true\nconflict_policy = \"last_write_wins\"\n\
         [sync.delta_columns]\n\"public.pgbench_accounts\" = [\"abalance\"]",
    );
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    // B's updates need their old rows too.
    b.client()
        .await
        .unwrap()
        .batch_execute("ALTER TABLE pgbench_accounts REPLICA IDENTITY FULL")
        .await
        .unwrap();

    ready(&a, &b, &["pgbench_accounts"], true, &pgsync).await;
    let paced = format!("{HOT_UPDATES}\\sleep 10 ms\n");
    let (ta, tb) = both_sides(&a, &b, &paced).await;

    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    for c in [&a, &b] {
        assert_eq!(
            one(c, "SELECT count(*) FROM pgbench_history").await,
            (ta + tb) as i64
        );
        assert_eq!(
            one(c, "SELECT sum(abalance)::bigint FROM pgbench_accounts").await,
            one(
                c,
                "SELECT coalesce(sum(delta), 0)::bigint FROM pgbench_history"
            )
            .await,
            "an increment was lost on port {}",
            c.port()
        );
    }
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn deletes_and_reinserts_of_the_same_keys_on_both_sides_converge() {
    let (a, b) = pgbench_pair(1).await;
    a.client().await.unwrap().batch_execute(KV).await.unwrap();
    let task = TaskFile::new(
        &a,
        &b,
        "[sync]\ntwo_way = true\nconflict_policy = \"last_write_wins\"",
    );
    let pgsync = Pgsync::run(&task);
    let tables = ["kv", "runs"];
    wait_converged(&a, &b, &tables, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    ready(&a, &b, &tables, true, &pgsync).await;

    let (ta, tb) = both_sides(&a, &b, DELETES_AND_REINSERTS).await;

    wait_converged(&a, &b, &tables, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    for c in [&a, &b] {
        assert_eq!(one(c, "SELECT count(*) FROM runs").await, (ta + tb) as i64);
    }
    still_equal(&a, &b, &tables, &pgsync).await;
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn fail_stops_the_task_naming_the_conflict_and_a_restart_after_the_fix_skips_nothing() {
    let (a, b) = pgbench_pair(1).await;
    a.client().await.unwrap().batch_execute(KV).await.unwrap();
    let task = TaskFile::new(&a, &b, "[sync]\nconflict_policy = \"fail\"");
    let mut pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &["kv"], Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;

    // A row written on B alone, then the same key on A, then more work on A.
    let (ca, cb) = (a.client().await.unwrap(), b.client().await.unwrap());
    cb.batch_execute("INSERT INTO kv VALUES (500, 1, 2)")
        .await
        .unwrap();
    ca.batch_execute("INSERT INTO kv VALUES (500, 7, 1)")
        .await
        .unwrap();
    ca.batch_execute("UPDATE kv SET v = v + 1 WHERE k <= 10; DELETE FROM kv WHERE k = 20")
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), pgsync.child.wait())
        .await
        .expect("the task did not stop on the conflict")
        .unwrap();
    assert!(!status.success());
    let log = pgsync.log_text();
    assert!(
        log.contains("insert_exists") && log.contains("public") && log.contains("500"),
        "the stop does not name the conflict:\n{log}"
    );
    assert_eq!(
        one(&b, "SELECT count(*) FROM pgsync.conflicts WHERE kind = 'insert_exists' AND decision = 'fail'").await,
        1
    );

    // The user removes the local row; the task picks up where it stopped.
    cb.batch_execute("DELETE FROM kv WHERE k = 500")
        .await
        .unwrap();
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &["kv"], Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    assert_eq!(one(&b, "SELECT v::bigint FROM kv WHERE k = 500").await, 7);
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn in_marker_mode_every_applied_transaction_writes_the_marker_and_nothing_loops() {
    let (a, b) = pgbench_pair(1).await;
    a.client().await.unwrap().batch_execute(KV).await.unwrap();
    let task = TaskFile::new(
        &a,
        &b,
        "[sync]\ntwo_way = true\nconflict_policy = \"last_write_wins\"\nloop_prevention = \"marker\"",
    );
    let pgsync = Pgsync::run(&task);
    let tables = ["kv", "runs"];
    wait_converged(&a, &b, &tables, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    ready(&a, &b, &tables, true, &pgsync).await;
    let (ca, cb) = (a.client().await.unwrap(), b.client().await.unwrap());
    for i in 0..20 {
        ca.execute("INSERT INTO runs (side, k) VALUES (1, $1)", &[&i])
            .await
            .unwrap();
        cb.execute("INSERT INTO runs (side, k) VALUES (2, $1)", &[&i])
            .await
            .unwrap();
    }
    wait_converged(&a, &b, &tables, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    still_equal(&a, &b, &tables, &pgsync).await;
    for c in [&a, &b] {
        assert_eq!(one(c, "SELECT count(*) FROM runs").await, 40);
        assert!(
            one(
                c,
                "SELECT coalesce(sum(n), 0)::bigint FROM pgsync.loop_marker"
            )
            .await
                > 0,
            "port {}: no marker written (one per destination transaction)",
            c.port()
        );
    }
    assert!(pgsync.stop().await.success());
    // Release removes the marker, the conflict log, the tombstones and their triggers.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(["release", "--config"])
        .arg(&task.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::untouched(&a).await;
    common::untouched(&b).await;
    for c in [&a, &b] {
        assert_eq!(
            one(
                c,
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgsync_tombstone'"
            )
            .await,
            0
        );
    }
}
