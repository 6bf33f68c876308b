//! DDL replay in the applier against real servers: the DDL message runs at its place in
//! the destination transaction even when rows before it are held back for COPY or
//! streaming into one, tables it creates join the reverse publication, and the careful
//! path sees what it changed.

use std::time::Duration;

use pgsync_apply::{Applier, ApplierConfig, ConflictHandling, DdlApply};
use pgsync_conflict::{ConflictPolicies, NodeId, Policy};
use pgsync_ddl::capture::{self, CaptureTask};
use pgsync_ddl::{Planner, Unsupported};
use pgsync_names::{Mapping, QualifiedName, Selection};
use pgsync_testkit::Cluster;
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{
    CreateSlot, Lsn, ReplicationConfig, ReplicationConnection, SlotSnapshot, StartOptions,
};
use tokio_postgres::Client;

async fn wal_lsn(c: &Client) -> Lsn {
    c.query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get::<_, &str>(0)
        .parse()
        .unwrap()
}

async fn checksum(c: &Client, table: &str) -> (i64, String) {
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A with table `t` (in `pub`) and the capture for `selection`; a slot.
async fn source(a: &Cluster, selection: &Selection) -> Client {
    let ca = a.client().await.unwrap();
    ca.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE t",
    )
    .await
    .unwrap();
    capture::install(
        &ca,
        &CaptureTask {
            task: "x",
            publication: "pub",
            selection,
        },
    )
    .await
    .unwrap();
    let mut conn = ReplicationConnection::connect(&ReplicationConfig::parse(&a.dsn()).unwrap())
        .await
        .unwrap();
    conn.create_slot(&CreateSlot::new("slot").snapshot(SlotSnapshot::Nothing))
        .await
        .unwrap();
    conn.close().await.unwrap();
    ca
}

/// Streams A's changes into an applier on B with `config` until everything up to now
/// is applied.
async fn sync(a: &Cluster, b: &Cluster, config: ApplierConfig) {
    let target = wal_lsn(&a.client().await.unwrap()).await;
    let mut applier = Applier::new(b.client().await.unwrap(), config)
        .await
        .unwrap();
    let conn = ReplicationConnection::connect(&ReplicationConfig::parse(&a.dsn()).unwrap())
        .await
        .unwrap();
    let mut stream = conn
        .start_replication(&StartOptions::new("slot", ["pub"]))
        .await
        .unwrap();
    let mut assembler = Assembler::new(AssemblerConfig::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while applier.progress() < target {
        let data = tokio::time::timeout_at(deadline, stream.recv())
            .await
            .expect("timed out")
            .unwrap()
            .unwrap();
        if let Some(Assembled::Transaction(txn)) = assembler.push_payload(&data.data).unwrap() {
            applier.apply(std::slice::from_ref(&txn)).await.unwrap();
        }
    }
    stream.stop().await.unwrap();
}

async fn pair() -> (Cluster, Cluster) {
    tokio::try_join!(
        Cluster::builder().database("db").start(),
        Cluster::builder().database("db").start()
    )
    .unwrap()
}

#[tokio::test]
async fn ddl_between_copied_rows_runs_in_place_and_new_tables_join_the_reverse_publication() {
    let (a, b) = pair().await;
    let selection = Selection::parse(["public.*"], []).unwrap();
    let ca = source(&a, &selection).await;
    let cb = b.client().await.unwrap();
    cb.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION rev FOR TABLE t",
    )
    .await
    .unwrap();

    // 300 rows (a COPY run, streaming from 100), the ALTER, 300 rows of the new shape, and
    // a new table with its rows, all in one source transaction.
    ca.batch_execute(
        "BEGIN;
         INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 300) g;
         ALTER TABLE t ADD COLUMN w int NOT NULL DEFAULT 0;
         INSERT INTO t SELECT g, 'b', g FROM generate_series(301, 600) g;
         CREATE TABLE u (id int PRIMARY KEY);
         INSERT INTO u SELECT generate_series(1, 100);
         COMMIT;",
    )
    .await
    .unwrap();
    let mut config = ApplierConfig::new("pgsync_test");
    config.copy_stream_rows = 100;
    config.ddl = DdlApply::Replay {
        planner: Planner::new(selection, Mapping::identity()),
        unsupported: Unsupported::Fail,
        reverse_publication: Some("rev".into()),
    };
    sync(&a, &b, config).await;

    for t in ["t", "u"] {
        assert_eq!(checksum(&ca, t).await, checksum(&cb, t).await, "{t}");
    }
    assert_eq!(checksum(&cb, "t").await.0, 600);
    let published: Vec<String> = cb
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'rev' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, ["t", "u"]);
}

#[tokio::test]
async fn ddl_is_rewritten_through_the_mapping_and_runs_on_the_renamed_objects() {
    let (a, b) = pair().await;
    let selection = Selection::parse(["public.*"], []).unwrap();
    let ca = source(&a, &selection).await;
    let cb = b.client().await.unwrap();
    cb.batch_execute("CREATE SCHEMA dst; CREATE TABLE dst.t_b (id int PRIMARY KEY, value text)")
        .await
        .unwrap();
    let mut mapping = Mapping::identity();
    mapping.schemas.insert("public".into(), "dst".into());
    mapping.tables.insert(
        QualifiedName::new("public", "t"),
        QualifiedName::new("dst", "t_b"),
    );
    mapping
        .columns
        .entry(QualifiedName::new("public", "t"))
        .or_default()
        .insert("v".into(), "value".into());

    ca.batch_execute(
        "INSERT INTO t VALUES (1, 'one');
         ALTER TABLE t ALTER COLUMN v SET NOT NULL, ADD COLUMN n int DEFAULT 5;
         CREATE INDEX t_v_idx ON t (v);
         BEGIN;
         CREATE TABLE other (id serial PRIMARY KEY, t_id int REFERENCES t (id));
         INSERT INTO other (t_id) VALUES (1);
         ALTER TABLE other RENAME TO other2;
         INSERT INTO other2 (t_id) VALUES (1);
         COMMIT;
         INSERT INTO t VALUES (2, 'two', 6);",
    )
    .await
    .unwrap();
    let mut config = ApplierConfig::new("pgsync_test");
    config.mapping = mapping.clone();
    config.ddl = DdlApply::Replay {
        planner: Planner::new(selection, mapping),
        unsupported: Unsupported::Fail,
        reverse_publication: None,
    };
    sync(&a, &b, config).await;

    assert_eq!(checksum(&ca, "t").await, checksum(&cb, "dst.t_b").await);
    assert_eq!(
        checksum(&ca, "other2").await,
        checksum(&cb, "dst.other2").await
    );
    let not_null: bool = cb
        .query_one(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'dst.t_b'::regclass AND attname = 'value'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(not_null);
    let index: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'dst' AND indexname = 't_v_idx'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(index, 1);
}

#[tokio::test]
async fn a_unique_index_created_by_replayed_ddl_is_seen_by_the_careful_path() {
    let (a, b) = pair().await;
    let selection = Selection::parse(["public.*"], []).unwrap();
    let ca = source(&a, &selection).await;
    let cb = b.client().await.unwrap();
    cb.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'local'), (100, 'x')",
    )
    .await
    .unwrap();
    // 1. A conflict: the careful path reads t's unique indexes (the key alone, here).
    // 2. A unique index, replayed on B. 3. A new row colliding with B's row 100 on it.
    for sql in [
        "INSERT INTO t VALUES (1, 'a')",
        "CREATE UNIQUE INDEX t_v ON t (v)",
        "INSERT INTO t VALUES (2, 'x')",
    ] {
        ca.batch_execute(sql).await.unwrap();
    }
    let mut config = ApplierConfig::new("pgsync_test");
    config.ddl = DdlApply::Replay {
        planner: Planner::new(selection, Mapping::identity()),
        unsupported: Unsupported::Fail,
        reverse_publication: None,
    };
    config.conflicts = Some(ConflictHandling::new(
        ConflictPolicies::uniform(Policy::Overwrite),
        NodeId::new("b"),
        NodeId::new("a"),
    ));
    sync(&a, &b, config).await;

    // Overwrite: A's rows win, and the row in the way of row 2 on the new index is gone.
    assert_eq!(checksum(&ca, "t").await, checksum(&cb, "t").await);
    let logged: Vec<String> = cb
        .query(
            "SELECT format('%s %s %s', kind, key->>'id', decision) FROM pgsync.conflicts ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(logged[0].starts_with("insert_exists 1 "), "{logged:?}");
    // Logged under the key of the local row that was in the way.
    assert_eq!(logged[1], "insert_exists 100 apply_remote", "{logged:?}");
}
