//! The capture on a real server: each DDL statement becomes one `pgsync.ddl` message at
//! its place among the rows of its transaction (read back through `test_decoding`), the
//! planner picks the right statement out of the query text, new selected tables join the
//! publication, renames and dropped columns are written down, and the capture is shared
//! and removed cleanly.

use pgsync_ddl::capture::{self, CaptureTask};
use pgsync_ddl::{DdlMessage, Decision, NameHistory, Planner};
use pgsync_names::{Mapping, QualifiedName, Selection};
use pgsync_testkit::Cluster;
use tokio_postgres::Client;

/// One decoded change: a row (`table` + kind) or a DDL message.
#[derive(Debug)]
enum Seen {
    Row(String),
    Ddl(DdlMessage),
}

/// Everything decoded from slot `s` so far, in order.
async fn changes(c: &Client) -> Vec<Seen> {
    let rows = c
        .query(
            "SELECT data FROM pg_logical_slot_get_changes('s', NULL, NULL)",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .filter_map(|r| {
            let data: String = r.get(0);
            if let Some(rest) = data.strip_prefix("message: transactional: 1 prefix: pgsync.ddl") {
                let json = &rest[rest.find("content:").unwrap() + "content:".len()..];
                Some(Seen::Ddl(DdlMessage::decode(json.as_bytes()).unwrap()))
            } else if data.starts_with("table ") && !data.starts_with("table pgsync.") {
                Some(Seen::Row(
                    data.split(':').take(2).collect::<Vec<_>>().join(":"),
                ))
            } else {
                None
            }
        })
        .collect()
}

async fn setup() -> (Cluster, Client, Selection) {
    let cluster = Cluster::builder().database("db").start().await.unwrap();
    let c = cluster.connect("db").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, a text);
         CREATE SCHEMA other;
         CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await
    .unwrap();
    let selection = Selection::parse(["public.*"], []).unwrap();
    capture::install(
        &c,
        &CaptureTask {
            task: "one",
            publication: "pub",
            selection: &selection,
        },
    )
    .await
    .unwrap();
    c.batch_execute("SELECT pg_create_logical_replication_slot('s', 'test_decoding')")
        .await
        .unwrap();
    (cluster, c, selection)
}

fn statements(planner: &Planner, m: &DdlMessage) -> Vec<String> {
    match planner.plan(m) {
        Decision::Replay(p) => p.statements,
        other => panic!("expected a replay of {m:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn ddl_mixed_with_rows_in_one_transaction_arrives_in_place_and_is_planned_exactly() {
    let (_cluster, c, selection) = setup().await;
    c.batch_execute(
        "BEGIN;
         INSERT INTO t VALUES (1, 'x');
         ALTER TABLE t ADD COLUMN b int DEFAULT 7;
         INSERT INTO t VALUES (2, 'y', 3);
         CREATE TABLE u (id int PRIMARY KEY);
         INSERT INTO u VALUES (1);
         CREATE TABLE other.o (id int);
         ALTER TABLE u ADD COLUMN c text;
         COMMIT;",
    )
    .await
    .unwrap();
    let seen = changes(&c).await;
    let kinds: Vec<String> = seen
        .iter()
        .map(|s| match s {
            Seen::Row(r) => r.clone(),
            Seen::Ddl(m) => format!("ddl {} {}", m.tag, m.seq),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "table public.t: INSERT",
            "ddl ALTER TABLE 0",
            "table public.t: INSERT",
            "ddl CREATE TABLE 0",
            "table public.u: INSERT",
            "ddl CREATE TABLE 1",
            "ddl ALTER TABLE 1",
        ]
    );
    let planner = Planner::new(selection, Mapping::identity());
    let ddl: Vec<&DdlMessage> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Ddl(m) => Some(m),
            Seen::Row(_) => None,
        })
        .collect();
    assert_eq!(
        statements(&planner, ddl[0]),
        ["ALTER TABLE t ADD COLUMN b int DEFAULT 7"]
    );
    assert_eq!(
        statements(&planner, ddl[1]),
        ["CREATE TABLE u (id int PRIMARY KEY)"]
    );
    assert!(matches!(planner.plan(ddl[2]), Decision::Ignore(_)));
    assert_eq!(
        statements(&planner, ddl[3]),
        ["ALTER TABLE u ADD COLUMN c text"]
    );
    assert_eq!(ddl[0].search_path, ["public"]);
    // The new selected table joined the publication in the same transaction; the other
    // schema's did not.
    let published: Vec<String> = c
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'pub' ORDER BY 1",
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
async fn drops_renames_functions_and_explicit_ddl_are_told_apart() {
    let (_cluster, c, selection) = setup().await;
    c.batch_execute(
        "ALTER TABLE t RENAME TO t2;
         ALTER TABLE t2 DROP COLUMN a;
         DROP TABLE IF EXISTS t2, nothing_here CASCADE;
         DO $$ BEGIN EXECUTE 'CREATE TABLE from_do (id int)'; END $$;
         SELECT pgsync.replicate_ddl('CREATE TABLE explicit_one (id int); CREATE INDEX ON explicit_one (id)');",
    )
    .await
    .unwrap();
    let ddl: Vec<DdlMessage> = changes(&c)
        .await
        .into_iter()
        .filter_map(|s| match s {
            Seen::Ddl(m) => Some(m),
            Seen::Row(_) => None,
        })
        .collect();
    let tags: Vec<(&str, bool)> = ddl.iter().map(|m| (m.tag.as_str(), m.explicit)).collect();
    assert_eq!(
        tags,
        [
            ("ALTER TABLE", false),
            ("ALTER TABLE", false),
            ("DROP TABLE", false),
            ("CREATE TABLE", false),
            ("", true),
        ]
    );
    let planner = Planner::new(selection, Mapping::identity());
    assert_eq!(
        statements(&planner, &ddl[0]),
        ["ALTER TABLE t RENAME TO t2"]
    );
    assert_eq!(
        statements(&planner, &ddl[1]),
        ["ALTER TABLE t2 DROP COLUMN a"]
    );
    assert_eq!(
        statements(&planner, &ddl[2]),
        ["DROP TABLE IF EXISTS t2, nothing_here CASCADE"]
    );
    match planner.plan(&ddl[3]) {
        Decision::Unsupported { reason, .. } => assert!(reason.contains("DO block"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(statements(&planner, &ddl[4]).len(), 2);
    // Written down for the reverse direction of a two-way task.
    let history = NameHistory::read(&c).await.unwrap();
    let q = |n: &str| QualifiedName::new("public", n);
    assert_eq!(history.current_name(&q("t")), q("t2"));
    assert!(history.column_dropped(&q("t2"), "a"));
    assert!(history.table_dropped(&q("t2")));
}

#[tokio::test]
async fn tasks_share_the_capture_and_the_last_one_removes_it() {
    let (_cluster, c, selection) = setup().await;
    capture::install(
        &c,
        &CaptureTask {
            task: "two",
            publication: "pub",
            selection: &selection,
        },
    )
    .await
    .unwrap();
    let triggers = || async {
        c.query_one(
            "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgsync\\_ddl\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert_eq!(triggers().await, 2);
    assert!(capture::uninstall(&c, "one").await.unwrap());
    assert_eq!(triggers().await, 2);
    c.batch_execute("CREATE TABLE still_captured (id int)")
        .await
        .unwrap();
    assert!(capture::uninstall(&c, "two").await.unwrap());
    assert_eq!(triggers().await, 0);
    c.batch_execute("CREATE TABLE not_captured (id int)")
        .await
        .unwrap();
    let ddl = changes(&c)
        .await
        .into_iter()
        .filter(|s| matches!(s, Seen::Ddl(_)))
        .count();
    assert_eq!(ddl, 1);
    let left: bool = c
        .query_one("SELECT to_regclass('pgsync.ddl_tasks') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(left);
    assert!(!capture::uninstall(&c, "two").await.unwrap());
}

#[tokio::test]
async fn ddl_by_an_unprivileged_role_is_captured_and_it_cannot_emit_ddl_itself() {
    let (cluster, c, selection) = setup().await;
    c.batch_execute("CREATE ROLE app LOGIN; GRANT CREATE ON SCHEMA public TO app")
        .await
        .unwrap();
    let dsn = cluster.dsn().replace("user=postgres", "user=app");
    let (app, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    app.batch_execute(
        "CREATE TABLE owned (id int PRIMARY KEY);
         REVOKE SELECT ON owned FROM app;
         ALTER TABLE owned ADD COLUMN at timestamptz DEFAULT now();",
    )
    .await
    .unwrap();
    let ddl: Vec<DdlMessage> = changes(&c)
        .await
        .into_iter()
        .filter_map(|s| match s {
            Seen::Ddl(m) => Some(m),
            Seen::Row(_) => None,
        })
        .collect();
    assert_eq!(ddl.len(), 2);
    assert_eq!(ddl[1].role, "app");
    assert_eq!(ddl[1].search_path, ["public"]);
    // The table is empty: the computed default fills nothing and is replayed.
    let planner = Planner::new(selection, Mapping::identity());
    assert_eq!(
        statements(&planner, &ddl[1]),
        ["ALTER TABLE owned ADD COLUMN at timestamptz DEFAULT now()"]
    );
    // The author's search path is as it was.
    let path: String = app
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(path, "\"$user\", public");
    // Nobody else may put DDL for the destination into the WAL.
    for sql in [
        "SELECT pgsync.ddl_emit('{}')",
        "SELECT pgsync.replicate_ddl('CREATE TABLE sneaky (id int)')",
        "SELECT pgsync.ddl_track('[]', '[]')",
    ] {
        let err = app.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
}
