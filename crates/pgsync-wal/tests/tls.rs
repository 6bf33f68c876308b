//! TLS with libpq's sslmode semantics against a server using a certificate made here.

mod common;

use std::path::Path;

use anyhow::Result;
use common::*;
use pgsync_testkit::TestCertificates;
use pgsync_wal::{ReplicationConfig, ReplicationConnection, Retry, WalError};

fn dsn(port: u16, host: &str, extra: &str) -> String {
    format!("host={host} port={port} user=postgres dbname=app {extra}")
}

async fn connect_dsn(dsn: &str) -> Result<ReplicationConnection, WalError> {
    ReplicationConnection::connect(&ReplicationConfig::parse_with_env(dsn, |_| None)?).await
}

#[tokio::test]
async fn sslmodes_encrypt_verify_the_chain_and_the_host_name_like_libpq() -> Result<()> {
    let mut cluster = cluster().await?;
    let port = cluster.port();

    // Before the server has TLS: prefer falls back to clear text, require refuses.
    let plain = connect_dsn(&dsn(port, "127.0.0.1", "sslmode=prefer")).await?;
    assert!(!plain.is_tls());
    let err = connect_dsn(&dsn(port, "127.0.0.1", "sslmode=require"))
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("does not accept TLS"), "{err}");

    let certs = TestCertificates::generate()?;
    cluster.serve_tls(&certs)?;
    cluster.restart().await?;
    let dir = std::env::temp_dir().join(format!("pgsync-wal-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &certs.ca_pem)?;
    let other_ca_file = dir.join("other-ca.pem");
    std::fs::write(&other_ca_file, TestCertificates::generate()?.ca_pem)?;
    let root = |p: &Path| format!("sslrootcert={}", p.display());

    // require: encrypted, nothing verified.
    let mut conn = connect_dsn(&dsn(
        port,
        "127.0.0.1",
        "sslmode=require application_name=tls_require",
    ))
    .await?;
    assert!(conn.is_tls());
    conn.identify_system().await?;
    let encrypted: bool = cluster
        .client()
        .await?
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'tls_require'",
            &[],
        )
        .await?
        .get(0);
    assert!(encrypted, "the server sees the connection as TLS");

    // verify-full with the CA and the name in the certificate.
    let full = format!("sslmode=verify-full {}", root(&ca_file));
    let mut conn = connect_dsn(&dsn(port, "localhost", &full)).await?;
    assert!(conn.is_tls());
    conn.identify_system().await?;

    // verify-full with a host name the certificate does not list.
    let err = connect_dsn(&dsn(port, "127.0.0.1", &full))
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::Tls { .. }), "{err}");
    assert_eq!(err.retry(), Retry::Never);
    assert!(
        err.to_string().contains("not valid for this host name"),
        "{err}"
    );

    // verify-ca checks the chain only, so the address is fine.
    let ca_only = format!("sslmode=verify-ca {}", root(&ca_file));
    assert!(
        connect_dsn(&dsn(port, "127.0.0.1", &ca_only))
            .await?
            .is_tls()
    );

    // A CA that did not sign the certificate.
    let wrong = format!("sslmode=verify-full {}", root(&other_ca_file));
    let err = connect_dsn(&dsn(port, "localhost", &wrong))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not verify"), "{err}");

    // A verify mode without roots says what to set.
    let err = connect_dsn(&dsn(
        port,
        "localhost",
        "sslmode=verify-full sslrootcert=/nonexistent",
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sslrootcert"), "{err}");

    std::fs::remove_dir_all(dir)?;
    Ok(())
}
