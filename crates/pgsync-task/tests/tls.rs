//! A task's connections to a server that accepts only TLS over TCP (`ssl = on`, `hostssl`
//! lines only in pg_hba.conf): the SQL sessions and the replication connection both follow
//! the DSN's sslmode, and what cannot work is refused with a message that says what to
//! change.

use std::path::{Path, PathBuf};

use pgsync_task::precheck::{self, Side, Status};
use pgsync_task::{Endpoint, TaskSpec};
use pgsync_testkit::{Cluster, HostAuth, TestCertificates};
use pgsync_wal::{ReplicationConnection, WalError};

/// A server with `ssl = on` whose pg_hba.conf lets TCP clients in only over TLS (the
/// Unix socket stays open for the test's own checks); returns it and its CA file.
async fn tls_only_server(dir: &Path, name: &str) -> (Cluster, PathBuf) {
    let mut cluster = Cluster::builder()
        .database("shop")
        .password(HostAuth::ScramSha256, "s3cret pw")
        .start()
        .await
        .unwrap();
    let certs = TestCertificates::generate().unwrap();
    cluster.require_tls(&certs).await.unwrap();
    let ca_file = certs.write_ca(&dir.join(format!("{name}-ca.pem"))).unwrap();
    (cluster, ca_file)
}

fn dsn(cluster: &Cluster, host: &str, extra: &str) -> String {
    format!(
        "host={host} port={} user=postgres password='s3cret pw' dbname=shop {extra}",
        cluster.port()
    )
}

fn endpoint(dsn: &str) -> Endpoint {
    Endpoint::parse_with(dsn, |_| None).unwrap()
}

fn verify_full(ca: &Path) -> String {
    format!("sslmode=verify-full sslrootcert={}", ca.display())
}

/// Whether the server sees the session as encrypted.
async fn session_is_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The whole error chain, as a person reads it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[tokio::test]
async fn sql_sessions_and_the_replication_connection_reach_a_tls_only_server_with_require_and_verify_full()
 {
    let dir = tempfile::tempdir().unwrap();
    let (a, ca) = tls_only_server(dir.path(), "a").await;

    for (host, extra) in [
        ("127.0.0.1", "sslmode=require".to_owned()),
        ("localhost", verify_full(&ca)),
        // `prefer` (libpq's default) and `allow` end up encrypted here too.
        ("127.0.0.1", "sslmode=prefer".to_owned()),
        ("127.0.0.1", "sslmode=allow".to_owned()),
    ] {
        let ep = endpoint(&dsn(&a, host, &extra));
        let client = ep
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{extra}: {}", chain(&e)));
        assert!(
            session_is_tls(&client).await,
            "{extra}: SQL session in clear"
        );

        let mut conn = ReplicationConnection::connect(&ep.replication_config().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(conn.is_tls(), "{extra}: replication connection in clear");
        conn.identify_system().await.unwrap();
        conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn precheck_over_tls_connects_both_sides_and_reports_the_sessions_as_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, ca_a), (b, ca_b)) = tokio::join!(
        tls_only_server(dir.path(), "a"),
        tls_only_server(dir.path(), "b")
    );
    let text = format!(
        "name = \"shop\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n",
        dsn(&a, "localhost", &verify_full(&ca_a)),
        dsn(&b, "localhost", &verify_full(&ca_b)),
    );
    let spec = TaskSpec::from_toml(&text, "tls.toml").unwrap();
    let report = precheck::run(&spec).await;
    for side in [Side::Source, Side::Destination] {
        let connect = report.get(side, "connect").expect("a connect item");
        assert_eq!(connect.status, Status::Pass, "{report}");
        let transport = report.get(side, "transport").expect("a transport item");
        assert_eq!(transport.status, Status::Pass, "{report}");
        assert!(
            transport.detail.contains("TLS (sslmode=verify-full)"),
            "{report}"
        );
    }
}

#[tokio::test]
async fn clear_text_and_a_host_name_the_certificate_does_not_list_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ca) = tls_only_server(dir.path(), "a").await;

    // sslmode=disable: pg_hba.conf has no line for clear text.
    let plain = endpoint(&dsn(&a, "127.0.0.1", "sslmode=disable"));
    let err = plain.connect().await.unwrap_err();
    assert_eq!(
        err.code().map(|c| c.code()),
        Some("28000"),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("no encryption"), "{}", chain(&err));
    let err = ReplicationConnection::connect(&plain.replication_config().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate().map(|c| c.code()), Some("28000"), "{err}");
    assert!(err.to_string().contains("no encryption"), "{err}");

    // The precheck says what to change.
    let text = format!(
        "name = \"shop\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n",
        dsn(&a, "127.0.0.1", "sslmode=disable"),
        dsn(&a, "127.0.0.1", "sslmode=require"),
    );
    let report = precheck::run(&TaskSpec::from_toml(&text, "tls.toml").unwrap()).await;
    let connect = report.get(Side::Source, "connect").unwrap();
    assert_eq!(connect.status, Status::Fail, "{report}");
    let fix = connect.fix.as_deref().unwrap_or_default();
    assert!(fix.contains("only TLS"), "{report}");
    assert!(fix.contains("sslmode=verify-full"), "{report}");
    assert!(!report.to_string().contains("s3cret"), "{report}");

    // verify-full to an address the certificate does not name.
    let wrong = endpoint(&dsn(&a, "127.0.0.1", &verify_full(&ca)));
    let err = wrong.connect().await.unwrap_err();
    let text = chain(&err);
    assert!(text.contains("not valid for this host name"), "{text}");
    assert!(text.contains("sslmode=verify-ca"), "{text}");
    let err = ReplicationConnection::connect(&wrong.replication_config().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::Tls { .. }), "{err}");
    assert!(
        err.to_string().contains("not valid for this host name"),
        "{err}"
    );
    let spec = format!(
        "name = \"shop\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n",
        dsn(&a, "127.0.0.1", &verify_full(&ca)),
        dsn(&a, "localhost", &verify_full(&ca)),
    );
    let report = precheck::run(&TaskSpec::from_toml(&spec, "tls.toml").unwrap()).await;
    let connect = report.get(Side::Source, "connect").unwrap();
    assert_eq!(connect.status, Status::Fail, "{report}");
    assert!(
        connect.detail.contains("not valid for this host name"),
        "{report}"
    );
    assert!(
        connect
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("sslmode"),
        "{report}"
    );

    // A CA that did not sign the server's certificate.
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestCertificates::generate().unwrap().ca_pem).unwrap();
    let err = endpoint(&dsn(&a, "localhost", &verify_full(&other_ca)))
        .connect()
        .await
        .unwrap_err();
    assert!(chain(&err).contains("did not verify"), "{}", chain(&err));
}
