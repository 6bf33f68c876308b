//! The applier against real servers: changes decoded from A's WAL are applied to B, and
//! both sides end up equal — every DML kind, TOAST left unchanged, key changes, tables
//! without a key (duplicates stay duplicates), TRUNCATE, bulk inserts through COPY, and a
//! restart in the middle that neither loses nor repeats a transaction.

use std::time::Duration;

use pgsync_apply::{Applier, ApplierConfig, ApplyError};
use pgsync_testkit::Cluster;
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{
    CreateSlot, Lsn, ReplicationConfig, ReplicationConnection, SlotSnapshot, StartOptions,
};
use tokio_postgres::Client;

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int, note text);
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE docs (id int PRIMARY KEY, big text, small int);
ALTER TABLE docs ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE kinds (id int PRIMARY KEY, f float8, n numeric, ts timestamptz, j jsonb, b bytea, arr int[], iv interval);
";

async fn pair() -> (Cluster, Cluster) {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    for c in [&a, &b] {
        c.client()
            .await
            .unwrap()
            .batch_execute(SCHEMA)
            .await
            .unwrap();
    }
    let ca = a.client().await.unwrap();
    ca.batch_execute("CREATE PUBLICATION pub FOR TABLE items, nokey, docs, kinds")
        .await
        .unwrap();
    let mut conn = ReplicationConnection::connect(&ReplicationConfig::parse(&a.dsn()).unwrap())
        .await
        .unwrap();
    conn.create_slot(&CreateSlot::new("slot").snapshot(SlotSnapshot::Nothing))
        .await
        .unwrap();
    conn.close().await.unwrap();
    (a, b)
}

async fn wal_lsn(c: &Client) -> Lsn {
    c.query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get::<_, &str>(0)
        .parse()
        .unwrap()
}

/// Streams from the slot and applies until the applier's progress reaches `target`
/// (or, with `stop_after`, until that many transactions were applied). Returns the count.
async fn sync(
    a: &Cluster,
    b: &Cluster,
    target: Lsn,
    stop_after: Option<usize>,
) -> Result<usize, ApplyError> {
    let mut applier =
        Applier::new(b.client().await.unwrap(), ApplierConfig::new("pgsync_test")).await?;
    let conn = ReplicationConnection::connect(&ReplicationConfig::parse(&a.dsn()).unwrap())
        .await
        .unwrap();
    let mut options = StartOptions::new("slot", ["pub"]);
    options.start = applier.progress();
    let mut stream = conn.start_replication(&options).await.unwrap();
    let mut assembler = Assembler::new(AssemblerConfig {
        memory_budget: 1 << 20,
        ..AssemblerConfig::default()
    });
    let mut applied = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while applier.progress() < target && stop_after.is_none_or(|n| applied < n) {
        let data = tokio::time::timeout_at(deadline, stream.recv())
            .await
            .expect("timed out")
            .unwrap()
            .unwrap();
        if let Some(Assembled::Transaction(txn)) = assembler.push_payload(&data.data).unwrap() {
            applier.apply(std::slice::from_ref(&txn)).await?;
            applied += 1;
            stream.confirm(applier.durable().await?);
        }
    }
    stream.stop().await.unwrap();
    Ok(applied)
}

async fn checksum(c: &Cluster, table: &str) -> (i64, String) {
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
    );
    let row = c
        .client()
        .await
        .unwrap()
        .query_one(&sql, &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn assert_equal(a: &Cluster, b: &Cluster) {
    for t in ["items", "nokey", "docs", "kinds"] {
        assert_eq!(
            checksum(a, t).await,
            checksum(b, t).await,
            "table {t} differs"
        );
    }
}

const WORKLOAD: &[&str] = &[
    "INSERT INTO items SELECT g, 'item ' || g, g, NULL FROM generate_series(1, 10) g",
    "UPDATE items SET qty = qty * 10, note = 'x' WHERE id <= 5",
    "UPDATE items SET id = 100 WHERE id = 1",
    "DELETE FROM items WHERE id = 2",
    "INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup'), (2, 'two'), (NULL, NULL)",
    "UPDATE nokey SET b = 'changed' WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1)",
    "DELETE FROM nokey WHERE a IS NULL",
    "INSERT INTO docs VALUES (1, repeat('toast', 5000), 1)",
    "UPDATE docs SET small = 2 WHERE id = 1",
    "INSERT INTO kinds VALUES (1, 'NaN', 1.50, 'infinity', '{\"a\": [1, 2]}', '\\x00ff', '{1,NULL,3}', '1 day -2 hours'),
                              (2, '-0', -0.0, '2026-11-21 10:00:00.123456+05', 'null', '', '{}', '-1 mons'),
                              (3, 1.0000000000000002, 1e-20, '-infinity', '[]', NULL, NULL, '0')",
    "INSERT INTO items SELECT g, 'bulk ' || g, g, repeat('n', g % 50) FROM generate_series(1000, 3000) g",
    "TRUNCATE nokey",
    "INSERT INTO nokey VALUES (7, 'after truncate'), (7, 'after truncate')",
];

#[tokio::test]
async fn every_kind_of_change_arrives_and_both_sides_end_equal() {
    let (a, b) = pair().await;
    let ca = a.client().await.unwrap();
    for sql in WORKLOAD {
        ca.batch_execute(sql).await.unwrap();
    }
    let target = wal_lsn(&ca).await;
    sync(&a, &b, target, None).await.unwrap();
    assert_equal(&a, &b).await;
}

#[tokio::test]
async fn a_restart_in_the_middle_neither_loses_nor_repeats_a_transaction() {
    let (a, b) = pair().await;
    let ca = a.client().await.unwrap();
    for sql in WORKLOAD {
        ca.batch_execute(sql).await.unwrap();
    }
    let target = wal_lsn(&ca).await;
    let first = sync(&a, &b, target, Some(6)).await.unwrap();
    assert_eq!(first, 6);
    // The rest, from the origin's progress; the nokey duplicates prove no repeat.
    sync(&a, &b, target, None).await.unwrap();
    assert_equal(&a, &b).await;
    let dups: i64 = b
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM nokey WHERE a = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dups, 2);
}

#[tokio::test]
async fn an_update_of_a_row_missing_on_the_destination_stops_with_the_key_and_applies_nothing() {
    let (a, b) = pair().await;
    let ca = a.client().await.unwrap();
    ca.batch_execute("INSERT INTO items VALUES (1, 'one', 1, NULL), (2, 'two', 2, NULL)")
        .await
        .unwrap();
    let target = wal_lsn(&ca).await;
    sync(&a, &b, target, None).await.unwrap();

    b.client()
        .await
        .unwrap()
        .batch_execute("DELETE FROM items WHERE id = 2")
        .await
        .unwrap();
    ca.batch_execute("BEGIN; UPDATE items SET qty = 10 WHERE id = 1; UPDATE items SET qty = 20 WHERE id = 2; COMMIT")
        .await
        .unwrap();
    let target = wal_lsn(&ca).await;
    let err = sync(&a, &b, target, None).await.unwrap_err();
    match &err {
        ApplyError::Conflict { kind, detail, .. } => {
            assert_eq!(*kind, "update_missing");
            assert!(detail.contains("(id)=(2)"), "{err}");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(!err.is_retryable());
    let qty: i32 = b
        .client()
        .await
        .unwrap()
        .query_one("SELECT qty FROM items WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(qty, 1, "nothing of the failed transaction may be applied");
}
