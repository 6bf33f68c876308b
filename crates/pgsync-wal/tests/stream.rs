//! The stream against real servers: feedback while the consumer is slow, idle slots that
//! do not hold WAL, and the server going away.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::*;
use pgsync_testkit::Cluster;
use pgsync_wal::{Lsn, Retry, StartOptions, WalError};

async fn cluster_with_timeout(timeout: &str) -> Result<Cluster> {
    Ok(Cluster::builder()
        .database("app")
        .setting("wal_sender_timeout", timeout)
        .start()
        .await?)
}

async fn walsender_pid(client: &tokio_postgres::Client) -> Result<Option<i32>> {
    Ok(client
        .query_opt(
            "SELECT pid FROM pg_stat_replication WHERE application_name = 'pgsync'",
            &[],
        )
        .await?
        .map(|r| r.get(0)))
}

#[tokio::test]
async fn a_consumer_that_does_not_read_for_longer_than_wal_sender_timeout_stays_connected()
-> Result<()> {
    let cluster = cluster_with_timeout("3s").await?;
    let client = cluster.client().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE PUBLICATION p FOR TABLE t",
        )
        .await?;
    create_slot(&cluster, "slow").await?;
    let mut options = StartOptions::new("slow", ["p"]);
    options.buffer_messages = 4;
    options.buffer_bytes = 64 * 1024;
    let mut stream = start(&cluster, &options).await?;
    assert_eq!(
        stream.status_interval(),
        Duration::from_secs(1),
        "a third of 3 s"
    );
    let pid = eventually("the walsender", || walsender_pid(&client)).await?;

    // 20 transactions of 1000 rows of ~500 bytes: far more than the stream buffers and the
    // socket hold, so the walsender blocks on a full socket while nobody reads.
    for i in 0..20 {
        client
            .execute(
                "INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series($1::int, $1 + 999) g",
                &[&(i * 1000)],
            )
            .await?;
    }
    // The slow consumer: well over twice wal_sender_timeout without reading.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        walsender_pid(&client).await?,
        Some(pid),
        "the walsender is still the same"
    );

    let (mut inserts, mut commits) = (0, 0);
    while commits < 20 {
        let x = next(&mut stream).await?;
        match tag(&x) {
            'I' => inserts += 1,
            'C' => {
                commits += 1;
                stream.confirm(x.wal_start);
            }
            _ => {}
        }
    }
    assert_eq!(inserts, 20_000);
    let log = cluster.log_tail(200);
    ensure!(!log.contains("replication timeout"), "server log: {log}");
    stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_idle_slot_advances_past_unrelated_wal_without_the_consumer_confirming_it() -> Result<()>
{
    let cluster = cluster_with_timeout("3s").await?;
    let client = cluster.client().await?;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
             CREATE PUBLICATION p FOR TABLE a",
        )
        .await?;
    create_slot(&cluster, "idle").await?;
    let mut stream = start(&cluster, &StartOptions::new("idle", ["p"])).await?;
    let initial = stream.confirmed();

    // One published transaction, received but not confirmed: the slot must not pass it.
    client.execute("INSERT INTO a VALUES (1)", &[]).await?;
    let got = recv_until(&mut stream, |g| g.last().map(tag) == Some('C')).await?;
    let commit = got.last().expect("a commit").wal_start;
    for i in 0..100 {
        client.execute("INSERT INTO b VALUES ($1)", &[&i]).await?;
    }
    let unrelated_end = current_lsn(&client).await?;
    // Two status updates later the server still has the slot before the commit.
    let reply_time = || async {
        let row = client
            .query_opt(
                "SELECT reply_time, flush_lsn::text FROM pg_stat_replication \
                 WHERE application_name = 'pgsync'",
                &[],
            )
            .await?;
        Ok::<_, anyhow::Error>(
            row.map(|r| (r.get::<_, std::time::SystemTime>(0), r.get::<_, String>(1))),
        )
    };
    let (mut last, _) = eventually("a status update", || async { reply_time().await }).await?;
    for _ in 0..2 {
        let before = last;
        (last, _) = eventually("the next status update", || async {
            Ok(reply_time().await?.filter(|(t, _)| *t > before))
        })
        .await?;
    }
    let held = confirmed_flush(&client, "idle").await?;
    assert!(
        held < commit,
        "slot at {held}, unconfirmed commit at {commit}"
    );
    assert_eq!(stream.confirmed(), initial);

    // Confirmed and finished with: the stream is idle again, and keepalives carry the
    // slot past the unrelated writes although no message about them was ever received.
    stream.confirm(commit);
    stream.mark_done();
    for i in 100..200 {
        client.execute("INSERT INTO b VALUES ($1)", &[&i]).await?;
    }
    let target = current_lsn(&client).await?.max(unrelated_end);
    let reached = eventually("the slot to pass the unrelated writes", || async {
        let lsn = confirmed_flush(&client, "idle").await?;
        Ok((lsn >= target).then_some(lsn))
    })
    .await?;
    assert!(reached > commit);
    assert_eq!(
        stream.confirmed(),
        commit,
        "the consumer confirmed nothing more"
    );
    // Nothing about table b reached the consumer.
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.recv()).await;
    if let Ok(Ok(Some(x))) = &extra {
        assert!(!matches!(tag(x), 'I' | 'U' | 'D'), "unexpected {x:?}");
    }
    stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_server_crash_mid_stream_is_a_retryable_connection_loss() -> Result<()> {
    let mut cluster = cluster().await?;
    let client = cluster.client().await?;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await?;
    create_slot(&cluster, "crash").await?;
    let mut stream = start(&cluster, &StartOptions::new("crash", ["p"])).await?;
    client
        .execute("INSERT INTO t SELECT generate_series(1, 1000)", &[])
        .await?;
    let first = next(&mut stream).await?;
    assert_eq!(tag(&first), 'B');
    cluster.crash().await?;
    let err = recv_to_end(&mut stream)
        .await?
        .expect("an error, not a clean end");
    assert!(matches!(err, WalError::ConnectionLost { .. }), "{err}");
    assert_eq!(err.retry(), Retry::Now);
    assert!(
        err.to_string()
            .contains("connection to the server was lost"),
        "{err}"
    );
    // Asking again does not pretend the stream is fine.
    assert!(matches!(stream.recv().await, Err(WalError::Ended)));
    Ok(())
}

#[tokio::test]
async fn a_server_shutting_down_ends_the_stream_without_losing_received_messages() -> Result<()> {
    let mut cluster = cluster().await?;
    let client = cluster.client().await?;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await?;
    create_slot(&cluster, "shutdown").await?;
    let mut stream = start(&cluster, &StartOptions::new("shutdown", ["p"])).await?;
    client.execute("INSERT INTO t VALUES (1)", &[]).await?;
    let got = recv_until(&mut stream, |g| g.last().map(tag) == Some('C')).await?;
    stream.confirm(got.last().expect("commit").wal_start);
    drop(client);
    cluster.stop().await?;
    // Either a clean end (the walsender finishes the copy) or a lost connection: both are
    // not a protocol violation, and a lost connection is retryable.
    if let Some(err) = recv_to_end(&mut stream).await? {
        assert!(err.is_retryable(), "{err}");
        assert!(!matches!(err, WalError::Protocol(_)), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn stop_reports_the_confirmed_position_to_the_slot() -> Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client().await?;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await?;
    let start_lsn = create_slot(&cluster, "s").await?;
    let mut stream = start(&cluster, &StartOptions::new("s", ["p"])).await?;
    assert_eq!(stream.confirmed(), start_lsn);
    client.execute("INSERT INTO t VALUES (1)", &[]).await?;
    let got = recv_until(&mut stream, |g| g.last().map(tag) == Some('C')).await?;
    let tags: String = got.iter().map(tag).collect();
    assert_eq!(tags, "BRIC");
    let commit: Lsn = got[3].wal_start;
    stream.confirm(commit);
    stream.confirm(start_lsn); // never moves back
    assert_eq!(stream.confirmed(), commit);
    stream.stop().await?;
    assert_eq!(confirmed_flush(&client, "s").await?, commit);
    Ok(())
}
