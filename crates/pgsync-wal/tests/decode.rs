//! End to end: a real server's changes through the stream, the pgoutput decoder and the
//! transaction assembler.

mod common;

use anyhow::{Result, bail, ensure};
use common::*;
use pgsync_testkit::Cluster;
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use pgsync_wal::txn::{Assembled, AssemblerConfig};
use pgsync_wal::{Change, StartOptions, Transaction, WalError};

async fn setup(cluster: &Cluster, ddl: &str, slot: &str) -> Result<tokio_postgres::Client> {
    let client = cluster.client().await?;
    client.batch_execute(ddl).await?;
    create_slot(cluster, slot).await?;
    Ok(client)
}

async fn reader(cluster: &Cluster, options: &StartOptions) -> Result<Reader> {
    Ok(Reader::new(
        start(cluster, options).await?,
        AssemblerConfig::default(),
    ))
}

/// Runs each statement in its own transaction (a multi-statement simple query would run
/// them all in one).
async fn each(client: &tokio_postgres::Client, statements: &[&str]) -> Result<()> {
    for sql in statements {
        client.batch_execute(sql).await?;
    }
    Ok(())
}

fn only_change(t: &Transaction) -> Result<Change> {
    let mut c = changes(t)?;
    ensure!(c.len() == 1, "expected one change, got {c:?}");
    Ok(c.remove(0))
}

#[tokio::test]
async fn every_dml_kind_truncate_and_logical_messages_arrive_decoded_in_order() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
        "dml",
    )
    .await?;
    let mut r = reader(&cluster, &StartOptions::new("dml", ["p"])).await?;
    each(
        &client,
        &[
            "INSERT INTO t VALUES (1, 'one')",
            "UPDATE t SET v = 'uno' WHERE id = 1",
            "UPDATE t SET id = 2 WHERE id = 1",
            "DELETE FROM t WHERE id = 2",
            "INSERT INTO t VALUES (3, NULL)",
            "TRUNCATE t",
            "BEGIN;
             INSERT INTO t VALUES (4, 'four');
             SELECT pg_logical_emit_message(true, 'pgsync.test', 'inside');
             INSERT INTO t VALUES (5, 'five');
             COMMIT;",
            "SELECT pg_logical_emit_message(false, 'pgsync.test', 'outside')",
        ],
    )
    .await?;

    let t = r.txn().await?;
    let Change::Insert { relation, new } = only_change(&t)? else {
        bail!("expected an insert in {t:?}");
    };
    assert_eq!(relation.name.to_string(), r#""public"."t""#);
    assert_eq!(
        (text(&new, 0), text(&new, 1)),
        (Some("1".into()), Some("one".into()))
    );
    assert!(t.end_lsn > t.commit_lsn && !t.streamed && t.origin.is_none());

    let Change::Update { old: None, new, .. } = only_change(&r.txn().await?)? else {
        bail!("expected an update without old key");
    };
    assert_eq!(text(&new, 1).as_deref(), Some("uno"));

    let Change::Update {
        old: Some(OldTuple::Key(old)),
        new,
        ..
    } = only_change(&r.txn().await?)?
    else {
        bail!("expected an update with the old key");
    };
    assert_eq!(
        (text(&old, 0), text(&new, 0)),
        (Some("1".into()), Some("2".into()))
    );

    let Change::Delete {
        old: OldTuple::Key(old),
        ..
    } = only_change(&r.txn().await?)?
    else {
        bail!("expected a delete by key");
    };
    assert_eq!(text(&old, 0).as_deref(), Some("2"));

    let Change::Insert { new, .. } = only_change(&r.txn().await?)? else {
        bail!("expected an insert");
    };
    assert_eq!(new.get(1), Some(ColumnValue::Null));

    let Change::Truncate { relations, options } = only_change(&r.txn().await?)? else {
        bail!("expected a truncate");
    };
    assert_eq!(relations.len(), 1);
    assert!(!options.cascade && !options.restart_identity);

    let t = r.txn().await?;
    let c = changes(&t)?;
    ensure!(c.len() == 3, "{c:?}");
    assert!(matches!(&c[0], Change::Insert { new, .. } if text(new, 0).as_deref() == Some("4")));
    assert!(
        matches!(&c[1], Change::Message { prefix, content, .. } if prefix == "pgsync.test" && &content[..] == b"inside")
    );
    assert!(matches!(&c[2], Change::Insert { new, .. } if text(new, 0).as_deref() == Some("5")));

    match r.next().await? {
        Assembled::Message(m) => {
            assert!(!m.transactional);
            assert_eq!(
                (m.prefix.as_str(), &m.content[..]),
                ("pgsync.test", &b"outside"[..])
            );
        }
        other => bail!("expected the non-transactional message, got {other:?}"),
    }
    r.stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn replica_identity_full_sends_whole_old_rows() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         ALTER TABLE t REPLICA IDENTITY FULL;
         INSERT INTO t VALUES (1, 'a', 10);
         CREATE PUBLICATION p FOR TABLE t",
        "full",
    )
    .await?;
    let mut r = reader(&cluster, &StartOptions::new("full", ["p"])).await?;
    each(
        &client,
        &[
            "UPDATE t SET n = 11 WHERE id = 1",
            "DELETE FROM t WHERE id = 1",
        ],
    )
    .await?;
    let Change::Update {
        old: Some(OldTuple::Full(old)),
        new,
        relation,
    } = only_change(&r.txn().await?)?
    else {
        bail!("expected an update with the full old row");
    };
    assert!(
        relation.columns.iter().all(|c| c.is_key),
        "FULL: every column is key"
    );
    assert_eq!(
        (0..3).map(|i| text(&old, i)).collect::<Vec<_>>(),
        [Some("1".into()), Some("a".into()), Some("10".into())]
    );
    assert_eq!(text(&new, 2).as_deref(), Some("11"));
    let Change::Delete {
        old: OldTuple::Full(old),
        ..
    } = only_change(&r.txn().await?)?
    else {
        bail!("expected a delete with the full old row");
    };
    assert_eq!(text(&old, 2).as_deref(), Some("11"));
    r.stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_update_that_leaves_a_toasted_column_alone_marks_it_unchanged() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, n int, big text);
         ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE PUBLICATION p FOR TABLE t",
        "toast",
    )
    .await?;
    let mut r = reader(&cluster, &StartOptions::new("toast", ["p"])).await?;
    each(
        &client,
        &[
            "INSERT INTO t VALUES (1, 0, repeat('0123456789', 10000))",
            "UPDATE t SET n = 1 WHERE id = 1",
            "UPDATE t SET big = 'small' WHERE id = 1",
        ],
    )
    .await?;
    let Change::Insert { new, .. } = only_change(&r.txn().await?)? else {
        bail!("expected the insert");
    };
    assert_eq!(text(&new, 2).map(|s| s.len()), Some(100_000));
    let Change::Update { new, .. } = only_change(&r.txn().await?)? else {
        bail!("expected the update");
    };
    assert_eq!(text(&new, 1).as_deref(), Some("1"));
    assert_eq!(new.get(2), Some(ColumnValue::Unchanged));
    assert!(new.has_unchanged());
    let Change::Update { new, .. } = only_change(&r.txn().await?)? else {
        bail!("expected the second update");
    };
    assert_eq!(text(&new, 2).as_deref(), Some("small"));
    r.stream.stop().await?;
    Ok(())
}

/// Writes one row in a transaction carrying replication origin `origin`, then one without.
async fn write_with_origin(client: &tokio_postgres::Client, origin: &str) -> Result<()> {
    client
        .query("SELECT pg_replication_origin_create($1)", &[&origin])
        .await?;
    client
        .query("SELECT pg_replication_origin_session_setup($1)", &[&origin])
        .await?;
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_replication_origin_xact_setup('0/ABCDEF', now());
             INSERT INTO t VALUES (1);
             COMMIT;",
        )
        .await?;
    each(
        client,
        &[
            "SELECT pg_replication_origin_session_reset()",
            "INSERT INTO t VALUES (2)",
        ],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_transaction_under_a_replication_origin_carries_its_origin_message() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t",
        "origin",
    )
    .await?;
    let mut r = reader(&cluster, &StartOptions::new("origin", ["p"])).await?;
    write_with_origin(&client, "pgsync_peer").await?;
    let t = r.txn().await?;
    let origin = t.origin.clone().expect("an origin");
    assert_eq!(origin.name, "pgsync_peer");
    assert_eq!(origin.lsn, "0/ABCDEF".parse()?);
    assert_eq!(changes(&t)?.len(), 1);
    let t = r.txn().await?;
    assert!(t.origin.is_none());
    r.stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn origin_none_keeps_transactions_from_other_origins_out_of_the_stream_on_16_and_later()
-> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t",
        "local_only",
    )
    .await?;
    let mut options = StartOptions::new("local_only", ["p"]);
    options.origin_none = true;
    if cluster.major() < 16 {
        let err = connect(&cluster)
            .await?
            .start_replication(&options)
            .await
            .unwrap_err();
        assert!(
            matches!(err, WalError::Unsupported { needs: 16, .. }),
            "{err}"
        );
        return Ok(());
    }
    let mut r = reader(&cluster, &options).await?;
    write_with_origin(&client, "pgsync_peer").await?;
    // Only the local transaction (row 2) arrives.
    let t = r.txn().await?;
    assert!(t.origin.is_none());
    let Change::Insert { new, .. } = only_change(&t)? else {
        bail!("expected an insert");
    };
    assert_eq!(text(&new, 0).as_deref(), Some("2"));
    r.stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_large_transaction_is_streamed_and_assembled_within_the_memory_budget() -> Result<()> {
    let cluster = Cluster::builder()
        .database("app")
        .setting("logical_decoding_work_mem", "64kB")
        .start()
        .await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE PUBLICATION p FOR TABLE t",
        "large",
    )
    .await?;
    let budget = 256 * 1024;
    let config = AssemblerConfig {
        memory_budget: budget,
        ..AssemblerConfig::default()
    };
    let mut r = Reader::new(
        start(&cluster, &StartOptions::new("large", ["p"])).await?,
        config,
    );
    client
        .execute(
            "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
            &[],
        )
        .await?;
    let t = r.txn().await?;
    assert!(t.streamed, "sent in stream blocks before the commit");
    assert_eq!(t.len(), 20_000);
    assert!(t.spilled_bytes() > 0, "most of it waited in the spill file");
    // One change (~300 bytes) may come on top of the budget before it is spilled.
    assert!(
        r.peak_memory <= budget + 1024,
        "peak {} > budget {budget}",
        r.peak_memory
    );
    let mut expect = 1;
    for change in t.changes() {
        let Change::Insert { new, .. } = change? else {
            bail!("expected inserts only");
        };
        assert_eq!(text(&new, 0), Some(expect.to_string()));
        expect += 1;
    }
    assert_eq!(expect, 20_001);
    r.stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_from_the_confirmed_position_loses_and_repeats_nothing() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t",
        "restart",
    )
    .await?;
    let insert = |id: i32| {
        let client = &client;
        async move { client.execute("INSERT INTO t VALUES ($1)", &[&id]).await }
    };
    let id_of = |t: &Transaction| -> Result<i32> {
        match only_change(t)? {
            Change::Insert { new, .. } => Ok(text(&new, 0).unwrap_or_default().parse()?),
            other => bail!("expected an insert, got {other:?}"),
        }
    };
    let options = StartOptions::new("restart", ["p"]);

    // Receive 1..=10, but only 1..=5 are applied when the consumer stops.
    let mut r = reader(&cluster, &options).await?;
    for id in 1..=10 {
        insert(id).await?;
    }
    let mut confirmed = None;
    for id in 1..=10 {
        let t = r.txn().await?;
        assert_eq!(id_of(&t)?, id);
        if id == 5 {
            r.stream.confirm(t.end_lsn);
            confirmed = Some(t.end_lsn);
        }
    }
    r.stream.stop().await?;
    let confirmed = confirmed.expect("set at 5");
    assert_eq!(confirmed_flush(&client, "restart").await?, confirmed);

    // More rows while nobody streams; then both ways of restarting.
    for id in 11..=13 {
        insert(id).await?;
    }
    for start_at in [pgsync_wal::Lsn::INVALID, confirmed] {
        let mut r = reader(&cluster, &options.clone().start_at(start_at)).await?;
        for id in 6..=13 {
            assert_eq!(id_of(&r.txn().await?)?, id, "starting at {start_at}");
        }
        r.stream.stop().await?;
    }
    // Nothing after 13 in the stream: a new row comes next.
    let mut r = reader(&cluster, &options).await?;
    for _ in 6..=13 {
        r.txn().await?;
    }
    insert(14).await?;
    assert_eq!(id_of(&r.txn().await?)?, 14);
    r.stream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn binary_mode_sends_values_in_their_binary_form() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, v text, b bytea); CREATE PUBLICATION p FOR TABLE t",
        "binary",
    )
    .await?;
    let mut options = StartOptions::new("binary", ["p"]);
    options.binary = true;
    let mut r = reader(&cluster, &options).await?;
    client
        .batch_execute("INSERT INTO t VALUES (258, 'héllo', '\\x00ff'::bytea)")
        .await?;
    let Change::Insert { new, .. } = only_change(&r.txn().await?)? else {
        bail!("expected an insert");
    };
    assert_eq!(new.get(0), Some(ColumnValue::Binary(&258i32.to_be_bytes())));
    assert_eq!(new.get(1), Some(ColumnValue::Binary("héllo".as_bytes())));
    assert_eq!(new.get(2), Some(ColumnValue::Binary(&[0x00, 0xff])));
    r.stream.stop().await?;
    Ok(())
}
