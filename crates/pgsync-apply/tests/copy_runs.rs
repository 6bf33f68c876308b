//! Rows many at a time against real servers: a group's inserts held back per table while
//! other tables' statements go on, a bulk load streamed into one COPY across many
//! pipeline chunks, binary rows through COPY BINARY, a key clash in the middle of a
//! streaming COPY that rolls the whole group back; updates and deletes by key sent as
//! keyed runs (one statement over arrays), with every type, NULLs, unchanged TOAST
//! values, repeated and changed keys, and a missing row failing the whole group.

use std::time::Duration;

use pgsync_apply::{Applier, ApplierConfig, ApplyError, ConflictHandling};
use pgsync_conflict::{ConflictPolicies, NodeId, Policy};
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
CREATE TABLE kinds (id int PRIMARY KEY, f float8, n numeric, ts timestamptz, j jsonb, b bytea, arr int[], iv interval, t text, big text);
CREATE TABLE idents (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, seq int GENERATED ALWAYS AS IDENTITY);
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
        .batch_execute("CREATE PUBLICATION pub FOR TABLE items, events, log, kinds, idents")
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
    c.keyed_min_rows = 4;
    c.keyed_max_rows = 40;
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

#[tokio::test]
async fn updates_and_deletes_by_key_go_as_keyed_runs_and_both_sides_end_equal() {
    let (a, b) = pair().await;
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO kinds SELECT g, g / 7.0, g * 1.000001, '2026-11-21 10:00+02'::timestamptz + g * interval '1 min',
                    jsonb_build_object('g', g), decode(md5(g::text), 'hex'), ARRAY[g, NULL, -g],
                    g * interval '1 day 2 hours', E'a\\tb \"q\" {x,y} ' || g,
                    CASE WHEN g % 3 = 0 THEN (SELECT string_agg(md5(i::text || g), '') FROM generate_series(1, 200) i) END
             FROM generate_series(1, 200) g;
             -- one group: updates of every row in runs (each key once), a second update of
             -- keys already in the run, NULLs and special characters, unchanged TOAST values
             -- (only f written), a key change, deletes, and a deleted key inserted again
             BEGIN;
             UPDATE kinds SET f = f + 1, t = CASE WHEN id % 4 = 0 THEN NULL ELSE t || ' ,\\ ' END;
             UPDATE kinds SET n = -n, arr = NULL WHERE id % 5 = 0;
             UPDATE kinds SET f = 'NaN' WHERE id BETWEEN 50 AND 60;
             UPDATE kinds SET id = id + 1000 WHERE id = 7;
             DELETE FROM kinds WHERE id % 9 = 0;
             INSERT INTO kinds (id, t) VALUES (9, 'back');
             UPDATE kinds SET j = '{\"k\": [1, null]}', iv = '-3 days' WHERE id > 150;
             COMMIT;
             DELETE FROM kinds WHERE id BETWEEN 100 AND 130;
             UPDATE kinds SET ts = 'infinity' WHERE id < 20;",
        )
        .await
        .unwrap();
    let target = wal_lsn(&a).await;
    let txns = transactions(&a, target, false).await;
    let mut applier = Applier::new(b.client().await.unwrap(), config())
        .await
        .unwrap();
    applier.apply(&txns[..1]).await.unwrap();
    applier.apply(&txns[1..]).await.unwrap();
    assert_equal(&a, &b, &["kinds"]).await;
}

#[tokio::test]
async fn a_row_missing_under_a_keyed_run_fails_the_whole_group() {
    let (a, b) = pair().await;
    let ca = a.client().await.unwrap();
    ca.batch_execute("INSERT INTO items SELECT g, 'item ' || g, 0 FROM generate_series(1, 12) g")
        .await
        .unwrap();
    let first = transactions(&a, wal_lsn(&a).await, false).await;
    let mut applier = Applier::new(b.client().await.unwrap(), config())
        .await
        .unwrap();
    applier.apply(&first).await.unwrap();
    b.client()
        .await
        .unwrap()
        .batch_execute("DELETE FROM items WHERE id = 6")
        .await
        .unwrap();
    ca.batch_execute(
        "INSERT INTO events VALUES (1, 1, 'before');
         UPDATE items SET qty = qty + 5;",
    )
    .await
    .unwrap();
    let txns = transactions(&a, wal_lsn(&a).await, false).await;
    let txns: Vec<_> = txns
        .into_iter()
        .filter(|t| t.end_lsn > applier.progress())
        .collect();
    let err = applier.apply(&txns).await.unwrap_err();
    match &err {
        ApplyError::Conflict { kind, detail, .. } => {
            assert_eq!(*kind, "update_missing");
            assert!(detail.contains("one of 12 keys written together"), "{err}");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let row = b
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT (SELECT sum(qty) FROM items), (SELECT count(*) FROM events)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, Option<i64>>(0), row.get::<_, i64>(1)),
        (Some(0), 0),
        "nothing of the group may be applied"
    );
}

#[tokio::test]
async fn rows_of_generated_always_identity_columns_keep_the_source_values() {
    let (a, b) = pair().await;
    // B hands out other values than A: every value must come from A.
    b.client()
        .await
        .unwrap()
        .batch_execute("ALTER TABLE idents ALTER COLUMN id RESTART WITH 1000")
        .await
        .unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO idents (v) VALUES ('one');
             INSERT INTO idents (v) VALUES ('two');
             INSERT INTO idents (v) SELECT 'bulk ' || g FROM generate_series(1, 30) g;
             UPDATE idents SET v = v || '!';
             UPDATE idents SET v = 'single' WHERE id = 2;
             DELETE FROM idents WHERE id % 7 = 0;",
        )
        .await
        .unwrap();
    let txns = transactions(&a, wal_lsn(&a).await, false).await;
    let mut applier = Applier::new(b.client().await.unwrap(), config())
        .await
        .unwrap();
    applier.apply(&txns).await.unwrap();
    assert_equal(&a, &b, &["idents"]).await;
}

#[tokio::test]
async fn the_careful_path_updates_rows_of_generated_always_identity_columns() {
    let (a, b) = pair().await;
    // B holds row 2 already: A's insert of it becomes an update of B's row (overwrite),
    // which must leave the identity columns out of its SET.
    b.client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO idents OVERRIDING SYSTEM VALUE VALUES (2, 'local', 2)")
        .await
        .unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO idents (v) VALUES ('one');
             INSERT INTO idents (v) VALUES ('two');
             INSERT INTO idents (v) VALUES ('three');",
        )
        .await
        .unwrap();
    let txns = transactions(&a, wal_lsn(&a).await, false).await;
    let mut config = config();
    config.conflicts = Some(ConflictHandling::new(
        ConflictPolicies::uniform(Policy::Overwrite),
        NodeId::new("b"),
        NodeId::new("a"),
    ));
    let mut applier = Applier::new(b.client().await.unwrap(), config)
        .await
        .unwrap();
    applier.apply(&txns).await.unwrap();
    assert_equal(&a, &b, &["idents"]).await;
}

#[tokio::test]
async fn rows_held_back_when_their_table_changes_layout_go_out_under_the_layout_they_came_with() {
    // Inserts held back for a COPY and an update waiting in the chunk, then the source
    // drops a column and more rows follow in the same group: what was held goes out
    // under the old layout (B keeps the column; the later rows leave it NULL).
    let (a, b) = pair().await;
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO events SELECT g, g, 'n' || g FROM generate_series(1, 10) g;
             UPDATE events SET note = 'u' WHERE id = 2;
             INSERT INTO events SELECT g, g, 'm' || g FROM generate_series(11, 13) g;
             ALTER TABLE events DROP COLUMN note;
             INSERT INTO events SELECT g, g FROM generate_series(14, 30) g;
             UPDATE events SET item = 0 WHERE id IN (3, 12, 20);",
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
    let (on_a, on_b) = (id_items(&a).await, id_items(&b).await);
    assert_eq!(on_a.len(), 30);
    assert_eq!(on_a, on_b);
    let notes: Vec<(i64, Option<String>)> = b
        .client()
        .await
        .unwrap()
        .query(
            "SELECT id, note FROM events WHERE id IN (1, 2, 13, 14) ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        notes,
        [
            (1, Some("n1".to_owned())),
            (2, Some("u".to_owned())),
            (13, Some("m13".to_owned())),
            (14, None)
        ]
    );
}

async fn id_items(c: &Cluster) -> Vec<(i64, Option<i32>)> {
    c.client()
        .await
        .unwrap()
        .query("SELECT id, item FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}
