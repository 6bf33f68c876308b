//! The replication connection against real servers: authentication, slot commands, and the
//! typed errors a person sees when something is set up wrong.

mod common;

use anyhow::Result;
use common::*;
use pgsync_testkit::{Cluster, HostAuth};
use pgsync_wal::{
    CreateSlot, ReplicationConfig, ReplicationConnection, Retry, SlotSnapshot, StartOptions,
    WalError,
};

async fn password_cluster(auth: HostAuth) -> Result<Cluster> {
    Ok(Cluster::builder()
        .database("app")
        .password(auth, "correct horse")
        .start()
        .await?)
}

#[tokio::test]
async fn scram_and_md5_logins_work_with_the_right_password_and_fail_clearly_with_a_wrong_one()
-> Result<()> {
    for auth in [HostAuth::ScramSha256, HostAuth::Md5, HostAuth::Password] {
        let cluster = password_cluster(auth).await?;
        let mut conn = ReplicationConnection::connect(&config(&cluster)).await?;
        let id = conn.identify_system().await?;
        assert_eq!(id.dbname.as_deref(), Some("app"), "{auth:?}");
        assert!(!id.xlogpos.is_invalid());
        assert_eq!(conn.server_major(), cluster.major());
        conn.close().await?;

        let wrong = config(&cluster).password("battery staple");
        let err = ReplicationConnection::connect(&wrong).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(
            err.sqlstate().map(|s| s.code()),
            Some("28P01"),
            "{auth:?}: {text}"
        );
        assert_eq!(err.retry(), Retry::Never, "{text}");
        assert!(text.contains("password authentication failed"), "{text}");
        assert!(text.contains("PGPASSWORD"), "{text}");
        assert!(!text.contains("battery staple"), "{text}");

        let none = ReplicationConfig::parse_with_env(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=app",
                cluster.port()
            ),
            |_| None,
        )?;
        let err = ReplicationConnection::connect(&none).await.unwrap_err();
        assert!(matches!(err, WalError::Auth { .. }), "{err}");
        assert!(err.to_string().contains("none is set"), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn unix_socket_and_url_connections_work_and_identify_the_system() -> Result<()> {
    let cluster = cluster().await?;
    let dsn = format!(
        "host={} port={} user=postgres dbname=app",
        cluster.socket_dir().display(),
        cluster.port()
    );
    let mut conn = ReplicationConnection::connect(&ReplicationConfig::parse(&dsn)?).await?;
    assert!(!conn.is_tls());
    let sysid = cluster
        .client()
        .await?
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await?
        .get::<_, String>(0);
    assert_eq!(conn.identify_system().await?.system_id, sysid);

    // The same server through a postgres:// URL (trust over TCP).
    let url = format!("{}?application_name=url_test", cluster.url_for("app"));
    let mut conn = ReplicationConnection::connect(&ReplicationConfig::parse(&url)?).await?;
    assert_eq!(conn.identify_system().await?.system_id, sysid);
    Ok(())
}

#[tokio::test]
async fn slots_are_created_with_an_exported_snapshot_and_dropped() -> Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client().await?;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await?;
    let mut conn = connect(&cluster).await?;
    let created = conn.create_slot(&CreateSlot::new("select")).await?;
    assert_eq!(created.name, "select");
    let snapshot = created.snapshot_name.expect("a snapshot is exported");

    // A row written after the slot is not visible in the exported snapshot.
    client.batch_execute("INSERT INTO t VALUES (2)").await?;
    let reader = cluster.client().await?;
    reader
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {}",
            pgsync_names::sql::quote_literal(&snapshot)
        ))
        .await?;
    let n: i64 = reader
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 1);
    reader.batch_execute("COMMIT").await?;

    let slot_lsn = confirmed_flush(&client, "select").await?;
    assert_eq!(slot_lsn, created.consistent_point);
    conn.drop_slot("select", true).await?;
    let left: i64 = client
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await?
        .get(0);
    assert_eq!(left, 0);
    Ok(())
}

#[tokio::test]
async fn temporary_slots_disappear_with_their_connection() -> Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client().await?;
    let mut conn = connect(&cluster).await?;
    conn.create_slot(
        &CreateSlot::new("temp")
            .temporary(true)
            .snapshot(SlotSnapshot::Nothing),
    )
    .await?;
    let count = || async {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'temp'",
                &[],
            )
            .await?
            .get(0);
        Ok::<_, anyhow::Error>(n)
    };
    assert_eq!(count().await?, 1);
    conn.close().await?;
    eventually("the temporary slot to go", || async {
        Ok((count().await? == 0).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_server_without_wal_level_logical_says_how_to_fix_it() -> Result<()> {
    let cluster = Cluster::builder()
        .database("app")
        .setting("wal_level", "replica")
        .start()
        .await?;
    let mut conn = connect(&cluster).await?;
    let err = conn
        .create_slot(&CreateSlot::new("s").snapshot(SlotSnapshot::Nothing))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.sqlstate().map(|s| s.code()), Some("55000"), "{text}");
    assert_eq!(err.retry(), Retry::Never);
    assert!(text.contains("wal_level"), "{text}");
    assert!(
        text.contains("ALTER SYSTEM SET wal_level = logical"),
        "{text}"
    );
    assert!(text.contains("restart"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_missing_slot_is_a_definite_error_naming_the_slot() -> Result<()> {
    let cluster = cluster().await?;
    cluster
        .client()
        .await?
        .batch_execute("CREATE PUBLICATION p FOR ALL TABLES")
        .await?;
    let err = connect(&cluster)
        .await?
        .start_replication(&StartOptions::new("no_such_slot", ["p"]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.sqlstate().map(|s| s.code()), Some("42704"), "{text}");
    assert!(!err.is_retryable());
    assert!(text.contains("no_such_slot"), "{text}");
    assert!(text.contains("create the slot"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_slot_already_streaming_to_another_consumer_is_retryable_after_a_wait() -> Result<()> {
    let cluster = cluster().await?;
    cluster
        .client()
        .await?
        .batch_execute("CREATE PUBLICATION p FOR ALL TABLES")
        .await?;
    create_slot(&cluster, "busy").await?;
    let options = StartOptions::new("busy", ["p"]);
    let first = start(&cluster, &options).await?;
    let err = start(&cluster, &options).await.unwrap_err();
    let err = err.downcast::<WalError>()?;
    let text = err.to_string();
    assert_eq!(err.sqlstate().map(|s| s.code()), Some("55006"), "{text}");
    assert_eq!(err.retry(), Retry::AfterWait);
    assert!(text.contains("another consumer"), "{text}");
    assert!(text.contains("active_pid"), "{text}");

    // Once the first consumer stops, the second gets the slot.
    first.stop().await?;
    let second = eventually("the slot to be free", || async {
        match start(&cluster, &options).await {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if e.downcast_ref::<WalError>().map(WalError::retry) == Some(Retry::AfterWait) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    })
    .await?;
    second.stop().await?;
    Ok(())
}

#[tokio::test]
async fn options_the_server_is_too_old_for_are_refused_before_sending() -> Result<()> {
    let cluster = cluster().await?;
    let mut options = StartOptions::new("s", ["p"]);
    options.origin_none = true;
    let result = connect(&cluster).await?.start_replication(&options).await;
    if cluster.major() >= 16 {
        // Accepted by the options check; the slot does not exist.
        assert_eq!(
            result.unwrap_err().sqlstate().map(|s| s.code()),
            Some("42704")
        );
    } else {
        let err = result.unwrap_err();
        assert!(
            matches!(err, WalError::Unsupported { needs: 16, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("PostgreSQL 16"), "{err}");
    }
    Ok(())
}
