//! Precheck items about the selected objects and the servers' limits, against real
//! servers: each is prepared to fail (or warn), its fix text is checked, the fix is
//! applied, and the item passes. One cluster pair per test walks through related items.

use pgsync_task::TaskSpec;
use pgsync_task::precheck::{self, Check, Report, Side, Status};
use pgsync_testkit::Cluster;
use tokio_postgres::Client;

fn spec(a: &Cluster, b: &Cluster, extra: &str) -> TaskSpec {
    let text = format!(
        "name = \"shop\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n{extra}\n",
        a.dsn(),
        b.dsn()
    );
    TaskSpec::from_toml(&text, "test.toml").unwrap()
}

fn item<'a>(report: &'a Report, side: Side, id: &str) -> &'a Check {
    report
        .get(side, id)
        .unwrap_or_else(|| panic!("no {id} item in:\n{report}"))
}

#[track_caller]
fn expect(report: &Report, side: Side, id: &str, status: Status, text: &str) {
    let c = item(report, side, id);
    assert_eq!(c.status, status, "{report}");
    let all = format!("{} {}", c.detail, c.fix.as_deref().unwrap_or(""));
    assert!(all.contains(text), "{id}: {all:?} lacks {text:?}");
}

/// ALTER SYSTEM SET each, then a reload (ALTER SYSTEM runs on its own, outside any
/// transaction block).
async fn settings(c: &Client, settings: &[&str]) {
    for s in settings {
        c.batch_execute(&format!("ALTER SYSTEM SET {s}"))
            .await
            .unwrap();
    }
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
}

async fn pair() -> (Cluster, Cluster, Client, Client) {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    let (ca, cb) = (a.client().await.unwrap(), b.client().await.unwrap());
    (a, b, ca, cb)
}

#[tokio::test]
async fn a_selection_that_splits_a_partition_tree_fails_until_it_takes_the_whole_tree() {
    let (a, b, ca, _cb) = pair().await;
    ca.batch_execute(
        "CREATE TABLE m (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');",
    )
    .await
    .unwrap();
    let split = "[objects]\ninclude = [\"public.m\", \"public.m_2024\"]";
    let report = precheck::run(&spec(&a, &b, split)).await;
    expect(
        &report,
        Side::Source,
        "partition_trees",
        Status::Fail,
        "\"public\".\"m\" without its partition \"public\".\"m_2025\"",
    );
    expect(
        &report,
        Side::Source,
        "partition_trees",
        Status::Fail,
        "every partition",
    );

    let on_partition = "[objects]\ninclude = [\"public.*\"]\n[[objects.table]]\nname = \"public.m_2024\"\noperations = [\"insert\"]";
    let report = precheck::run(&spec(&a, &b, on_partition)).await;
    expect(
        &report,
        Side::Source,
        "partition_trees",
        Status::Fail,
        "root",
    );

    let whole = "[objects]\ninclude = [\"public.m\", \"public.m_*\"]";
    let report = precheck::run(&spec(&a, &b, whole)).await;
    expect(
        &report,
        Side::Source,
        "partition_trees",
        Status::Pass,
        "1 partitioned tables selected whole",
    );
}

#[tokio::test]
async fn a_row_filter_the_server_would_refuse_fails_with_the_reason_and_passes_once_fixed() {
    let (a, b, ca, _cb) = pair().await;
    ca.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, region text)")
        .await
        .unwrap();
    let filter = |w: &str| {
        format!(
            "[objects]\ninclude = [\"public.*\"]\n[[objects.table]]\nname = \"public.orders\"\nrow_filter = \"{w}\""
        )
    };
    // Not valid SQL: the server's message is shown.
    let report = precheck::run(&spec(&a, &b, &filter("region = "))).await;
    expect(
        &report,
        Side::Source,
        "row_filters",
        Status::Fail,
        "syntax error",
    );
    // A column outside the replica identity, while UPDATE and DELETE are synced.
    let report = precheck::run(&spec(&a, &b, &filter("region = 'eu'"))).await;
    expect(
        &report,
        Side::Source,
        "row_filters",
        Status::Fail,
        "replica identity",
    );
    // Nothing of the probes stayed behind.
    let left: i64 = ca
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // Inserts only: any column will do.
    let inserts = format!("{}\noperations = [\"insert\"]", filter("region = 'eu'"));
    let report = precheck::run(&spec(&a, &b, &inserts)).await;
    expect(
        &report,
        Side::Source,
        "row_filters",
        Status::Pass,
        "accepted",
    );

    ca.batch_execute("ALTER TABLE orders REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let report = precheck::run(&spec(&a, &b, &filter("region = 'eu'"))).await;
    expect(
        &report,
        Side::Source,
        "row_filters",
        Status::Pass,
        "accepted",
    );
    assert!(report.ok(), "{report}");
}

#[tokio::test]
async fn unsupported_objects_and_unsynced_sequences_fail_with_the_fix_and_pass_after_it() {
    let (a, b, ca, _cb) = pair().await;
    ca.batch_execute(
        "CREATE SCHEMA other;
         CREATE TABLE other.base (x int);
         CREATE TABLE child (id int PRIMARY KEY) INHERITS (other.base);
         CREATE TABLE users (id int PRIMARY KEY, email text);
         CREATE UNIQUE INDEX users_email ON users (lower(email));
         CREATE SEQUENCE other.shared;
         CREATE TABLE tickets (id bigint PRIMARY KEY DEFAULT nextval('other.shared'));
         CREATE TABLE notes (id serial PRIMARY KEY, body text);",
    )
    .await
    .unwrap();
    let task = spec(&a, &b, "");
    let run = || precheck::run(&task);
    let report = run().await;
    expect(
        &report,
        Side::Source,
        "unsupported_objects",
        Status::Fail,
        "NO INHERIT",
    );
    expect(
        &report,
        Side::Source,
        "serial_sequences",
        Status::Fail,
        "\"other\".\"shared\" (default of \"public\".\"tickets\".\"id\")",
    );
    expect(
        &report,
        Side::Source,
        "serial_sequences",
        Status::Fail,
        "OWNED BY",
    );

    ca.batch_execute("ALTER TABLE child NO INHERIT other.base")
        .await
        .unwrap();
    let report = run().await;
    expect(
        &report,
        Side::Source,
        "unsupported_objects",
        Status::Fail,
        "users_email",
    );

    ca.batch_execute(
        "DROP INDEX users_email;
         ALTER SEQUENCE other.shared SET SCHEMA public;
         ALTER SEQUENCE public.shared OWNED BY tickets.id;",
    )
    .await
    .unwrap();
    let report = run().await;
    expect(
        &report,
        Side::Source,
        "unsupported_objects",
        Status::Pass,
        "no expression",
    );
    // notes.id (SERIAL) and tickets.id.
    expect(
        &report,
        Side::Source,
        "serial_sequences",
        Status::Pass,
        "2 sequences",
    );
}

#[tokio::test]
async fn the_fix_flag_gives_a_table_without_key_replica_identity_full_and_the_item_passes() {
    let (a, b, ca, _cb) = pair().await;
    ca.batch_execute("CREATE TABLE log (line text); CREATE TABLE kept (id int PRIMARY KEY)")
        .await
        .unwrap();
    let task = spec(&a, &b, "");
    let report = precheck::run(&task).await;
    expect(
        &report,
        Side::Source,
        "replica_identity",
        Status::Fail,
        "precheck --fix",
    );
    // The precheck itself changes nothing.
    let identity = "SELECT relreplident::text FROM pg_class WHERE oid = 'log'::regclass";
    let before: String = ca.query_one(identity, &[]).await.unwrap().get(0);
    assert_eq!(before, "d");

    let fixed = precheck::fix_replica_identity(&task).await.unwrap();
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0].to_string(), "\"public\".\"log\"");
    let after: String = ca.query_one(identity, &[]).await.unwrap().get(0);
    assert_eq!(after, "f");
    let report = precheck::run(&task).await;
    expect(&report, Side::Source, "replica_identity", Status::Pass, "");
}

#[tokio::test]
async fn origins_wal_retention_and_password_hashing_are_checked_with_their_fixes() {
    let (a, mut b, ca, cb) = pair().await;
    ca.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let setting = if b.major() >= 18 {
        "max_active_replication_origins"
    } else {
        "max_replication_slots"
    };
    cb.batch_execute(&format!("ALTER SYSTEM SET {setting} = 1"))
        .await
        .unwrap();
    drop(cb);
    b.restart().await.unwrap();
    let cb = b.client().await.unwrap();
    // Another user of the only origin state.
    cb.batch_execute(
        "SELECT pg_replication_origin_create('other_tool');
         SELECT pg_replication_origin_session_setup('other_tool');
         SELECT pg_replication_origin_session_reset();",
    )
    .await
    .unwrap();
    settings(&ca, &["password_encryption = 'md5'"]).await;
    let task = spec(&a, &b, "");
    let report = precheck::run(&task).await;
    expect(
        &report,
        Side::Destination,
        "free_origins",
        Status::Fail,
        setting,
    );
    expect(
        &report,
        Side::Source,
        "wal_keep",
        Status::Warn,
        "max_slot_wal_keep_size = '100GB'",
    );
    expect(
        &report,
        Side::Source,
        "transport",
        Status::Warn,
        "scram-sha-256",
    );

    cb.batch_execute("SELECT pg_replication_origin_drop('other_tool')")
        .await
        .unwrap();
    settings(
        &ca,
        &[
            "password_encryption = 'scram-sha-256'",
            "max_slot_wal_keep_size = '100GB'",
        ],
    )
    .await;
    let report = precheck::run(&task).await;
    expect(
        &report,
        Side::Destination,
        "free_origins",
        Status::Pass,
        "1 of 1",
    );
    expect(&report, Side::Source, "wal_keep", Status::Pass, "100GB");
    expect(
        &report,
        Side::Source,
        "transport",
        Status::Pass,
        "scram-sha-256",
    );
}

#[tokio::test]
async fn two_way_warns_when_both_sides_would_hand_out_the_same_sequence_values() {
    let (a, b, ca, cb) = pair().await;
    ca.batch_execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
        .await
        .unwrap();
    let two_way = "[sync]\ntwo_way = true\nschema = false\nfull = false";
    let report = precheck::run(&spec(&a, &b, two_way)).await;
    expect(
        &report,
        Side::Destination,
        "two_way_sequences",
        Status::Warn,
        "INCREMENT BY 2",
    );
    // Not a question for a one-way task.
    let report = precheck::run(&spec(&a, &b, "")).await;
    assert!(report.get(Side::Destination, "two_way_sequences").is_none());

    ca.batch_execute("ALTER SEQUENCE items_id_seq INCREMENT BY 2 RESTART WITH 1")
        .await
        .unwrap();
    cb.batch_execute(
        "CREATE TABLE items (id serial PRIMARY KEY, name text);
         ALTER SEQUENCE items_id_seq INCREMENT BY 2 RESTART WITH 2",
    )
    .await
    .unwrap();
    let report = precheck::run(&spec(&a, &b, two_way)).await;
    expect(
        &report,
        Side::Destination,
        "two_way_sequences",
        Status::Pass,
        "1 sequences",
    );
}
