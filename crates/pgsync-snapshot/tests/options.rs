//! Existing tables, selections, mappings and snapshots that cannot work: each is refused
//! with what to do, or handled as documented.

mod common;

use common::{endpoint, export_snapshot, pair};
use pgsync_names::{CasePolicy, Mapping, QualifiedName, Selection};
use pgsync_snapshot::{ExistingTables, FullSync, SnapshotError, SyncOptions};

const SOURCE: &str = "
CREATE TABLE t1 (id integer PRIMARY KEY, v text);
CREATE TABLE t2 (id integer PRIMARY KEY, v text);
INSERT INTO t1 SELECT g, 'source' FROM generate_series(1, 10) g;
INSERT INTO t2 SELECT g, 'source' FROM generate_series(1, 10) g;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_that_exist_on_the_destination_are_listed_in_error_mode() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.client().await?.batch_execute(SOURCE).await?;
    dst.client()
        .await?
        .batch_execute("CREATE TABLE t2 (id integer PRIMARY KEY, v text)")
        .await?;
    let exported = export_snapshot(&src).await?;
    let err = FullSync::new(endpoint(&src), endpoint(&dst), SyncOptions::new("exists"))
        .start(&exported.name)
        .finish()
        .await
        .expect_err("t2 exists");
    match &err {
        SnapshotError::TablesExist { tables } => {
            assert_eq!(tables, &vec![QualifiedName::new("public", "t2")]);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("ignore"), "says what to do: {err}");
    let t1: Option<String> = dst
        .client()
        .await?
        .query_one("SELECT to_regclass('public.t1')::text", &[])
        .await?
        .get(0);
    assert_eq!(t1, None, "nothing was created");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_mode_keeps_existing_tables_and_their_rows_on_key_clashes() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.client().await?.batch_execute(SOURCE).await?;
    dst.client()
        .await?
        .batch_execute(
            "CREATE TABLE t2 (id integer PRIMARY KEY, v text, extra text DEFAULT 'mine');
             INSERT INTO t2 VALUES (1, 'destination'), (100, 'destination')",
        )
        .await?;
    let exported = export_snapshot(&src).await?;
    let mut options = SyncOptions::new("ignore");
    options.existing = ExistingTables::Ignore;
    let report = FullSync::new(endpoint(&src), endpoint(&dst), options)
        .start(&exported.name)
        .finish()
        .await?;
    assert_eq!(
        report.copy.rows,
        10 + 9,
        "t1 whole, t2 without the clashing row"
    );
    let rows = dst
        .client()
        .await?
        .query("SELECT id, v, extra FROM t2 ORDER BY id", &[])
        .await?;
    let got: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 11);
    assert_eq!(got[0], (1, "destination".into(), "mine".into()));
    assert_eq!(got[1], (2, "source".into(), "mine".into()));
    assert_eq!(got[10], (100, "destination".into(), "mine".into()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_that_leaves_out_a_partition_is_refused() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.client()
        .await?
        .batch_execute(
            "CREATE TABLE m (id int, at date) PARTITION BY RANGE (at);
             CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE m_rest PARTITION OF m DEFAULT;",
        )
        .await?;
    let exported = export_snapshot(&src).await?;
    let mut options = SyncOptions::new("partial");
    options.selection = Selection::parse(["public.*"], ["public.m_rest"])?;
    let err = FullSync::new(endpoint(&src), endpoint(&dst), options)
        .start(&exported.name)
        .finish()
        .await
        .expect_err("m_rest is left out");
    assert!(
        matches!(err, SnapshotError::PartialPartitionTree { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("include both or exclude both"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_named_in_the_selection_that_does_not_exist_is_refused() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.client()
        .await?
        .batch_execute(r#"CREATE TABLE "Orders" (id int)"#)
        .await?;
    let exported = export_snapshot(&src).await?;
    let mut options = SyncOptions::new("missing");
    options.selection = Selection::parse(["public.orders"], [])?;
    let err = FullSync::new(endpoint(&src), endpoint(&dst), options)
        .start(&exported.name)
        .finish()
        .await
        .expect_err("public.orders is not \"Orders\"");
    assert!(matches!(err, SnapshotError::MissingTable { .. }), "{err}");
    assert!(err.to_string().contains("double quotes"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_role_without_select_gets_a_permission_error_that_names_the_grant()
-> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.client()
        .await?
        .batch_execute(&format!(
            "{SOURCE} CREATE ROLE reader LOGIN; GRANT SELECT ON t1 TO reader;"
        ))
        .await?;
    let exported = export_snapshot(&src).await?;
    let reader = pgsync_snapshot::Endpoint::parse(&format!(
        "host=127.0.0.1 port={} user=reader dbname=app",
        src.port()
    ))?;
    let err = FullSync::new(reader, endpoint(&dst), SyncOptions::new("denied"))
        .start(&exported.name)
        .finish()
        .await
        .expect_err("reader cannot read t2");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("t2") && text.contains("needs SELECT"),
        "{text}"
    );
    assert!(!err.is_retryable());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_exporter_ended_is_refused_with_the_fix() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    let exported = export_snapshot(&src).await?;
    exported.client.batch_execute("COMMIT").await?;
    let mut handle = FullSync::new(endpoint(&src), endpoint(&dst), SyncOptions::new("gone"))
        .start(&exported.name);
    assert!(handle.snapshot_imported().await.is_err());
    let err = handle.finish().await.expect_err("the snapshot is gone");
    assert!(matches!(err, SnapshotError::SnapshotImport { .. }), "{err}");
    // 22023 invalid_parameter_value up to 17, 42704 undefined_object from 18.
    assert!(
        matches!(err.code().map(|c| c.code()), Some("22023" | "42704")),
        "{err}"
    );
    assert!(err.to_string().contains("Keep the session"), "{err}");
    assert!(!err.is_retryable());
    Ok(())
}

fn renaming() -> Mapping {
    let mut m = Mapping {
        case: CasePolicy::Lower,
        ..Mapping::identity()
    };
    m.schemas.insert("App".into(), "sales".into());
    m.tables.insert(
        QualifiedName::new("App", "Orders"),
        QualifiedName::new("sales", "orders_v2"),
    );
    m.columns
        .entry(QualifiedName::new("App", "Orders"))
        .or_default()
        .insert("Total".into(), "amount".into());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_renames_schemas_tables_and_columns_inside_definitions() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.client()
        .await?
        .batch_execute(
            r#"CREATE SCHEMA "App";
               CREATE TABLE "App"."Customers" ("Id" serial PRIMARY KEY, "Name" text);
               CREATE TABLE "App"."Orders" (
                   "Id" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                   "CustomerId" integer REFERENCES "App"."Customers" ("Id"),
                   "Total" numeric CHECK ("Total" >= 0),
                   "Double" numeric GENERATED ALWAYS AS ("Total" * 2) STORED);
               CREATE INDEX "Orders_Big" ON "App"."Orders" ("Total") WHERE "Total" > 100;
               INSERT INTO "App"."Customers" ("Name") SELECT 'c' || g FROM generate_series(1, 5) g;
               INSERT INTO "App"."Orders" ("CustomerId", "Total") SELECT 1 + g % 5, g FROM generate_series(1, 200) g;"#,
        )
        .await?;
    let exported = export_snapshot(&src).await?;
    let mut options = SyncOptions::new("mapped");
    options.selection = Selection::parse([r#""App".*"#], [])?;
    options.mapping = renaming();
    FullSync::new(endpoint(&src), endpoint(&dst), options)
        .start(&exported.name)
        .finish()
        .await?;
    let d = dst.client().await?;
    let row = d
        .query_one(
            "SELECT count(*), sum(amount), sum(\"double\"), count(DISTINCT customerid) FROM sales.orders_v2",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i64>(0), 200);
    assert_eq!(row.get::<_, i64>(3), 5);
    let defs: Vec<String> = d
        .query(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'sales.orders_v2'::regclass
             UNION ALL SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'sales.orders_v2'::regclass
             ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let all = defs.join("\n");
    assert!(all.contains("CHECK ((amount >= (0)::numeric))"), "{all}");
    assert!(all.contains("REFERENCES sales.customers(id)"), "{all}");
    assert!(all.contains("WHERE (amount > (100)::numeric)"), "{all}");
    // Identity and serial sequences continue.
    d.batch_execute("INSERT INTO sales.orders_v2 (customerid, amount) VALUES (1, 1); INSERT INTO sales.customers (name) VALUES ('new')")
        .await?;
    let ids: (i64, i32) = {
        let r = d
            .query_one("SELECT (SELECT max(id) FROM sales.orders_v2), (SELECT max(id) FROM sales.customers)", &[])
            .await?;
        (r.get(0), r.get(1))
    };
    assert_eq!(ids, (201, 6));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_a_renamed_table_is_refused_until_bodies_can_be_rewritten() -> anyhow::Result<()>
{
    let (src, dst) = pair().await?;
    src.client()
        .await?
        .batch_execute(
            r#"CREATE SCHEMA "App";
               CREATE TABLE "App"."Orders" ("Id" int PRIMARY KEY, "Total" numeric);
               CREATE VIEW "App".big AS SELECT * FROM "App"."Orders" WHERE "Total" > 10;"#,
        )
        .await?;
    let exported = export_snapshot(&src).await?;
    let mut options = SyncOptions::new("mapped-view");
    options.selection = Selection::parse([r#""App".*"#], [])?;
    options.mapping = renaming();
    let err = FullSync::new(endpoint(&src), endpoint(&dst), options)
        .start(&exported.name)
        .finish()
        .await
        .expect_err("view bodies are not rewritten");
    assert!(
        matches!(err, SnapshotError::UnsupportedMapping { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(r#""App"."big""#), "{err}");
    Ok(())
}
