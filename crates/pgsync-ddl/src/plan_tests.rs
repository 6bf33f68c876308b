use super::*;
use crate::message::{Command, Dropped, RelationInfo};

fn selection(include: &[&str], exclude: &[&str]) -> Selection {
    Selection::parse(include.iter().copied(), exclude.iter().copied()).unwrap()
}

fn planner() -> Planner {
    Planner::new(
        selection(&["public.*"], &["public.skip_*"]),
        Mapping::identity(),
    )
}

fn table_cmd(tag: &str, schema: &str, name: &str, persistence: &str) -> Command {
    Command {
        tag: tag.into(),
        object_type: "table".into(),
        schema: Some(schema.into()),
        identity: Some(format!("{schema}.{name}")),
        in_extension: false,
        relation: Some(RelationInfo {
            schema: schema.into(),
            name: name.into(),
            kind: "r".into(),
            persistence: persistence.into(),
            partition: false,
            empty: None,
        }),
    }
}

fn msg(tag: &str, seq: u32, query: &str, commands: Vec<Command>) -> DdlMessage {
    DdlMessage {
        v: 1,
        tag: tag.into(),
        seq,
        explicit: false,
        query: query.into(),
        search_path: vec!["public".into()],
        role: "app".into(),
        commands,
        dropped: Vec::new(),
    }
}

fn dropped_table(schema: &str, name: &str, temporary: bool) -> Dropped {
    Dropped {
        object_type: "table".into(),
        schema: Some(schema.into()),
        identity: Some(format!("{schema}.{name}")),
        names: vec![schema.into(), name.into()],
        temporary,
        original: true,
    }
}

fn replay(d: Decision) -> Plan {
    match d {
        Decision::Replay(p) => p,
        other => panic!("expected a replay, got {other:?}"),
    }
}

fn reason(d: Decision) -> String {
    match d {
        Decision::Unsupported { reason, .. } => reason,
        other => panic!("expected unsupported, got {other:?}"),
    }
}

const SCRIPT: &str = "BEGIN; CREATE TABLE a (id int primary key); INSERT INTO a VALUES (1); \
    ALTER TABLE a ADD COLUMN b text; CREATE TABLE b (id int); ALTER TABLE b ADD COLUMN c int; COMMIT";

#[test]
fn the_statement_that_fired_is_picked_out_of_a_multi_statement_query() {
    let p = planner();
    let first = replay(p.plan(&msg(
        "CREATE TABLE",
        0,
        SCRIPT,
        vec![table_cmd("CREATE TABLE", "public", "a", "p")],
    )));
    assert_eq!(first.statements, ["CREATE TABLE a (id int primary key)"]);
    assert_eq!(first.search_path, ["public"]);
    assert_eq!(first.tables, [QualifiedName::new("public", "a")]);
    assert_eq!(first.created, [QualifiedName::new("public", "a")]);
    let second = replay(p.plan(&msg(
        "CREATE TABLE",
        1,
        SCRIPT,
        vec![table_cmd("CREATE TABLE", "public", "b", "p")],
    )));
    assert_eq!(second.statements, ["CREATE TABLE b (id int)"]);
    let alter = replay(p.plan(&msg(
        "ALTER TABLE",
        1,
        SCRIPT,
        vec![table_cmd("ALTER TABLE", "public", "b", "p")],
    )));
    assert_eq!(alter.statements, ["ALTER TABLE b ADD COLUMN c int"]);
    assert!(alter.created.is_empty());
}

#[test]
fn ddl_from_a_function_or_do_block_is_unsupported() {
    let p = planner();
    let r = reason(p.plan(&msg(
        "CREATE TABLE",
        0,
        "DO $$ BEGIN EXECUTE 'create table x (a int)'; END $$",
        vec![table_cmd("CREATE TABLE", "public", "x", "p")],
    )));
    assert!(r.contains("function or DO block"), "{r}");
    // The text holds a CREATE TABLE, but not of the table that was created.
    let r = reason(p.plan(&msg(
        "CREATE TABLE",
        0,
        "SELECT make_tables(); CREATE TABLE y (a int)",
        vec![table_cmd("CREATE TABLE", "public", "x", "p")],
    )));
    assert!(r.contains("function or DO block"), "{r}");
}

#[test]
fn tables_outside_the_selection_are_ignored_and_mixed_statements_refused() {
    let p = planner();
    let d = p.plan(&msg(
        "CREATE TABLE",
        0,
        "create table other.t (a int)",
        vec![table_cmd("CREATE TABLE", "other", "t", "p")],
    ));
    assert!(matches!(d, Decision::Ignore(_)), "{d:?}");
    let d = p.plan(&msg(
        "CREATE TABLE",
        0,
        "create table skip_me (a int)",
        vec![table_cmd("CREATE TABLE", "public", "skip_me", "p")],
    ));
    assert!(matches!(d, Decision::Ignore(_)), "{d:?}");
    let r = reason(p.plan(&msg(
        "CREATE TABLE",
        0,
        "create table c (id int references other.p (id))",
        vec![table_cmd("CREATE TABLE", "public", "c", "p")],
    )));
    assert!(r.contains(r#""other"."p""#), "{r}");
    let r = reason(p.plan(&msg(
        "ALTER TABLE",
        0,
        "alter table t rename to skip_t",
        vec![table_cmd("ALTER TABLE", "public", "skip_t", "p")],
    )));
    assert!(r.contains("skip_t"), "{r}");
}

#[test]
fn unqualified_names_take_the_schema_of_the_captured_object() {
    let p = Planner::new(selection(&["app.*"], &[]), Mapping::identity());
    let mut m = msg(
        "ALTER TABLE",
        0,
        "alter table t add column c int",
        vec![table_cmd("ALTER TABLE", "app", "t", "p")],
    );
    m.search_path = vec!["public".into(), "app".into()];
    let plan = replay(p.plan(&m));
    assert_eq!(plan.tables, [QualifiedName::new("app", "t")]);
    assert_eq!(plan.search_path, ["public", "app"]);
}

#[test]
fn drops_and_renames_are_judged_by_their_tables() {
    let p = planner();
    let mut m = msg("DROP TABLE", 0, "drop table if exists t, u cascade", vec![]);
    m.dropped = vec![
        dropped_table("public", "t", false),
        dropped_table("public", "u", false),
    ];
    let plan = replay(p.plan(&m));
    assert_eq!(plan.statements, ["drop table if exists t, u cascade"]);
    assert_eq!(plan.tables.len(), 2);
    let plan = replay(p.plan(&msg(
        "ALTER TABLE",
        0,
        "ALTER TABLE t RENAME TO t2",
        vec![table_cmd("ALTER TABLE", "public", "t2", "p")],
    )));
    assert_eq!(
        plan.tables,
        [
            QualifiedName::new("public", "t"),
            QualifiedName::new("public", "t2")
        ]
    );
    // IF EXISTS that found nothing: replayed (also nothing there), judged by name.
    let plan = replay(p.plan(&msg("DROP TABLE", 0, "drop table if exists gone", vec![])));
    assert_eq!(plan.tables, [QualifiedName::new("public", "gone")]);
}

#[test]
fn temporary_objects_are_unsupported() {
    let p = planner();
    let r = reason(p.plan(&msg(
        "CREATE TABLE",
        0,
        "create temp table scratch (a int)",
        vec![table_cmd("CREATE TABLE", "pg_temp_3", "scratch", "t")],
    )));
    assert!(r.contains("temporary"), "{r}");
    let mut m = msg("DROP TABLE", 0, "drop table scratch", vec![]);
    m.dropped = vec![dropped_table("pg_temp_3", "scratch", true)];
    assert!(reason(p.plan(&m)).contains("temporary"));
}

#[test]
fn computed_defaults_and_create_table_as_are_unsupported() {
    let p = planner();
    let r = reason(p.plan(&msg(
        "ALTER TABLE",
        0,
        "alter table t add column at timestamptz default now()",
        vec![table_cmd("ALTER TABLE", "public", "t", "p")],
    )));
    assert!(r.contains("not a constant"), "{r}");
    // On a table without rows nothing is filled: replayed.
    let mut cmd = table_cmd("ALTER TABLE", "public", "t", "p");
    cmd.relation.as_mut().unwrap().empty = Some(true);
    replay(p.plan(&msg(
        "ALTER TABLE",
        0,
        "alter table t add column at timestamptz default now()",
        vec![cmd],
    )));
    let r = reason(p.plan(&msg(
        "CREATE TABLE AS",
        0,
        "create table t2 as select * from t",
        vec![table_cmd("CREATE TABLE AS", "public", "t2", "p")],
    )));
    assert!(r.contains("from a query"), "{r}");
}

#[test]
fn index_statements_are_judged_by_their_table() {
    let p = planner();
    let mut cmd = table_cmd("CREATE INDEX", "public", "t", "p");
    cmd.object_type = "index".into();
    let plan = replay(p.plan(&msg(
        "CREATE INDEX",
        0,
        "create index t_a on t (a)",
        vec![cmd],
    )));
    assert_eq!(plan.tables, [QualifiedName::new("public", "t")]);
    let mut m = msg("DROP INDEX", 0, "drop index t_a", vec![]);
    m.dropped = vec![Dropped {
        object_type: "index".into(),
        schema: Some("public".into()),
        identity: Some("public.t_a".into()),
        names: vec!["public".into(), "t_a".into()],
        temporary: false,
        original: true,
    }];
    let plan = replay(p.plan(&m));
    assert_eq!(plan.statements, ["drop index t_a"]);
    m.dropped[0].names[0] = "other".into();
    assert!(matches!(p.plan(&m), Decision::Ignore(_)));
}

#[test]
fn explicit_messages_replay_every_statement() {
    let p = planner();
    let mut m = msg(
        "",
        0,
        "create table e (a int); create index on e (a)",
        vec![],
    );
    m.explicit = true;
    let plan = replay(p.plan(&m));
    assert_eq!(plan.statements.len(), 2);
    m.query = "create function one() returns int language sql as 'select 1'".into();
    let plan = replay(p.plan(&m));
    assert_eq!(plan.statements.len(), 1);
}

#[test]
fn the_mapping_renames_schemas_tables_and_columns() {
    let mut mapping = Mapping::identity();
    mapping.schemas.insert("public".into(), "dst".into());
    mapping.tables.insert(
        QualifiedName::new("public", "orders"),
        QualifiedName::new("dst", "orders_b"),
    );
    mapping
        .columns
        .entry(QualifiedName::new("public", "orders"))
        .or_default()
        .insert("amount".into(), "total".into());
    let p = Planner::new(selection(&["public.*"], &[]), mapping);
    let plan = replay(p.plan(&msg(
        "ALTER TABLE",
        0,
        "alter table orders alter column amount type bigint, add column note text",
        vec![table_cmd("ALTER TABLE", "public", "orders", "p")],
    )));
    assert_eq!(plan.search_path, ["dst"]);
    let sql = &plan.statements[0];
    assert!(sql.contains("dst.orders_b"), "{sql}");
    assert!(sql.contains("total"), "{sql}");
    assert!(!sql.contains("amount"), "{sql}");
    let plan = replay(p.plan(&msg(
        "CREATE TABLE",
        0,
        "create table items (id int primary key, order_id int references orders (id))",
        vec![table_cmd("CREATE TABLE", "public", "items", "p")],
    )));
    let sql = &plan.statements[0];
    assert!(
        sql.contains("dst.items") && sql.contains("dst.orders_b"),
        "{sql}"
    );
    let r = reason(p.plan(&msg(
        "ALTER TABLE",
        0,
        "alter table orders add constraint pos check (amount > 0)",
        vec![table_cmd("ALTER TABLE", "public", "orders", "p")],
    )));
    assert!(r.contains("amount"), "{r}");
}

#[test]
fn unparsable_text_is_unsupported_not_a_panic() {
    let p = planner();
    let r = reason(p.plan(&msg("CREATE TABLE", 0, "create tabel x (", vec![])));
    assert!(r.contains("cannot be parsed"), "{r}");
    let r = reason(p.plan(&msg("CREATE TABLE", 3, "create table x ()", vec![])));
    assert!(r.contains("function or DO block"), "{r}");
}

#[test]
fn schemas_the_selection_covers_are_created_and_others_ignored() {
    let p = Planner::new(selection(&["app*.*"], &[]), Mapping::identity());
    let mut m = msg(
        "CREATE SCHEMA",
        0,
        "create schema if not exists app2",
        vec![],
    );
    m.commands = vec![Command {
        tag: "CREATE SCHEMA".into(),
        object_type: "schema".into(),
        schema: None,
        identity: Some("app2".into()),
        in_extension: false,
        relation: None,
    }];
    assert_eq!(
        replay(p.plan(&m)).statements,
        ["create schema if not exists app2"]
    );
    m.query = "create schema other".into();
    assert!(matches!(p.plan(&m), Decision::Ignore(_)));
    m.query = "create schema app3 create table t (a int)".into();
    assert!(reason(p.plan(&m)).contains("inside CREATE SCHEMA"));
}

#[test]
fn a_new_partition_follows_its_parent() {
    let p = Planner::new(selection(&["public.events"], &[]), Mapping::identity());
    let mut cmd = table_cmd("CREATE TABLE", "public", "events_2024", "p");
    cmd.relation.as_mut().unwrap().partition = true;
    let plan = replay(p.plan(&msg(
        "CREATE TABLE",
        0,
        "create table events_2024 partition of events for values from (2024) to (2025)",
        vec![cmd.clone()],
    )));
    assert_eq!(plan.statements.len(), 1);
    let mut other = cmd;
    other.relation.as_mut().unwrap().name = "logs_2024".into();
    let d = p.plan(&msg(
        "CREATE TABLE",
        0,
        "create table logs_2024 partition of logs for values from (2024) to (2025)",
        vec![other],
    ));
    assert!(matches!(d, Decision::Ignore(_)), "{d:?}");
}
