//! Schema sync and full copy of a rich schema into an empty destination.

mod common;

use common::{checksums, endpoint, export_snapshot, first_difference, pair, schema_dump};
use pgsync_names::Selection;
use pgsync_snapshot::{FullSync, Progress, SyncOptions};

const FIXTURE: &str = include_str!("fixtures/rich.sql");

fn all_schemas() -> Selection {
    Selection::parse(["public.*", "app.*", r#""Sales Dept".*"#], []).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rich_schema_arrives_identical_with_every_row() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.client().await?.batch_execute(FIXTURE).await?;
    let exported = export_snapshot(&src).await?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut options = SyncOptions::new("rich");
    options.selection = all_schemas();
    options.workers = 3;
    options.chunk_bytes = 64 * 1024; // split the bigger tables into ctid ranges
    options.progress = Some(tx);
    let mut handle = FullSync::new(endpoint(&src), endpoint(&dst), options).start(&exported.name);
    handle.snapshot_imported().await?;
    // The exporting session is no longer needed once every worker has imported.
    drop(exported);
    let report = handle.finish().await?;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(
        report.copy.jobs > report.copy.tables_copied,
        "some tables were chunked: {report:?}"
    );

    let src_dump = schema_dump(&src).await?;
    let dst_dump = schema_dump(&dst).await?;
    assert!(
        src_dump.contains("CREATE AGGREGATE app.my_sum"),
        "{src_dump}"
    );
    if src_dump != dst_dump {
        let dir = std::env::temp_dir();
        std::fs::write(dir.join("pgsync-rich-source.sql"), &src_dump)?;
        std::fs::write(dir.join("pgsync-rich-destination.sql"), &dst_dump)?;
    }
    assert!(
        src_dump == dst_dump,
        "schema dumps differ at {}",
        first_difference(&src_dump, &dst_dump)
    );
    let (a, b) = (
        checksums(&src.client().await?, None).await?,
        checksums(&dst.client().await?, None).await?,
    );
    assert_eq!(a.len(), b.len());
    for (table, sum) in &a {
        assert_eq!(Some(sum), b.get(table), "rows of {table}");
    }
    let rows: u64 = a.values().map(|(n, _)| u64::try_from(*n).unwrap()).sum();
    assert_eq!(report.copy.rows, rows);

    // Sequences continue where the source is.
    let next = |c: tokio_postgres::Client| async move {
        let r = c
            .query_one(
                "SELECT nextval('app.standalone_seq'), nextval('app.customers_id_seq')",
                &[],
            )
            .await?;
        anyhow::Ok((r.get::<_, i64>(0), r.get::<_, i64>(1)))
    };
    assert_eq!(
        next(src.client().await?).await?,
        next(dst.client().await?).await?
    );

    let mut saw_done = false;
    let mut copied = 0;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Progress::Copied { rows, .. } => copied += rows,
            Progress::TableDone { .. } => saw_done = true,
            _ => {}
        }
    }
    assert!(saw_done);
    assert_eq!(
        copied, rows,
        "progress increments add up to the rows copied"
    );
    Ok(())
}
