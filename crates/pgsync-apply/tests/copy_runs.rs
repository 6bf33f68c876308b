//! Inserts through COPY against real servers: a group's inserts held back per table while
//! other tables' statements go on, a bulk load streamed into one COPY across many
//! pipeline chunks, binary rows through COPY BINARY, and a key clash in the middle of a
//! streaming COPY that rolls the whole group back.

use std::time::Duration;

use pgsync_apply::{Applier, ApplierConfig, ApplyError};
use pgsync_testkit::Cluster;
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{
    CreateSlot, Lsn, ReplicationConfig, ReplicationConnection, SlotSnapshot, StartOptions,
    Transaction,
};

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int);
CREATE TABLE events (id bigint PRIMARY KEY, item int, note text);
CREATE TABLE log (a int, b text);
ALTER TABLE log REPLICA IDENTITY FULL;
CREATE TABLE kinds (id int PRIMARY KEY, f float8, n numeric, ts timestamptz, j jsonb, b bytea, arr int[], iv interval, t text);
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
    a.client()
        .await
        .unwrap()
        .batch_execute("CREATE PUBLICATION pub FOR TABLE items, events, log, kinds")
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

/// Small chunks and thresholds, so that every path is taken with few rows.
fn config() -> ApplierConfig {
    let mut c = ApplierConfig::new("pgsync_copy_test");
    c.pipeline_depth = 7;
    c.copy_min_rows = 5;
    c.copy_stream_rows = 50;
    c
}

async fn wal_lsn(c: &Cluster) -> Lsn {
    c.client()
        .await
        .unwrap()
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get::<_, &str>(0)
        .parse()
        .unwrap()
}

/// Every transaction of the slot up to `target`, assembled (streamed ones included).
async fn transactions(a: &Cluster, target: Lsn, binary: bool) -> Vec<Transaction> {
    let conn = ReplicationConnection::connect(&ReplicationConfig::parse(&a.dsn()).unwrap())
        .await
        .unwrap();
    let mut options = StartOptions::new("slot", ["pub"]);
    options.binary = binary;
    let mut stream = conn.start_replication(&options).await.unwrap();
    let mut assembler = Assembler::new(AssemblerConfig {
        memory_budget: 256 << 10,
        ..AssemblerConfig::default()
    });
    let mut txns = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while txns.last().is_none_or(|t: &Transaction| t.end_lsn < target) {
        let data = tokio::time::timeout_at(deadline, stream.recv())
            .await
            .expect("timed out")
            .unwrap()
            .unwrap();
        if let Some(Assembled::Transaction(txn)) = assembler.push_payload(&data.data).unwrap() {
            txns.push(txn);
        }
    }
    stream.stop().await.unwrap();
    txns
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

async fn assert_equal(a: &Cluster, b: &Cluster, tables: &[&str]) {
    for t in tables {
        assert_eq!(
            checksum(a, t).await,
            checksum(b, t).await,
            "table {t} differs"
        );
    }
}

#[tokio::test]
async fn interleaved_inserts_and_a_bulk_load_applied_as_one_group_end_equal() {
    let (a, b) = pair().await;
    let ca = a.client().await.unwrap();
    ca.batch_execute(
        "INSERT INTO items SELECT g, 'item ' || g, 0 FROM generate_series(1, 20) g;
         -- inserts into events between updates of items, and rows of a keyless table
         DO $$ BEGIN
           FOR i IN 1..120 LOOP
             INSERT INTO events VALUES (i, i % 20 + 1, E'tab\\there ' || i);
             UPDATE items SET qty = qty + 1 WHERE id = i % 20 + 1;
             INSERT INTO log VALUES (i % 3, 'dup');
           END LOOP;
         END $$;
         -- an update of a held-back table in the middle of its inserts
         BEGIN;
         INSERT INTO events SELECT g, 1, 'x' FROM generate_series(1000, 1010) g;
         UPDATE events SET note = 'changed' WHERE id = 1005;
         DELETE FROM events WHERE id = 1006;
         INSERT INTO events SELECT g, 2, NULL FROM generate_series(1011, 1020) g;
         COMMIT;
         -- a bulk load: many chunks, one streaming COPY
         INSERT INTO events SELECT g, g % 20, repeat('p', g % 40) FROM generate_series(10000, 14999) g;
         UPDATE log SET b = 'one' WHERE ctid = (SELECT ctid FROM log WHERE a = 1 LIMIT 1);
         TRUNCATE items;
         INSERT INTO items SELECT g, 'again ' || g, g FROM generate_series(1, 30) g;",
    )
    .await
    .unwrap();
    let target = wal_lsn(&a).await;
    let txns = transactions(&a, target, false).await;
    let mut applier = Applier::new(b.client().await.unwrap(), config())
        .await
        .unwrap();
    applier.apply(&txns).await.unwrap();
    assert_eq!(applier.progress(), txns.last().unwrap().end_lsn);
    assert_equal(&a, &b, &["items", "events", "log"]).await;

    // Applied again (a restart replaying the same transactions): nothing changes. The
    // old session lets go of the origin when its backend exits.
    drop(applier);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut again = loop {
        match Applier::new(b.client().await.unwrap(), config()).await {
            Ok(a) => break a,
            Err(e) if e.sqlstate() == Some("55006") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(again.progress(), txns.last().unwrap().end_lsn);
    again.apply(&txns).await.unwrap();
    assert_equal(&a, &b, &["items", "events", "log"]).await;
}

#[tokio::test]
async fn binary_rows_go_through_copy_binary_bit_exact() {
    let (a, b) = pair().await;
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO kinds SELECT g, g / 7.0, g * 1.000001, '2026-11-21 10:00+02'::timestamptz + g * interval '1 min',
                    jsonb_build_object('g', g), decode(md5(g::text), 'hex'), ARRAY[g, NULL, -g],
                    g * interval '1 day 2 hours', CASE WHEN g % 5 = 0 THEN NULL ELSE E'a\\tb ' || g END
             FROM generate_series(1, 300) g;
             INSERT INTO kinds VALUES (0, 'NaN', 'NaN', 'infinity', 'null', '', '{}', '-1 mons', '')",
        )
        .await
        .unwrap();
    let target = wal_lsn(&a).await;
    let txns = transactions(&a, target, true).await;
    let mut applier = Applier::new(b.client().await.unwrap(), config())
        .await
        .unwrap();
    applier.apply(&txns).await.unwrap();
    assert_equal(&a, &b, &["kinds"]).await;
}

#[tokio::test]
async fn a_key_clash_inside_a_streaming_copy_rolls_the_whole_group_back() {
    let (a, b) = pair().await;
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO items VALUES (1, 'one', 1);
             UPDATE items SET qty = 2 WHERE id = 1;
             INSERT INTO events SELECT g, 1, 'bulk' FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    b.client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO events VALUES (2500, 0, 'already here')")
        .await
        .unwrap();
    let target = wal_lsn(&a).await;
    let txns = transactions(&a, target, false).await;
    let mut applier = Applier::new(b.client().await.unwrap(), config())
        .await
        .unwrap();
    let err = applier.apply(&txns).await.unwrap_err();
    match &err {
        ApplyError::Conflict { kind, detail, .. } => {
            assert_eq!(*kind, "insert_exists");
            assert!(detail.contains("2500"), "{err}");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(applier.progress(), Lsn::INVALID);
    let cb = b.client().await.unwrap();
    let (items, events): (i64, i64) = {
        let row = cb
            .query_one(
                "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM events)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (items, events),
        (0, 1),
        "nothing of the group may be applied"
    );
    let progress: Option<String> = cb
        .query_one(
            "SELECT pg_replication_origin_progress('pgsync_copy_test', true)::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(progress, None);

    // The applier is usable again once the clash is gone.
    cb.batch_execute("DELETE FROM events").await.unwrap();
    applier.apply(&txns).await.unwrap();
    assert_equal(&a, &b, &["items", "events"]).await;
}
