//! Per-table filters through the binary: a row filter on the copy and on the stream
//! (UPDATEs that move rows into or out of it become INSERTs and DELETEs), an operation
//! filter that leaves DELETE and TRUNCATE on the source, and a partitioned table synced
//! through its root into a destination partitioned differently.

mod common;

use std::time::Duration;

use common::{Pgsync, TaskFile, checksum, untouched};
use pgsync_testkit::Cluster;

const SCHEMA_A: &str = "
CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, qty int NOT NULL DEFAULT 0);
ALTER TABLE orders REPLICA IDENTITY FULL;
CREATE TABLE events (id int PRIMARY KEY, kind text NOT NULL);
CREATE TABLE marks (id int PRIMARY KEY);
INSERT INTO orders (id, region) SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END
  FROM generate_series(1, 100) g;
INSERT INTO events SELECT g, 'new' FROM generate_series(1, 10) g;
";

const TASK: &str = r#"
[objects]
include = ["public.*"]
[[objects.table]]
name = "public.orders"
row_filter = "region = 'eu'"
[[objects.table]]
name = "public.events"
operations = ["insert", "update"]
"#;

async fn pair() -> (Cluster, Cluster) {
    tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap()
}

/// Waits until `sql` returns `expected` on `c`.
async fn wait_for(c: &Cluster, sql: &str, expected: &str, log: &dyn Fn() -> String) {
    let client = c.client().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: Option<String> = client.query_one(sql, &[]).await.ok().and_then(|r| r.get(0));
        if got.as_deref() == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql} gave {got:?}, expected {expected:?}\n--- pgsync log ---\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn release(task: &TaskFile) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(["release", "--config"])
        .arg(&task.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn a_row_filter_and_an_operation_filter_hold_for_the_copy_and_for_rows_moving_across_it() {
    let (a, b) = pair().await;
    let ca = a.client().await.unwrap();
    ca.batch_execute(SCHEMA_A).await.unwrap();
    let task = TaskFile::new(&a, &b, TASK);
    let pgsync = Pgsync::run(&task);
    let log = || pgsync.log_text();
    let ids = "SELECT string_agg(id::text, ',' ORDER BY id) FROM";

    // The copy took the EU orders only, and every event.
    let eu = "(SELECT * FROM orders WHERE region = 'eu')";
    wait_for(&b, "SELECT count(*)::text FROM events", "10", &log).await;
    assert_eq!(checksum(&b, "orders").await, checksum(&a, eu).await);
    assert_eq!(checksum(&b, "orders").await.0, 50);

    ca.batch_execute(
        "UPDATE orders SET region = 'eu' WHERE id IN (1, 3);       -- into the filter
         UPDATE orders SET region = 'us' WHERE id IN (2, 4);       -- out of it
         UPDATE orders SET qty = 7 WHERE id = 6;                   -- inside
         UPDATE orders SET qty = 9 WHERE id = 5;                   -- outside
         INSERT INTO orders VALUES (1000, 'eu', 1), (1001, 'us', 1);
         DELETE FROM orders WHERE id IN (8, 9);
         BEGIN;
         UPDATE orders SET region = 'eu', qty = 11 WHERE id = 7;   -- in, then changed again
         UPDATE orders SET qty = 12 WHERE id = 7;
         COMMIT;
         INSERT INTO events VALUES (11, 'new');
         UPDATE events SET kind = 'seen' WHERE id = 1;
         DELETE FROM events WHERE id = 2;
         TRUNCATE events;
         INSERT INTO events VALUES (50, 'after truncate');
         INSERT INTO marks VALUES (1);",
    )
    .await
    .unwrap();
    wait_for(&b, &format!("{ids} marks"), "1", &log).await;

    // B holds exactly A's EU orders, whatever path each row took.
    assert_eq!(
        checksum(&b, "orders").await,
        checksum(&a, eu).await,
        "{}",
        log()
    );
    let b_ids: String = b
        .client()
        .await
        .unwrap()
        .query_one(
            &format!("{ids} orders WHERE id IN (1,2,3,4,5,6,7,8,9,1000,1001)"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_ids, "1,3,6,7,1000");
    // Inserts and updates of events arrived; the delete and the truncate did not.
    wait_for(
        &b,
        "SELECT string_agg(id || ':' || kind, ',' ORDER BY id) FROM events WHERE id IN (1, 2, 11, 50)",
        "1:seen,2:new,11:new,50:after truncate",
        &log,
    )
    .await;
    assert_eq!(checksum(&b, "events").await.0, 12);

    assert!(pgsync.stop().await.success());
    release(&task);
    untouched(&a).await;
}

#[tokio::test]
async fn a_partitioned_table_streams_through_its_root_into_a_differently_partitioned_destination() {
    let (a, b) = pair().await;
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE m (id int, at date NOT NULL, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             CREATE TABLE marks (id int PRIMARY KEY);
             INSERT INTO m SELECT g, date '2024-06-01' + g, g FROM generate_series(1, 400) g;",
        )
        .await
        .unwrap();
    // B partitions by hash, with other partition names.
    b.client()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE m (id int, at date NOT NULL, v int, PRIMARY KEY (id, at)) PARTITION BY HASH (id);
             CREATE TABLE m_h0 PARTITION OF m FOR VALUES WITH (MODULUS 2, REMAINDER 0);
             CREATE TABLE m_h1 PARTITION OF m FOR VALUES WITH (MODULUS 2, REMAINDER 1);
             CREATE TABLE marks (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let task = TaskFile::new(&a, &b, "[sync]\nexisting_tables = \"ignore\"");
    let pgsync = Pgsync::run(&task);
    let log = || pgsync.log_text();
    wait_for(&b, "SELECT count(*)::text FROM m", "400", &log).await;

    a.client()
        .await
        .unwrap()
        .batch_execute(
            "UPDATE m SET at = at + 200 WHERE id <= 50;   -- moves rows to the other partition on A
             UPDATE m SET v = -v WHERE id BETWEEN 100 AND 120;
             DELETE FROM m WHERE id > 390;
             INSERT INTO m VALUES (1000, '2025-03-01', 1);
             INSERT INTO marks VALUES (1);",
        )
        .await
        .unwrap();
    wait_for(&b, "SELECT string_agg(id::text, ',') FROM marks", "1", &log).await;
    assert_eq!(
        checksum(&b, "m").await,
        checksum(&a, "m").await,
        "{}",
        log()
    );
    // The rows stayed in B's own partitions.
    let b_parts: i64 = b
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'm'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_parts, 2);
    assert!(checksum(&b, "m_h0").await.0 > 0 && checksum(&b, "m_h1").await.0 > 0);
    assert!(pgsync.stop().await.success());
}
