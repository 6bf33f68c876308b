//! The parallel data copy.
//!
//! ```text
//!              +-- worker 0: source session (snapshot) + destination session --+
//!  job queue --+-- worker 1: ...                                               +--> report
//!  (biggest    +-- worker N-1                                                  |
//!   first)     each job: one table or one ctid range, one destination txn ----+
//! ```
//! The source sessions are opened and have imported the snapshot before the copy
//! starts (see `sync`), so the exporting session can be released as soon as the copy
//! begins. Workers take jobs from a shared queue until it is empty; the first error stops
//! every worker (the others see the queue closed) and is returned.

pub(crate) mod chunk;
pub(crate) mod pipe;
pub mod state;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

use crate::ddl::TablePlan;
use crate::error::{Result, SnapshotError};
use crate::progress::{Progress, Reporter};
use crate::throttle::Throttle;
use chunk::Job;

/// What the copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows committed on the destination in this run.
    pub rows: u64,
    /// Bytes of COPY data moved.
    pub bytes: u64,
    /// Tables copied (all chunks) in this run.
    pub tables_copied: usize,
    /// Tables complete from an earlier run and not copied again.
    pub tables_skipped: usize,
    /// Jobs (tables or ctid ranges) run.
    pub jobs: usize,
}

/// Shared by the workers.
pub(crate) struct CopyContext {
    pub(crate) task: String,
    pub(crate) tables: Vec<TablePlan>,
    pub(crate) binary: bool,
    pub(crate) snapshot_lsn: Option<String>,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) reporter: Reporter,
}

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    /// Per table: chunks left, rows committed (to report TableDone).
    tables: Mutex<Vec<(u32, u64)>>,
}

/// Runs `jobs` on the worker sessions (one source and one destination client each).
pub(crate) async fn run(
    cx: Arc<CopyContext>,
    mut jobs: Vec<Job>,
    workers: Vec<(Client, Client)>,
) -> Result<CopyReport> {
    jobs.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.table.cmp(&b.table)));
    let mut per_table = vec![(0u32, 0u64); cx.tables.len()];
    for j in &jobs {
        per_table[j.table].0 += 1;
    }
    let tables_copied = per_table.iter().filter(|(n, _)| *n > 0).count();
    let queue = Arc::new(Queue {
        jobs: Mutex::new(jobs.into()),
        tables: Mutex::new(per_table),
    });
    let mut handles = Vec::with_capacity(workers.len());
    for (src, dst) in workers {
        let cx = Arc::clone(&cx);
        let queue = Arc::clone(&queue);
        handles.push(tokio::spawn(
            async move { worker(&cx, &queue, src, dst).await },
        ));
    }
    let mut report = CopyReport {
        tables_copied,
        ..CopyReport::default()
    };
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok((rows, bytes, jobs))) => {
                report.rows += rows;
                report.bytes += bytes;
                report.jobs += jobs;
            }
            Ok(Err(e)) => {
                // Stop the other workers after their current job.
                lock(&queue.jobs).clear();
                first_error.get_or_insert(e);
            }
            Err(e) => {
                lock(&queue.jobs).clear();
                first_error.get_or_insert(SnapshotError::Aborted(e.to_string()));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn worker(
    cx: &CopyContext,
    queue: &Queue,
    src: Client,
    dst: Client,
) -> Result<(u64, u64, usize)> {
    let (mut rows, mut bytes, mut done) = (0, 0, 0);
    loop {
        let Some(job) = lock(&queue.jobs).pop_front() else {
            break;
        };
        let table = &cx.tables[job.table];
        let jcx = pipe::JobContext {
            task: &cx.task,
            table,
            job: &job,
            binary: cx.binary && !table.existed,
            snapshot_lsn: cx.snapshot_lsn.clone(),
            throttle: &cx.throttle,
            reporter: &cx.reporter,
        };
        let result = pipe::run(&src, &dst, &jcx).await;
        let (r, b) = match result {
            Ok(v) => v,
            Err(e) => {
                lock(&queue.jobs).clear();
                let _ = dst.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        };
        rows += r;
        bytes += b;
        done += 1;
        cx.reporter.send(Progress::ChunkDone {
            table: table.source.clone(),
            chunk: job.chunk,
            rows: r,
        });
        let finished = {
            let mut t = lock(&queue.tables);
            let entry = &mut t[job.table];
            entry.0 -= 1;
            entry.1 += r;
            (entry.0 == 0).then_some(entry.1)
        };
        if let Some(total) = finished {
            cx.reporter.send(Progress::TableDone {
                table: table.source.clone(),
                rows: total,
            });
        }
    }
    Ok((rows, bytes, done))
}
