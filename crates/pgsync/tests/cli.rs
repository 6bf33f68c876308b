//! The binary as users run it: bad task files and bad servers give a clear message, a
//! documented non-zero exit code, and leave both servers untouched.

mod common;

use std::process::Output;

use common::untouched;

use pgsync_testkit::{Cluster, HostAuth};

fn pgsync(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(args)
        .output()
        .unwrap()
}

fn write_task(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("task.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn task_text(a: &str, b: &str) -> String {
    format!("name = \"shop\"\n[source]\ndsn = \"{a}\"\n[destination]\ndsn = \"{b}\"\n")
}

#[test]
fn a_malformed_task_file_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_task(&dir, "name = \"shop\"\n[source\ndsn = \"x\"\n");
    let out = pgsync(&["precheck", "--config", &file]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn an_unknown_key_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = task_text("host=127.0.0.1 dbname=a", "host=127.0.0.1 dbname=b")
        + "[sync]\ntwo_wya = true\n";
    let out = pgsync(&["precheck", "--config", &write_task(&dir, &text)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("two_wya"));
}

#[test]
fn a_missing_task_file_exits_2() {
    let out = pgsync(&["precheck", "--config", "/nonexistent/task.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/task.toml"));
}

#[tokio::test]
async fn a_wrong_password_exits_3_without_printing_it_and_writes_nothing() {
    let a = Cluster::builder()
        .database("shop")
        .password(HostAuth::ScramSha256, "goodpw")
        .start()
        .await
        .unwrap();
    let b = Cluster::builder().database("shop").start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = task_text(&a.dsn().replace("goodpw", "badpw1"), &b.dsn());
    let out = pgsync(&["precheck", "--config", &write_task(&dir, &text)]);
    assert_eq!(out.status.code(), Some(3));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(!all.contains("badpw1"), "the password was printed:\n{all}");
    untouched(&a).await;
    untouched(&b).await;
}

#[tokio::test]
async fn wal_level_replica_exits_3_with_json_for_automation() {
    let a = Cluster::builder()
        .database("shop")
        .setting("wal_level", "replica")
        .start()
        .await
        .unwrap();
    let b = Cluster::builder().database("shop").start().await.unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = pgsync(&[
        "precheck",
        "--json",
        "--config",
        &write_task(&dir, &task_text(&a.dsn(), &b.dsn())),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let item = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "wal_level" && c["side"] == "source")
        .unwrap();
    assert_eq!(item["status"], "fail");
    assert!(
        item["fix"]
            .as_str()
            .unwrap()
            .contains("wal_level = logical")
    );
    untouched(&a).await;
    untouched(&b).await;
}

#[tokio::test]
async fn a_ready_pair_passes_precheck_with_exit_0() {
    let a = Cluster::builder().database("shop").start().await.unwrap();
    let b = Cluster::builder().database("shop").start().await.unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = pgsync(&[
        "precheck",
        "--config",
        &write_task(&dir, &task_text(&a.dsn(), &b.dsn())),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pass"), "{stdout}");
}
