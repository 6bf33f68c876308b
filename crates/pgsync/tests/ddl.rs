//! DDL sync end to end, through the `pgsync` binary: schema changes made on A reach B at
//! their place in the change stream (schema dumps and every table equal afterwards), the
//! reverse direction of a two-way pair keeps working through them, and DDL that cannot be
//! replayed faithfully stops the task (`fail`) or is left out (`skip`).

mod common;

use std::time::Duration;

use common::{PGBENCH_TABLES, Pgsync, TaskFile, checksum, pgbench_pair, wait_converged};
use pgsync_testkit::{Cluster, PgbenchLoad};
use tokio_postgres::Client;

/// Every statement DDL sync covers, interleaved with rows, in separate transactions, in
/// one transaction with rows, and as multi-statement texts; names mostly unqualified.
const SCRIPT: &[&str] = &[
    // A new table and its first rows in one transaction: it joins the publication at once.
    "BEGIN; CREATE TABLE orders (id int PRIMARY KEY, item_id int, qty int);
     INSERT INTO orders VALUES (1, 1, 5), (2, 2, 7); COMMIT",
    "ALTER TABLE items ADD COLUMN price numeric",
    "UPDATE items SET price = id * 1.5 WHERE id <= 20",
    // DDL between rows of one transaction: rows before see the old shape, rows after the new.
    "BEGIN; INSERT INTO items (id, name) VALUES (1001, 'before');
     ALTER TABLE items ADD COLUMN stock int DEFAULT 10;
     INSERT INTO items (id, name, stock) VALUES (1002, 'after', 3); COMMIT",
    "ALTER TABLE orders ALTER COLUMN qty TYPE bigint",
    "ALTER TABLE orders ADD CONSTRAINT orders_item_fk FOREIGN KEY (item_id) REFERENCES items (id)",
    "ALTER TABLE orders ADD CONSTRAINT orders_qty_positive CHECK (qty > 0)",
    "ALTER TABLE items ALTER COLUMN stock DROP DEFAULT",
    "INSERT INTO items (id, name) VALUES (1003, 'no default')",
    "CREATE INDEX items_name_idx ON items (name)",
    // IF NOT EXISTS that does nothing, and one that does.
    "CREATE INDEX IF NOT EXISTS items_name_idx ON items (name);
     CREATE TABLE IF NOT EXISTS public.notes (id serial PRIMARY KEY, body text NOT NULL)",
    "INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 50) g",
    "ALTER TABLE orders RENAME TO purchases",
    "INSERT INTO purchases VALUES (3, 3, 9)",
    "ALTER TABLE items DROP COLUMN price",
    "UPDATE items SET stock = 1 WHERE id BETWEEN 30 AND 40",
    // CASCADE drops the foreign key of another table; RESTRICT and IF EXISTS.
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE kid (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
     INSERT INTO parent VALUES (1); INSERT INTO kid VALUES (1, 1)",
    "DROP TABLE parent CASCADE",
    "INSERT INTO kid VALUES (2, 99)",
    "CREATE TABLE scratch (id int); DROP TABLE IF EXISTS scratch RESTRICT;
     DROP TABLE IF EXISTS never_existed",
    // Several DDL statements mixed with rows in one transaction, and a qualified name.
    "BEGIN; INSERT INTO purchases VALUES (4, 4, 1);
     ALTER TABLE purchases ADD COLUMN note text;
     UPDATE purchases SET note = 'n' || id;
     CREATE INDEX ON public.purchases (note);
     ALTER TABLE purchases ALTER COLUMN note DROP DEFAULT;
     INSERT INTO purchases VALUES (5, 5, 2, 'last'); COMMIT",
    // A schema the selection covers, a table in it, and one created there through the
    // session's search path (its foreign key found in public the same way).
    "CREATE SCHEMA app; CREATE TABLE app.events (id int PRIMARY KEY, at date);
     INSERT INTO app.events VALUES (1, '2024-01-01')",
    "BEGIN; SET LOCAL search_path = app, public;
     CREATE TABLE logs (id int PRIMARY KEY, item_id int REFERENCES items (id));
     INSERT INTO logs VALUES (1, 1); COMMIT",
    // A computed default on a table without rows fills nothing: replayed as is.
    "CREATE TABLE audit (id int PRIMARY KEY);
     ALTER TABLE audit ADD COLUMN at timestamptz NOT NULL DEFAULT now();
     INSERT INTO audit (id) VALUES (1)",
    // Explicit DDL for what runs where the trigger cannot see the text.
    "SELECT pgsync.replicate_ddl('CREATE INDEX kid_parent_idx ON kid (parent_id)')",
    "INSERT INTO items (id, name) VALUES (9999, 'done')",
];

/// `pg_dump -s` of the user schemas, without pgsync's own objects (its schema,
/// publications, the capture's event triggers).
async fn schema_dump(c: &Cluster) -> String {
    let out = tokio::process::Command::new(c.binaries().program("pg_dump"))
        .args([
            "-s",
            "--no-publications",
            "--no-subscriptions",
            "--exclude-schema=pgsync",
            "-d",
        ])
        .arg(c.dsn())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split(";\n")
        .map(|stmt| {
            stmt.lines()
                // `\restrict <random key>` lines differ on every run.
                .filter(|l| !l.starts_with("--") && !l.starts_with('\\') && !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.is_empty() && !s.contains("EVENT TRIGGER") && !s.contains("pgsync"))
        .collect::<Vec<_>>()
        .join(";\n")
}

async fn user_tables(c: &Client) -> Vec<String> {
    c.query(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgsync') ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn a_ddl_script_during_streaming_leaves_equal_schemas_and_rows() {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("db").start(),
        Cluster::builder().database("db").start()
    )
    .unwrap();
    let ca = a.client().await.unwrap();
    ca.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let task = TaskFile::new(&a, &b, "[objects]\ninclude = [\"public.*\", \"app.*\"]");
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &["items"], Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;

    for statement in SCRIPT {
        ca.batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let tables = user_tables(&ca).await;
    assert_eq!(
        tables,
        [
            "app.events",
            "app.logs",
            "public.audit",
            "public.items",
            "public.kid",
            "public.notes",
            "public.purchases"
        ]
    );
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    wait_converged(&a, &b, &names, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    let (dump_a, dump_b) = (schema_dump(&a).await, schema_dump(&b).await);
    assert!(dump_a.contains("orders_qty_positive") && dump_a.contains("kid_parent_idx"));
    let only = |x: &str, y: &str| -> Vec<String> {
        let other: Vec<&str> = y.split(";\n").collect();
        x.split(";\n")
            .filter(|s| !other.contains(s))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        dump_a == dump_b,
        "schemas differ; only on A: {:?}\nonly on B: {:?}\n{}",
        only(&dump_a, &dump_b),
        only(&dump_b, &dump_a),
        pgsync.log_text()
    );
    assert_eq!(user_tables(&b.client().await.unwrap()).await, tables);
    // The last row is there, and the rows around the ALTER kept their shapes.
    assert_eq!(checksum(&b, "items").await.0, 104);
    let stock: Vec<Option<i32>> = b
        .client()
        .await
        .unwrap()
        .query(
            "SELECT stock FROM items WHERE id IN (1001, 1002, 1003) ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stock, [Some(10), Some(3), None]);
    assert!(pgsync.stop().await.success());

    // release takes the capture with it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(["release", "--config"])
        .arg(&task.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: i64 = ca
        .query_one(
            "SELECT (SELECT count(*) FROM pg_event_trigger)
                  + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'ddl\\_%' OR proname = 'replicate_ddl')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    common::untouched(&a).await;
}

/// pgbench's update on B (history rows record side 2).
const B_LOAD: &str = "\\set aid random(1, 100000)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (2, 1, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

/// Inserts into `notes` on B until `stop`, following a rename the way an application
/// would: on "relation does not exist" it writes to the new name. Returns rows written.
async fn note_writer(b: Client, stop: tokio::sync::watch::Receiver<bool>) -> i64 {
    let mut table = "notes";
    let mut column = "body";
    let mut scratch = true;
    let mut written = 0;
    while !*stop.borrow() {
        let sql = format!("INSERT INTO {table} ({column}) VALUES ('from b')");
        match b.batch_execute(&sql).await {
            Ok(()) => written += 1,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                table = "notes_renamed";
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN) => {
                column = "text";
            }
            Err(e) => panic!("{sql}: {e}"),
        }
        // And to a table A drops meanwhile, until it is gone here too.
        if scratch
            && b.batch_execute("INSERT INTO scratch DEFAULT VALUES")
                .await
                .is_err()
        {
            scratch = false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    written
}

#[tokio::test]
async fn two_way_rename_add_and_drop_column_on_a_while_b_writes_lose_nothing() {
    let (a, b) = pgbench_pair(1).await;
    let ca = a.client().await.unwrap();
    ca.batch_execute("CREATE TABLE notes (id bigint GENERATED BY DEFAULT AS IDENTITY (START 1000000) PRIMARY KEY, body text, extra text);
                      CREATE TABLE scratch (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)")
        .await
        .unwrap();
    let task = TaskFile::new(&a, &b, "[sync]\ntwo_way = true");
    let pgsync = Pgsync::run(&task);
    let mut tables: Vec<&str> = PGBENCH_TABLES.to_vec();
    tables.push("notes");
    wait_converged(&a, &b, &tables, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("b.sql");
    std::fs::write(&script, B_LOAD).unwrap();
    let load = b
        .pgbench()
        .spawn(
            &PgbenchLoad::script(&script)
                .clients(2)
                .duration(Duration::from_secs(8)),
        )
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(note_writer(b.client().await.unwrap(), stop_rx));

    // On A, while B writes: each change lands in the middle of B's writes.
    for statement in [
        "ALTER TABLE pgbench_history ADD COLUMN note text DEFAULT 'x'",
        "ALTER TABLE notes RENAME TO notes_renamed",
        "ALTER TABLE pgbench_history DROP COLUMN filler",
        "ALTER TABLE notes_renamed DROP COLUMN extra",
        "ALTER TABLE notes_renamed ADD COLUMN tag int DEFAULT 7",
        "ALTER TABLE notes_renamed RENAME COLUMN body TO text",
        "DROP TABLE scratch",
    ] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        ca.batch_execute(statement).await.unwrap();
    }
    let report = load.finish().await.unwrap();
    stop_tx.send_replace(true);
    let notes = writer.await.unwrap();
    assert!(report.transactions > 50 && notes > 50, "{report:?} {notes}");

    let mut tables: Vec<&str> = PGBENCH_TABLES.to_vec();
    tables.push("notes_renamed");
    wait_converged(&a, &b, &tables, Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    let count = |c: Client, sql: &'static str| async move {
        c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    };
    let history = "SELECT count(*) FROM pgbench_history WHERE tid = 2";
    assert_eq!(
        count(ca, history).await,
        report.transactions as i64,
        "{}",
        pgsync.log_text()
    );
    let from_b = "SELECT count(*) FROM notes_renamed WHERE text = 'from b'";
    assert_eq!(count(a.client().await.unwrap(), from_b).await, notes);
    // Nothing stuck: both directions still apply.
    b.client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO notes_renamed (text) VALUES ('late b')")
        .await
        .unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO notes_renamed (id, text) VALUES (1, 'late a')")
        .await
        .unwrap();
    wait_converged(&a, &b, &["notes_renamed"], Duration::from_secs(30), || {
        pgsync.log_text()
    })
    .await;
    assert!(pgsync.stop().await.success());
}

/// Runs pgsync until it exits by itself (a definite error); returns its log.
async fn run_until_it_stops(task: &TaskFile) -> String {
    let mut p = Pgsync::run(task);
    let status = tokio::time::timeout(Duration::from_secs(40), p.child.wait())
        .await
        .unwrap_or_else(|_| panic!("pgsync kept running:\n{}", p.log_text()))
        .unwrap();
    assert!(!status.success());
    p.log_text()
}

fn task_text(ddl_unsupported: &str) -> String {
    format!("[sync]\nddl_unsupported = \"{ddl_unsupported}\"")
}

#[tokio::test]
async fn unsupported_ddl_stops_the_task_under_fail_and_is_left_out_under_skip() {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("db").start(),
        Cluster::builder().database("db").start()
    )
    .unwrap();
    let ca = a.client().await.unwrap();
    ca.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    let mut task = TaskFile::new(&a, &b, &task_text("fail"));
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &["t"], Duration::from_secs(60), || {
        pgsync.log_text()
    })
    .await;
    assert!(pgsync.stop().await.success());

    let forms = [
        (
            "DO $$ BEGIN EXECUTE 'CREATE INDEX t_v_idx ON t (v)'; END $$",
            "function or DO block",
            None,
        ),
        ("CREATE TEMP TABLE scratch (a int)", "temporary", None),
        (
            "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now()",
            "not a constant",
            // What the error tells the user to do before skipping: make the change on B
            // and give the rows their values (here: the same on both sides).
            Some((
                "ALTER TABLE t ADD COLUMN at timestamptz",
                "UPDATE t SET at = timestamptz '2020-01-01 00:00:00+00'",
            )),
        ),
    ];
    for (next_id, (statement, reason, fix)) in (2..).zip(forms) {
        ca.batch_execute(statement).await.unwrap();
        ca.execute("INSERT INTO t (id, v) VALUES ($1, 0)", &[&next_id])
            .await
            .unwrap();
        // fail: the task stops, naming the statement and why; the row after it waits.
        task = TaskFile::new(&a, &b, &task_text("fail"));
        let log = run_until_it_stops(&task).await;
        assert!(log.contains("DDL not replayed"), "{log}");
        assert!(log.contains(reason), "{reason}: {log}");
        let shown = statement
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(log.contains(&shown), "{shown}: {log}");
        assert_eq!(checksum(&b, "t").await.0, i64::from(next_id) - 1);
        // skip: left out, and everything after it arrives.
        if let Some((on_b, on_a)) = fix {
            b.client().await.unwrap().batch_execute(on_b).await.unwrap();
            ca.batch_execute(on_a).await.unwrap();
        }
        task = TaskFile::new(&a, &b, &task_text("skip"));
        let pgsync = Pgsync::run(&task);
        wait_converged(&a, &b, &["t"], Duration::from_secs(30), || {
            pgsync.log_text()
        })
        .await;
        assert!(pgsync.log_text().contains("unsupported DDL skipped"));
        assert!(pgsync.stop().await.success());
    }
    // The index from the DO block stays on A only; rows are equal.
    let has_index = "SELECT count(*) FROM pg_indexes WHERE indexname = 't_v_idx'";
    let n = |c: Client| async move { c.query_one(has_index, &[]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(n(ca).await, 1);
    assert_eq!(n(b.client().await.unwrap()).await, 0);
}
