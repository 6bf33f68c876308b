//! The copy equals the snapshot while the source keeps changing, and an interrupted copy
//! resumes with nothing lost and nothing duplicated.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{checksums, endpoint, export_snapshot, pair, wait_until};
use pgsync_snapshot::{CopyState, FullSync, Limits, Progress, SyncOptions, Throttle};
use pgsync_testkit::PgbenchLoad;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_under_concurrent_pgbench_writes_equals_the_snapshot() -> anyhow::Result<()> {
    let (src, dst) = pair().await?;
    src.pgbench().init(3).await?;
    let load = src.pgbench().spawn(
        &PgbenchLoad::tpcb_like()
            .clients(2)
            .duration(Duration::from_secs(20)),
    )?;
    let watch = src.client().await?;
    wait_until(Duration::from_secs(30), || async {
        let n: i64 = watch
            .query_one("SELECT count(*) FROM pgbench_history", &[])
            .await?
            .get(0);
        Ok(n > 100)
    })
    .await?;

    let exported = export_snapshot(&src).await?;
    let at_snapshot = checksums(&watch, Some(&exported.name)).await?;
    let mut options = SyncOptions::new("under-load");
    options.workers = 3;
    options.chunk_bytes = 4 << 20; // accounts (~40 MB) in ctid ranges
    let report = FullSync::new(endpoint(&src), endpoint(&dst), options)
        .start(&exported.name)
        .finish()
        .await?;
    assert!(report.copy.jobs > 4, "accounts was split: {report:?}");
    let copied = checksums(&dst.client().await?, None).await?;
    assert_eq!(copied, at_snapshot);

    // The source did move on meanwhile, so equality above is not a coincidence.
    load.finish().await?;
    let now = checksums(&watch, None).await?;
    assert_ne!(now["pgbench_history"], at_snapshot["pgbench_history"]);
    Ok(())
}

const TABLES: &str = "
CREATE TABLE t1 (id integer PRIMARY KEY, v text NOT NULL);
CREATE TABLE t2 (id integer PRIMARY KEY, v text NOT NULL);
CREATE TABLE t3 (id integer PRIMARY KEY, v text NOT NULL);
CREATE TABLE t4 (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO t1 SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
INSERT INTO t2 SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
INSERT INTO t3 SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
INSERT INTO t4 SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
";

const MORE_ROWS: &str = "
INSERT INTO t1 SELECT g, 'new' FROM generate_series(100001, 100100) g;
INSERT INTO t2 SELECT g, 'new' FROM generate_series(100001, 100100) g;
INSERT INTO t3 SELECT g, 'new' FROM generate_series(100001, 100100) g;
INSERT INTO t4 SELECT g, 'new' FROM generate_series(100001, 100100) g;
UPDATE t1 SET v = 'changed' WHERE id <= 10; UPDATE t4 SET v = 'changed' WHERE id <= 10;
";

fn options(progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>) -> SyncOptions {
    let mut o = SyncOptions::new("resumable");
    o.workers = 2;
    o.chunk_bytes = 1 << 20;
    // Slow enough that the destination can be crashed in the middle.
    o.throttle = Arc::new(Throttle::new(Limits {
        rows_per_sec: Some(100_000.0),
        bytes_per_sec: None,
    }));
    o.progress = progress;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_interrupted_by_a_destination_crash_resumes_without_loss_or_duplicates()
-> anyhow::Result<()> {
    let (src, mut dst) = pair().await?;
    let admin = src.client().await?;
    admin.batch_execute(TABLES).await?;

    // Run 1: crash the destination once the first table is complete.
    let first = export_snapshot(&src).await?;
    let at_first = checksums(&admin, Some(&first.name)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle =
        FullSync::new(endpoint(&src), endpoint(&dst), options(Some(tx))).start(&first.name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await? {
            Some(Progress::TableDone { .. }) => break,
            Some(_) => {}
            None => anyhow::bail!("the copy ended before any table was complete"),
        }
    }
    // Commits are asynchronous on the destination: wait until that table's commit is on
    // disk, so that the crash cannot take it away.
    let probe = dst.client().await?;
    let written: String = probe
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    wait_until(Duration::from_secs(10), || async {
        let flushed: bool = probe
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&written],
            )
            .await?
            .get(0);
        Ok(flushed)
    })
    .await?;
    dst.crash().await?;
    let err = handle
        .finish()
        .await
        .expect_err("the destination went away");
    assert!(
        err.is_retryable(),
        "a lost destination is worth a retry: {err}"
    );
    drop(first);
    dst.start().await?;

    let state = CopyState::load(&dst.client().await?, "resumable").await?;
    let tables: Vec<pgsync_names::QualifiedName> = ["t1", "t2", "t3", "t4"]
        .iter()
        .map(|t| pgsync_names::QualifiedName::new("public", *t))
        .collect();
    let complete: Vec<bool> = tables.iter().map(|t| state.table_complete(t)).collect();
    assert!(complete.iter().any(|c| *c), "{state:?}");
    assert!(complete.iter().any(|c| !*c), "{state:?}");

    // The source moves on; run 2 starts from a new snapshot.
    admin.batch_execute(MORE_ROWS).await?;
    let second = export_snapshot(&src).await?;
    let at_second = checksums(&admin, Some(&second.name)).await?;
    let report = FullSync::new(endpoint(&src), endpoint(&dst), options(None))
        .start(&second.name)
        .finish()
        .await?;
    let kept = complete.iter().filter(|c| **c).count();
    assert_eq!(report.copy.tables_skipped, kept);
    assert_eq!(
        report.pre_data_steps, 0,
        "the schema committed in run 1 is not created again"
    );

    // Complete tables hold run 1's snapshot, the others run 2's; primary keys were built
    // after the data, so a duplicate would have failed the sync.
    let got = checksums(&dst.client().await?, None).await?;
    let mut expected = BTreeMap::new();
    for (t, done) in tables.iter().zip(&complete) {
        let source = if *done { &at_first } else { &at_second };
        expected.insert(t.name.clone(), source[&t.name].clone());
    }
    let got: BTreeMap<String, (i64, String)> = got.into_iter().collect();
    assert_eq!(got, expected);
    let pk: i64 = dst
        .client()
        .await?
        .query_one("SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND conrelid::regclass::text ~ '^t[1-4]$'", &[])
        .await?
        .get(0);
    assert_eq!(pk, 4);
    // A sync that finds everything done does nothing.
    let third = export_snapshot(&src).await?;
    let again = FullSync::new(endpoint(&src), endpoint(&dst), options(None))
        .start(&third.name)
        .finish()
        .await?;
    assert_eq!(
        (
            again.copy.rows,
            again.copy.tables_skipped,
            again.post_data_steps
        ),
        (0, 4, 0)
    );
    Ok(())
}
