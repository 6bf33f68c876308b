//! `pgsync precheck` and `pgsync run` between two servers that accept TCP clients only over
//! TLS (`hostssl` lines only in pg_hba.conf), with `sslmode=verify-full` DSNs: every
//! session pgsync opens (precheck, copy, apply, state, replication) is encrypted.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Pgsync, TaskFile, wait_converged};
use pgsync_testkit::{Cluster, HostAuth, TestCertificates};

/// A server with `ssl = on` that lets TCP clients in only over TLS, and its CA file.
async fn tls_only_server(dir: &Path, name: &str) -> (Cluster, PathBuf) {
    let mut cluster = Cluster::builder()
        .database("shop")
        .password(HostAuth::ScramSha256, "pw")
        .start()
        .await
        .unwrap();
    // A prepared source bounds the WAL its slot may hold (else precheck warns).
    cluster
        .append_settings(&[("max_slot_wal_keep_size", "1GB")])
        .unwrap();
    let certs = TestCertificates::generate().unwrap();
    cluster.require_tls(&certs).await.unwrap();
    let ca_file = certs.write_ca(&dir.join(format!("{name}-ca.pem"))).unwrap();
    (cluster, ca_file)
}

fn dsn(cluster: &Cluster, ca: &Path) -> String {
    format!(
        "host=localhost port={} user=postgres password=pw dbname=shop sslmode=verify-full \
         sslrootcert={}",
        cluster.port(),
        ca.display()
    )
}

/// (sessions from TCP clients, how many of them are not encrypted).
async fn tcp_sessions(c: &Cluster) -> (i64, i64) {
    let row = c
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.client_addr IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn precheck_and_run_work_between_two_tls_only_servers_with_verify_full() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, ca_a), (b, ca_b)) = tokio::join!(
        tls_only_server(dir.path(), "a"),
        tls_only_server(dir.path(), "b")
    );
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 500) i",
        )
        .await
        .unwrap();
    let task = TaskFile::new(&a, &b, "");
    std::fs::write(
        &task.path,
        format!(
            "name = \"e2e\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n",
            dsn(&a, &ca_a),
            dsn(&b, &ca_b)
        ),
    )
    .unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(["precheck", "--config"])
        .arg(&task.path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("TLS (sslmode=verify-full)"), "{stdout}");

    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &["t"], Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    a.client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (501, 'streamed'); UPDATE t SET v = 'x' WHERE id = 1")
        .await
        .unwrap();
    wait_converged(&a, &b, &["t"], Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;

    let walsender_tls: Option<bool> = a
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(walsender_tls, Some(true), "{}", pgsync.log_text());
    for side in [&a, &b] {
        let (sessions, clear) = tcp_sessions(side).await;
        assert!(sessions > 0, "pgsync has sessions open");
        assert_eq!(clear, 0, "every pgsync session is encrypted");
    }
    let log = pgsync.log_text();
    assert!(!log.contains("password=pw"), "{log}");
    let status = pgsync.stop().await;
    assert!(status.success(), "pgsync exited with {status}");
}
