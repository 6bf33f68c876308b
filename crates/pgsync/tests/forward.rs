//! The forward task end to end, through the `pgsync` binary: full copy and streaming under
//! a pgbench load, crashes (kill -9) at random points, a destination restart.

mod common;

use std::time::Duration;

use common::{PGBENCH_TABLES, Pgsync, TaskFile, pgbench_pair, wait_converged};
use pgsync_testkit::PgbenchLoad;

#[tokio::test]
async fn pgbench_during_and_after_the_copy_ends_with_equal_tables() {
    let (a, b) = pgbench_pair(2).await;
    let load = a
        .pgbench()
        .spawn(
            &PgbenchLoad::simple_update()
                .clients(2)
                .duration(Duration::from_secs(8)),
        )
        .unwrap();
    let task = TaskFile::new(&a, &b, "");
    let pgsync = Pgsync::run(&task);
    let report = load.finish().await.unwrap();
    assert!(report.transactions > 100, "{report:?}");
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(120), || {
        pgsync.log_text()
    })
    .await;
    let status = pgsync.stop().await;
    assert!(status.success(), "pgsync exited with {status}");
}

#[tokio::test]
async fn kill_9_at_random_points_then_restart_loses_and_duplicates_nothing() {
    let (a, b) = pgbench_pair(4).await;
    let load = a
        .pgbench()
        .spawn(
            &PgbenchLoad::simple_update()
                .clients(2)
                .duration(Duration::from_secs(20)),
        )
        .unwrap();
    let task = TaskFile::new(&a, &b, "");
    // Kill during the copy (early) and during streaming (later), then let it finish.
    let mut logs = String::new();
    for delay_ms in [700u64, 2500, 4100, 6300] {
        let mut p = Pgsync::run(&task);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        p.kill9().await;
        logs.push_str(&p.log_text());
    }
    let pgsync = Pgsync::run(&task);
    load.finish().await.unwrap();
    logs.push_str("--- final run ---\n");
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(180), || {
        logs.clone() + &pgsync.log_text()
    })
    .await;
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn a_destination_restart_mid_stream_is_survived() {
    let (a, mut b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "");
    let pgsync = Pgsync::run(&task);
    a.pgbench()
        .run(&PgbenchLoad::simple_update().transactions_per_client(200))
        .await
        .unwrap();
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;

    let load = a
        .pgbench()
        .spawn(&PgbenchLoad::simple_update().duration(Duration::from_secs(6)))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.restart().await.unwrap();
    load.finish().await.unwrap();
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn a_changes_only_task_streams_into_tables_that_exist_already() {
    let (a, b) = pgbench_pair(1).await;
    // pgbench -i writes the same rows on both sides; only changes are to flow.
    b.pgbench().init(1).await.unwrap();
    let task = TaskFile::new(&a, &b, "[sync]\nschema = false\nfull = false");
    let pgsync = Pgsync::run(&task);
    // Changes from the moment the slot exists: start the load once streaming began.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pgsync.log_text().contains("streaming changes") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            pgsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.pgbench()
        .run(&PgbenchLoad::simple_update().transactions_per_client(300))
        .await
        .unwrap();
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    let copied = pgsync.log_text().contains("initial sync done");
    assert!(!copied, "no copy was asked for:\n{}", pgsync.log_text());
    assert!(pgsync.stop().await.success());
}
