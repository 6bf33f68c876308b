//! A backlog read through the SQL decoding functions (`sync.catch_up_min_wal_mb`), through
//! the `pgsync` binary: kill -9 while it is read and applied, restart, nothing lost or
//! written twice (pgbench_history has no key: a duplicate shows in its checksum). The
//! backlog is of small transactions, the kind a catch-up is for.

mod common;

use std::time::Duration;

use common::{PGBENCH_TABLES, Pgsync, TaskFile, pgbench_pair, wait_converged};
use pgsync_testkit::PgbenchLoad;

async fn wait_log(p: &Pgsync, what: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !p.log_text().contains(what) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what:?} within {timeout:?}:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Small transactions: a teller's balance and a history row.
fn small_transactions(dir: &std::path::Path) -> PgbenchLoad {
    let path = dir.join("small.sql");
    std::fs::write(
        &path,
        "\\set tid random(1, 10)\n\\set aid random(1, 100000)\n\\set delta random(-5000, 5000)\n\
         BEGIN;\n\
         UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, 1, :aid, :delta, CURRENT_TIMESTAMP);\n\
         END;\n",
    )
    .unwrap();
    PgbenchLoad::script(path).clients(2)
}

#[tokio::test]
async fn kill_9_during_a_catch_up_then_restart_loses_and_duplicates_nothing() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "[sync]\ncatch_up_min_wal_mb = 1");
    let first = Pgsync::run(&task);
    wait_log(&first, "streaming changes", Duration::from_secs(120)).await;
    assert!(first.stop().await.success());

    // A backlog of several MB of WAL while pgsync is stopped.
    let dir = tempfile::tempdir().unwrap();
    a.pgbench()
        .run(&small_transactions(dir.path()).transactions_per_client(8000))
        .await
        .unwrap();
    let mut logs = String::new();
    for delay_ms in [0u64, 120, 400] {
        let mut p = Pgsync::run(&task);
        wait_log(&p, "catching up through", Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        p.kill9().await;
        logs.push_str(&p.log_text());
    }
    // More while it was down (again more than the threshold), then the last run reads it
    // all, through the SQL functions and then the stream.
    a.pgbench()
        .run(&small_transactions(dir.path()).transactions_per_client(8000))
        .await
        .unwrap();
    let last = Pgsync::run(&task);
    logs.push_str("--- final run ---\n");
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(120), || {
        logs.clone() + &last.log_text()
    })
    .await;
    let all = logs.clone() + &last.log_text();
    assert!(
        all.contains("catch-up read applied"),
        "a catch-up read was applied at least once:\n{all}"
    );
    assert!(last.stop().await.success());
}
