//! What a real server sends: pgoutput output read through the SQL interface
//! (`pg_logical_slot_get_binary_changes`, one message per row), decoded and assembled.
//! Covers what only PostgreSQL itself can confirm: how it streams transactions with rolled
//! back savepoints, where it resends a relation altered mid-transaction, and the two-phase
//! messages. Runs on whichever server the test kit picks (15 and 18 are both exercised).

use anyhow::{Context, Result, ensure};
use pgsync_testkit::Cluster;

use super::*;
use crate::pgoutput::Decoder;
use crate::txn::TxnKind;

/// A cluster that streams any transaction over 64 kB and allows prepared transactions.
async fn cluster() -> Result<Cluster> {
    Ok(Cluster::builder()
        .setting("logical_decoding_work_mem", "64kB")
        .setting("max_prepared_transactions", "4")
        .start()
        .await?)
}

/// Runs `ddl`, then creates slot `s` (a slot cannot be made in a transaction that wrote).
async fn setup(cluster: &Cluster, ddl: &str, two_phase: bool) -> Result<tokio_postgres::Client> {
    let client = cluster.client().await?;
    client.batch_execute(ddl).await?;
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('s', 'pgoutput', false, $1)",
            &[&two_phase],
        )
        .await?;
    Ok(client)
}

/// The newest protocol the server speaks, and its streaming mode.
fn protocol(major: u32) -> (&'static str, &'static str) {
    match major {
        ..=14 => ("2", "on"),
        15 => ("3", "on"),
        _ => ("4", "parallel"),
    }
}

/// Every pgoutput message the slot has, consumed.
async fn payloads(
    client: &tokio_postgres::Client,
    major: u32,
    slot: &str,
    extra: &[&str],
) -> Result<Vec<Bytes>> {
    let (proto, streaming) = protocol(major);
    let options: Vec<String> = [
        "proto_version",
        proto,
        "publication_names",
        "p",
        "messages",
        "true",
        "streaming",
        streaming,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, VARIADIC $2::text[])",
            &[&slot, &options],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Bytes::from(r.get::<_, Vec<u8>>(0)))
        .collect())
}

/// Everything the payloads assemble into, with an assembler of `budget` bytes.
fn assemble(payloads: &[Bytes], budget: usize) -> Result<Vec<Assembled>> {
    let mut asm = assembler(budget);
    let mut out = Vec::new();
    for p in payloads {
        if let Some(a) = asm.push_payload(p)? {
            out.push(a);
        }
        ensure!(asm.memory_used() <= budget);
    }
    ensure!(asm.open_streams() == 0, "streams left open");
    Ok(out)
}

fn transactions(out: Vec<Assembled>) -> Vec<Transaction> {
    out.into_iter()
        .filter_map(|a| match a {
            Assembled::Transaction(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn ids(t: &Transaction) -> Result<Vec<i32>> {
    keys(t)
        .iter()
        .map(|k| k.parse().context("integer key"))
        .collect()
}

#[tokio::test]
async fn a_streamed_transaction_with_rolled_back_savepoints_assembles_to_what_committed()
-> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE PUBLICATION p FOR TABLE t",
        false,
    )
    .await?;
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO t SELECT i, repeat('x', 200) FROM generate_series(1, 1000) i;
             SAVEPOINT a;
             INSERT INTO t SELECT i, repeat('a', 200) FROM generate_series(1001, 2000) i;
             SAVEPOINT b;
             INSERT INTO t SELECT i, repeat('b', 200) FROM generate_series(2001, 3000) i;
             RELEASE b;
             INSERT INTO t SELECT i, repeat('a', 200) FROM generate_series(3001, 3500) i;
             ROLLBACK TO a;
             INSERT INTO t SELECT i, repeat('y', 200) FROM generate_series(4001, 5000) i;
             SAVEPOINT c;
             INSERT INTO t SELECT i, repeat('c', 200) FROM generate_series(5001, 5500) i;
             ROLLBACK TO c;
             INSERT INTO t SELECT i, 'z' FROM generate_series(6001, 6100) i;
             DO $$ BEGIN
               FOR i IN 7001..7300 LOOP
                 BEGIN
                   INSERT INTO t VALUES (i, repeat('e', 300));
                   IF i % 3 = 0 THEN RAISE EXCEPTION 'undo %', i; END IF;
                 EXCEPTION WHEN raise_exception THEN NULL;
                 END;
               END LOOP;
             END $$;
             COMMIT;
             BEGIN;
             INSERT INTO t SELECT i, repeat('r', 200) FROM generate_series(10001, 12000) i;
             ROLLBACK;
             -- An abort does not flush WAL; a commit does, so the abort can be decoded.
             CREATE TABLE flush ();",
        )
        .await?;
    let payloads = payloads(&client, cluster.major(), "s", &[]).await?;

    let mut decoder = Decoder::new();
    let mut starts = 0;
    let mut sub_aborts = 0;
    let mut abort_info = 0;
    for p in &payloads {
        match decoder.decode(p)? {
            Message::StreamStart(_) => starts += 1,
            Message::StreamAbort(a) => {
                sub_aborts += usize::from(a.subxid != a.xid);
                abort_info += usize::from(a.abort.is_some());
            }
            _ => {}
        }
    }
    ensure!(starts > 1, "the transaction was not streamed in blocks");
    ensure!(sub_aborts > 0, "no subtransaction abort was streamed");
    if cluster.major() >= 16 {
        ensure!(abort_info > 0, "parallel streaming sends abort positions");
    }

    let committed: Vec<i32> = client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = (1..=1000)
        .chain(4001..=5000)
        .chain(6001..=6100)
        .chain((7001..=7300).filter(|i| i % 3 != 0))
        .collect();
    assert_eq!(committed, expected);
    for budget in [usize::MAX, 16 << 10, 0] {
        let mut txns = transactions(assemble(&payloads, budget)?);
        // The CREATE TABLE is an empty transaction (sent as such by PostgreSQL 14).
        txns.retain(|t| !t.is_empty());
        let [t] = &txns[..] else {
            panic!("budget {budget}: expected one transaction, got {txns:?}")
        };
        assert!(t.streamed);
        assert_eq!(ids(t)?, expected, "budget {budget}");
    }
    Ok(())
}

#[tokio::test]
async fn a_table_altered_mid_transaction_gives_later_rows_the_new_layout() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
        false,
    )
    .await?;
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO t VALUES (1, 'a');
             ALTER TABLE t ADD COLUMN n int;
             SELECT pg_logical_emit_message(true, 'pgsync.ddl', 'ALTER TABLE t ADD COLUMN n int');
             INSERT INTO t VALUES (2, 'b', 5);
             COMMIT;",
        )
        .await?;
    let payloads = payloads(&client, cluster.major(), "s", &[]).await?;
    for budget in [usize::MAX, 0] {
        let txns = transactions(assemble(&payloads, budget)?);
        let cs = changes(&txns[0]);
        let shape: Vec<(&str, usize)> = cs
            .iter()
            .map(|c| match c {
                Change::Insert { relation, .. } => ("insert", relation.columns.len()),
                Change::Message { prefix, .. } => (prefix.as_str(), 0),
                _ => ("other", 0),
            })
            .collect();
        assert_eq!(
            shape,
            [("insert", 2), ("pgsync.ddl", 0), ("insert", 3)],
            "budget {budget}"
        );
        let Change::Insert { new, .. } = &cs[2] else {
            unreachable!()
        };
        assert_eq!(new.get(2), Some(ColumnValue::Text(b"5")));
    }
    Ok(())
}

#[tokio::test]
async fn a_two_phase_transaction_arrives_prepared_then_committed_or_rolled_back() -> Result<()> {
    let cluster = cluster().await?;
    let client = setup(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t",
        true,
    )
    .await?;
    for sql in [
        "BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'g1'",
        "COMMIT PREPARED 'g1'",
        "BEGIN; INSERT INTO t VALUES (2); PREPARE TRANSACTION 'g2'",
        "ROLLBACK PREPARED 'g2'",
    ] {
        client.batch_execute(sql).await?;
    }
    let payloads = payloads(&client, cluster.major(), "s", &["two_phase", "on"]).await?;
    let out = assemble(&payloads, usize::MAX)?;
    let summary: Vec<String> = out
        .iter()
        .map(|a| match a {
            Assembled::Transaction(t) => match &t.kind {
                TxnKind::Prepared { gid } => format!("prepared {gid} {:?}", ids(t).ok()),
                TxnKind::Committed => "committed".into(),
            },
            Assembled::CommitPrepared(c) => format!("commit prepared {}", c.gid),
            Assembled::RollbackPrepared(r) => format!("rollback prepared {}", r.gid),
            Assembled::Message(_) => "message".into(),
            Assembled::StreamedChange { .. } | Assembled::StreamAborted { .. } => "streamed".into(),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "prepared g1 Some([1])",
            "commit prepared g1",
            "prepared g2 Some([2])",
            "rollback prepared g2",
        ]
    );
    Ok(())
}
