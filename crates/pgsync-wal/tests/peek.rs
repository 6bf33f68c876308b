//! Reading a slot through the SQL decoding functions against a real server: the same
//! messages as the stream, the slot untouched until advanced, and clear errors.

mod common;

use anyhow::{Result, ensure};
use common::*;
use pgsync_wal::peek::{SlotPeek, advance_slot};
use pgsync_wal::{Lsn, StartOptions, WalError};

async fn peek_all(
    client: &tokio_postgres::Client,
    options: &StartOptions,
    major: u32,
    upto: Option<Lsn>,
) -> Result<Vec<(Lsn, Vec<u8>)>> {
    let mut peek = SlotPeek::start(client, options, major, upto).await?;
    let mut out = Vec::new();
    while let Some(x) = peek.recv().await? {
        out.push((x.wal_start, x.data.to_vec()));
    }
    Ok(out)
}

#[tokio::test]
async fn a_peek_gives_the_streams_messages_and_leaves_the_slot_until_advanced() -> Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY);
             CREATE PUBLICATION p FOR TABLE t, u",
        )
        .await?;
    let created = create_slot(&cluster, "s").await?;
    for i in 0..50 {
        client
            .batch_execute(&format!(
                "BEGIN; INSERT INTO t VALUES ({i}, repeat('x', {i} * 40)); \
                 UPDATE t SET v = 'y' WHERE id = {i}; INSERT INTO u VALUES ({i}); COMMIT"
            ))
            .await?;
    }
    client
        .batch_execute("DELETE FROM t WHERE id < 10; TRUNCATE u")
        .await?;
    let major = connect(&cluster).await?.server_major();
    let options = StartOptions::new("s", ["p"]);

    let peeked = peek_all(&client, &options, major, None).await?;
    let commits = peeked.iter().filter(|(_, d)| d[0] == b'C').count();
    ensure!(commits == 51, "51 transactions, got {commits} commits");
    // Peeking does not consume: the same again.
    ensure!(peek_all(&client, &options, major, None).await? == peeked);

    // The stream sends the same pgoutput messages, in the same order.
    let mut stream = start(&cluster, &options.clone().start_at(created)).await?;
    for (i, (_, data)) in peeked.iter().enumerate() {
        let x = next(&mut stream).await?;
        ensure!(
            x.data.as_ref() == data.as_slice(),
            "message {i} differs: stream {:?}, peek {:?}",
            tag(&x),
            char::from(data[0])
        );
    }
    stream.stop().await?;

    // Up to a position: only what committed before it; then the slot moves to it.
    let (half, _) = peeked
        .iter()
        .filter(|(_, d)| d[0] == b'C')
        .nth(24)
        .expect("25 commits");
    let first = peek_all(&client, &options, major, Some(*half)).await?;
    let commits = first.iter().filter(|(_, d)| d[0] == b'C').count();
    ensure!(commits == 25, "25 transactions up to {half}, got {commits}");
    let confirmed = advance_slot(&client, "s", *half).await?;
    ensure!(confirmed == *half, "slot at {confirmed}, asked {half}");
    // A new read describes the relations again before their first change.
    let rows_only = |m: &[(Lsn, Vec<u8>)]| -> Vec<(Lsn, Vec<u8>)> {
        m.iter().filter(|(_, d)| d[0] != b'R').cloned().collect()
    };
    let rest = peek_all(&client, &options, major, None).await?;
    ensure!(
        rows_only(&rest) == rows_only(&peeked[first.len()..]),
        "after the advance the rest comes, and only the rest"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_slot_or_publication_is_a_clear_error() -> Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client().await?;
    let major = connect(&cluster).await?.server_major();
    let err = peek_all(&client, &StartOptions::new("nope", ["p"]), major, None)
        .await
        .expect_err("no such slot");
    let err = err.downcast::<WalError>()?;
    ensure!(
        matches!(&err, WalError::Server(e) if e.code.code() == "42704"),
        "{err:?}"
    );
    ensure!(err.to_string().contains("\"nope\""), "{err}");
    ensure!(!err.is_retryable(), "{err}");

    create_slot(&cluster, "s").await?;
    client.batch_execute("CREATE TABLE t (id int)").await?;
    client.batch_execute("INSERT INTO t VALUES (1)").await?;
    let missing = peek_all(
        &client,
        &StartOptions::new("s", ["missing_pub"]),
        major,
        None,
    )
    .await;
    if major < 18 {
        let err = missing.expect_err("a missing publication must fail");
        ensure!(err.to_string().contains("missing_pub"), "{err}");
    } else {
        // PostgreSQL 18 warns about a missing publication and sends nothing of it.
        let changes = missing?;
        ensure!(
            !changes.iter().any(|(_, d)| d[0] == b'I'),
            "nothing of a missing publication"
        );
    }
    Ok(())
}
