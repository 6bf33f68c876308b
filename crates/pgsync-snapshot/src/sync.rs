//! The full sync of one task: schema, rows and post-data, all as of one snapshot.
//!
//! ```text
//! caller: CREATE_REPLICATION_SLOT .. (EXPORT_SNAPSHOT) -> snapshot name, consistent LSN
//!         FullSync::new(..).start(snapshot)  ------------------------------+
//!             N source sessions import the snapshot                        |
//!             -> handle.snapshot_imported() resolves: release the exporter |
//!             catalog read (session 0) -> plan                             |
//!             pre-data (1 txn) -> copy (N workers) -> post-data            |
//!         handle.finish() -> SyncReport  <---------------------------------+
//! ```
//! The caller must keep the exporting session (or replication connection) open until
//! [`SyncHandle::snapshot_imported`] has resolved; after that, nothing needs it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use pgsync_names::{Mapping, QualifiedName, Selection};
use pgsync_wal::Lsn;
use tokio::sync::{mpsc::UnboundedSender, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::apply::{self, BuildSettings, PRE_DATA};
use crate::catalog::Catalog;
use crate::copy::{self, CopyContext, CopyReport, chunk, state};
use crate::ddl::{ExistingTables, Plan};
use crate::endpoint::{Endpoint, import_snapshot, server_major, setup_writer};
use crate::error::{Result, Side, SnapshotError};
use crate::progress::{Phase, Progress, Reporter};
use crate::throttle::{Limits, Throttle};

/// How a full sync runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Task name: keys the copy state on the destination.
    pub task: String,
    /// Which tables (and views) to sync.
    pub selection: Selection,
    /// Destination names.
    pub mapping: Mapping,
    /// What to do with selected tables that exist on the destination.
    pub existing: ExistingTables,
    /// Copy workers (source + destination session each). Default 4.
    pub workers: usize,
    /// Tables above this heap size are split into ctid ranges of about this size.
    /// Default 32 MiB; 0 never splits.
    pub chunk_bytes: u64,
    /// Shared throttle (the incremental applier may share it). Default: unlimited.
    pub throttle: Arc<Throttle>,
    /// The LSN the snapshot corresponds to (the slot's consistent point), recorded per
    /// table in `pgsync.copy_state`.
    pub snapshot_lsn: Option<Lsn>,
    /// When set, copy worker `i` writes under replication origin `<prefix>_<i>` (created
    /// if missing), so that a reverse task recognises copied rows as pgsync's.
    pub origin_prefix: Option<String>,
    /// `maintenance_work_mem` of index-building sessions. Default `256MB`.
    pub maintenance_work_mem: String,
    /// Progress events.
    pub progress: Option<UnboundedSender<Progress>>,
}

impl SyncOptions {
    /// Defaults for a task: everything in `public`, identity mapping, 4 workers.
    pub fn new(task: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            selection: Selection::default(),
            mapping: Mapping::identity(),
            existing: ExistingTables::Error,
            workers: 4,
            chunk_bytes: 32 << 20,
            throttle: Arc::new(Throttle::new(Limits::unlimited())),
            snapshot_lsn: None,
            origin_prefix: None,
            maintenance_work_mem: "256MB".into(),
            progress: None,
        }
    }
}

/// What a full sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// The copy.
    pub copy: CopyReport,
    /// Pre-data steps run (0 when a resumed run found them done).
    pub pre_data_steps: usize,
    /// Post-data steps run.
    pub post_data_steps: usize,
    /// Objects left out, with the reason.
    pub skipped: Vec<String>,
    /// Time per phase: catalog, pre-data, data, post-data.
    pub timings: [Duration; 4],
}

/// A full sync ready to start.
#[derive(Debug)]
pub struct FullSync {
    source: Endpoint,
    destination: Endpoint,
    options: SyncOptions,
}

/// Whether the snapshot has been imported by every session that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Import {
    Pending,
    Done,
    Failed,
}

/// A running full sync.
#[derive(Debug)]
pub struct SyncHandle {
    imported: watch::Receiver<Import>,
    join: JoinHandle<Result<SyncReport>>,
}

impl SyncHandle {
    /// Resolves once every session has imported the snapshot: the exporting session
    /// may then be closed or start streaming. Fails when the sync stopped before that
    /// (the cause comes from [`finish`](Self::finish)). Cancel-safe.
    pub async fn snapshot_imported(&mut self) -> Result<()> {
        let state = self
            .imported
            .wait_for(|s| *s != Import::Pending)
            .await
            .map(|s| *s)
            .unwrap_or(Import::Failed);
        match state {
            Import::Done => Ok(()),
            _ => Err(SnapshotError::Aborted(
                "the sync stopped before every worker imported the snapshot; finish() returns \
                 the cause"
                    .into(),
            )),
        }
    }

    /// Waits for the end of the sync.
    pub async fn finish(self) -> Result<SyncReport> {
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(SnapshotError::Aborted(e.to_string())),
        }
    }
}

impl FullSync {
    /// A full sync from `source` to `destination`.
    pub fn new(source: Endpoint, destination: Endpoint, options: SyncOptions) -> Self {
        Self {
            source,
            destination,
            options,
        }
    }

    /// Starts the sync on the current runtime, reading as of `snapshot` (a name from
    /// `pg_export_snapshot()` or `CREATE_REPLICATION_SLOT .. EXPORT_SNAPSHOT`).
    pub fn start(self, snapshot: impl Into<String>) -> SyncHandle {
        let (tx, rx) = watch::channel(Import::Pending);
        let snapshot = snapshot.into();
        let join = tokio::spawn(async move {
            let result = self.run(&snapshot, &tx).await;
            tx.send_if_modified(|s| {
                let pending = *s == Import::Pending;
                if pending {
                    *s = Import::Failed;
                }
                pending
            });
            result
        });
        SyncHandle { imported: rx, join }
    }

    /// Runs the sync to the end in the current task.
    pub async fn run_to_end(self, snapshot: &str) -> Result<SyncReport> {
        let (tx, _rx) = watch::channel(Import::Pending);
        self.run(snapshot, &tx).await
    }

    async fn run(&self, snapshot: &str, imported: &watch::Sender<Import>) -> Result<SyncReport> {
        let o = &self.options;
        if o.workers == 0 {
            return Err(SnapshotError::InvalidOptions(
                "workers must be at least 1".into(),
            ));
        }
        let reporter = Reporter::new(o.progress.clone());
        let mut report = SyncReport::default();
        let t0 = Instant::now();
        reporter.send(Progress::Phase(Phase::Catalog));

        // Every source session imports the snapshot before anything else happens.
        let sources = try_join_all((0..o.workers).map(|_| async {
            let c = self.source.connect(Side::Source, "copy").await?;
            import_snapshot(&c, snapshot).await?;
            Ok::<_, SnapshotError>(c)
        }))
        .await?;
        imported.send_replace(Import::Done);
        reporter.send(Progress::SnapshotImported);

        let cat = Catalog::read(&sources[0], &o.selection).await?;
        let block_size = block_size(&sources[0]).await?;
        let admin = self
            .destination
            .connect(Side::Destination, "schema")
            .await?;
        setup_writer(&admin, None).await?;
        let dest_major = server_major(&admin, Side::Destination).await?;
        state::ensure(&admin).await?;
        let done = state::CopyState::load(&admin, &o.task).await?;
        let resumed = done.steps.contains(PRE_DATA);
        let existing: HashSet<QualifiedName> = if resumed {
            done.steps
                .iter()
                .filter_map(|s| s.strip_prefix("kept "))
                .filter_map(|s| QualifiedName::parse(s).ok())
                .collect()
        } else {
            existing_tables(
                &admin,
                &Plan::destination_tables(&cat, &o.selection, &o.mapping),
            )
            .await?
        };
        let plan = Plan::build(&cat, &o.selection, &o.mapping, o.existing, &existing)?;
        report.skipped = plan.skipped.clone();
        report.timings[0] = t0.elapsed();

        let t1 = Instant::now();
        if !resumed {
            reporter.send(Progress::Phase(Phase::PreData));
            let kept: Vec<String> = plan
                .tables
                .iter()
                .filter(|t| t.existed)
                .map(|t| format!("kept {}", t.dest))
                .collect();
            report.pre_data_steps = apply::pre_data(
                &admin,
                &o.task,
                &plan.pre_data,
                o.existing,
                &kept,
                &reporter,
            )
            .await?;
        }
        report.timings[1] = t1.elapsed();

        let t2 = Instant::now();
        reporter.send(Progress::Phase(Phase::Data));
        let mut jobs = Vec::new();
        // A partition tree is copied as of one snapshot: one incomplete partition after a
        // restart sends the whole tree back to the copy.
        let recopy: HashSet<&QualifiedName> = plan
            .tables
            .iter()
            .filter(|t| !done.table_complete(&t.source))
            .filter_map(|t| t.tree.as_ref())
            .collect();
        for (i, t) in plan.tables.iter().enumerate() {
            let tree_again = t.tree.as_ref().is_some_and(|r| recopy.contains(r));
            if done.table_complete(&t.source) && !tree_again {
                report.copy.tables_skipped += 1;
                reporter.send(Progress::TableSkipped {
                    table: t.source.clone(),
                });
                continue;
            }
            if done.table_partial(&t.source) || (tree_again && done.table_complete(&t.source)) {
                restart_table(&admin, &o.task, t).await?;
            }
            let table_jobs = chunk::jobs_for(i, t, o.chunk_bytes, block_size);
            reporter.send(Progress::TableQueued {
                table: t.source.clone(),
                chunks: u32::try_from(table_jobs.len()).unwrap_or(u32::MAX),
                estimated_rows: t.estimated_rows.max(0.0) as u64,
                estimated_bytes: u64::try_from(t.bytes).unwrap_or(0),
            });
            jobs.extend(table_jobs);
        }
        let workers = self.destination_workers(sources).await?;
        let cx = Arc::new(CopyContext {
            task: o.task.clone(),
            tables: plan.tables.clone(),
            binary: cat.server_major == dest_major,
            snapshot_lsn: o.snapshot_lsn.map(|l| l.to_string()),
            throttle: Arc::clone(&o.throttle),
            reporter: reporter.clone(),
        });
        let skipped = report.copy.tables_skipped;
        report.copy = copy::run(cx, jobs, workers).await?;
        report.copy.tables_skipped = skipped;
        report.timings[2] = t2.elapsed();

        let t3 = Instant::now();
        reporter.send(Progress::Phase(Phase::PostData));
        let settings = BuildSettings {
            connections: o.workers,
            maintenance_work_mem: o.maintenance_work_mem.clone(),
        };
        let post = &plan.post_data;
        let d = &done.steps;
        let dest = &self.destination;
        report.post_data_steps +=
            apply::parallel(dest, &o.task, &post.indexes, d, &settings, &reporter).await?;
        report.post_data_steps +=
            apply::sequential(&admin, &o.task, &post.attach, d, &reporter).await?;
        report.post_data_steps +=
            apply::parallel(dest, &o.task, &post.foreign_keys, d, &settings, &reporter).await?;
        report.post_data_steps +=
            apply::sequential(&admin, &o.task, &post.last, d, &reporter).await?;
        report.timings[3] = t3.elapsed();
        reporter.send(Progress::Phase(Phase::Done));
        Ok(report)
    }

    /// Pairs each source session with a new destination writer session.
    async fn destination_workers(&self, sources: Vec<Client>) -> Result<Vec<(Client, Client)>> {
        let o = &self.options;
        let dests = try_join_all((0..sources.len()).map(|i| async move {
            let c = self.destination.connect(Side::Destination, "copy").await?;
            let origin = o.origin_prefix.as_ref().map(|p| format!("{p}_{i}"));
            setup_writer(&c, origin.as_deref()).await?;
            Ok::<_, SnapshotError>(c)
        }))
        .await?;
        Ok(sources.into_iter().zip(dests).collect())
    }
}

async fn block_size(client: &Client) -> Result<u64> {
    let row = client
        .query_one("SELECT pg_catalog.current_setting('block_size')::int", &[])
        .await
        .map_err(SnapshotError::db(Side::Source, "reading block_size"))?;
    Ok(u64::try_from(row.get::<_, i32>(0)).unwrap_or(8192))
}

/// Which of these destination tables exist.
async fn existing_tables(
    client: &Client,
    names: &[QualifiedName],
) -> Result<HashSet<QualifiedName>> {
    let text: Vec<String> = names.iter().map(ToString::to_string).collect();
    let rows = client
        .query(
            "SELECT n FROM pg_catalog.unnest($1::text[]) n WHERE pg_catalog.to_regclass(n) IS NOT NULL",
            &[&text],
        )
        .await
        .map_err(SnapshotError::db(Side::Destination, "checking which tables exist"))?;
    let found: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(names
        .iter()
        .filter(|n| found.contains(&n.to_string()))
        .cloned()
        .collect())
}

/// A table with only some chunks from an earlier run: empty it and forget them, in one
/// transaction (a kept table is never emptied: its rows are merged again).
async fn restart_table(client: &Client, task: &str, t: &crate::ddl::TablePlan) -> Result<()> {
    let err = |what: &str| SnapshotError::db(Side::Destination, format!("{what} {}", t.dest));
    client
        .batch_execute("BEGIN")
        .await
        .map_err(err("restarting the copy of"))?;
    if !t.existed {
        client
            .batch_execute(&format!("TRUNCATE ONLY {}", t.dest))
            .await
            .map_err(err("truncating the partial copy of"))?;
    }
    state::forget_table(client, task, &t.source).await?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(err("restarting the copy of"))
}
