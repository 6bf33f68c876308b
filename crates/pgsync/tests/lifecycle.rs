//! The lifecycle through the binary: run refuses bad servers before writing anything,
//! status tells what the task does, release refuses while a runner holds the task and
//! then removes every object pgsync made on both sides.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{PGBENCH_TABLES, Pgsync, TaskFile, pgbench_pair, untouched, wait_converged};
use pgsync_testkit::Cluster;

fn pgsync(args: &[&str], task: &TaskFile) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(args)
        .arg("--config")
        .arg(&task.path)
        .output()
        .unwrap()
}

#[tokio::test]
async fn run_against_wal_level_replica_exits_3_and_writes_nothing() {
    let a = Cluster::builder()
        .database("bench")
        .setting("wal_level", "replica")
        .start()
        .await
        .unwrap();
    let b = Cluster::builder().database("bench").start().await.unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let task = TaskFile::new(&a, &b, "");
    let out = pgsync(&["run"], &task);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wal_level = logical"));
    untouched(&a).await;
    untouched(&b).await;
}

#[tokio::test]
async fn run_with_a_missing_table_exits_3_naming_it_and_writes_nothing() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(
        &a,
        &b,
        "[objects]\ninclude = [\"public.pgbench_accounts\", \"public.no_such_table\"]",
    );
    let out = pgsync(&["run"], &task);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_table"));
    untouched(&a).await;
    untouched(&b).await;
}

#[tokio::test]
async fn status_follows_the_task_and_release_removes_everything_on_both_sides() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "");
    let runner = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;

    let out = pgsync(&["status", "--json"], &task);
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["directions"][0]["phase"], "incremental", "{st}");
    assert!(st["runner_pid"].is_i64(), "{st}");
    assert_eq!(st["directions"][0]["slot"]["active"], true, "{st}");

    let refused = pgsync(&["release"], &task);
    assert_ne!(refused.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already being run"));

    assert!(runner.stop().await.success());
    let out = pgsync(&["status"], &task);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));

    let out = pgsync(&["release"], &task);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("replication slot pgsync_e2e_fwd"), "{text}");
    untouched(&a).await;
    untouched(&b).await;
    // The synced data itself stays.
    assert_eq!(
        common::checksum(&a, "pgbench_accounts").await,
        common::checksum(&b, "pgbench_accounts").await
    );
}

#[tokio::test]
async fn release_with_force_stops_a_running_task_first() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "");
    let mut runner = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;
    let out = pgsync(&["release", "--force"], &task);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The runner notices and stops on its own instead of starting over.
    let status = tokio::time::timeout(Duration::from_secs(60), runner.child.wait())
        .await
        .expect("runner kept going")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{}", runner.log_text());
    assert!(
        runner.log_text().contains("released while it ran"),
        "{}",
        runner.log_text()
    );
    untouched(&a).await;
    untouched(&b).await;
}

#[tokio::test]
async fn a_second_runner_of_the_same_task_is_refused_at_once() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "");
    let first = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        first.log_text()
    })
    .await;
    let started = std::time::Instant::now();
    let out = pgsync(&["run"], &task);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already being run"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused only after {:?}",
        started.elapsed()
    );
    assert!(first.stop().await.success());
}
