//! `status`: what a task is doing, read from both servers without disturbing it — the
//! phase and last error (destination, `pgsync.tasks`), whether a runner holds the task,
//! the origin's progress, and the slot on the source (active, confirmed position,
//! retained WAL, lag in bytes).

use serde::Serialize;

use crate::error::TaskError;
use crate::names::{Direction, TaskNames};
use crate::ops::store::{self, StoredStats};
use crate::spec::TaskSpec;
use crate::state;

/// The state of one direction of a task.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionStatus {
    /// forward or reverse.
    pub direction: Direction,
    /// Phase from `pgsync.tasks`, `None` when never started.
    pub phase: Option<String>,
    /// The last error recorded, if the task stopped on one.
    pub last_error: Option<String>,
    /// The replication slot on the reading side.
    pub slot: Option<SlotStatus>,
    /// The end LSN of the last source transaction applied on the writing side.
    pub applied_lsn: Option<String>,
    /// What the runner last stored: state, lag, rates, retries, last error.
    pub runtime: Option<StoredStats>,
    /// Conflicts logged on the writing side (`pgsync.conflicts`), per kind, every kind
    /// present.
    pub conflicts: pgsync_conflict::ConflictCounters,
}

/// The slot as the reading side sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// Slot name.
    pub name: String,
    /// Whether a walsender is streaming from it.
    pub active: bool,
    /// What the consumer confirmed.
    pub confirmed_flush_lsn: Option<String>,
    /// WAL the slot keeps on the source, in bytes.
    pub retained_bytes: Option<i64>,
    /// Source WAL not yet confirmed, in bytes.
    pub lag_bytes: Option<i64>,
}

/// The whole task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// Task name.
    pub task: String,
    /// Backend pid of the runner's lock session on the destination, when one runs.
    pub runner_pid: Option<i32>,
    /// Whether `pgsync pause` holds the task.
    pub paused: bool,
    /// Why the source could not be read, when it could not (the rest is shown anyway).
    pub source_error: Option<String>,
    /// Rows copied per table by the full sync (committed chunks).
    pub copied: Vec<TableCopied>,
    /// Forward and (if two-way) reverse.
    pub directions: Vec<DirectionStatus>,
}

/// Rows the full sync copied into one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableCopied {
    /// Source table, `schema.table`.
    pub table: String,
    /// Rows in committed chunks.
    pub rows: i64,
    /// Chunks committed.
    pub chunks_done: i64,
    /// Chunks in all.
    pub chunks: i64,
}

/// Reads the status of `spec`'s task from both servers.
pub async fn read(spec: &TaskSpec) -> Result<TaskStatus, TaskError> {
    // The source may be down (that is often why one asks): the rest is still shown.
    let (a, source_error) = match spec.source.connect().await {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(format!("cannot connect to the source: {e}"))),
    };
    let b = spec
        .destination
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the destination"))?;
    let runner_pid = state::holder(&b, &spec.name)
        .await
        .map_err(TaskError::sql("reading the runner lock"))?;
    let has_state: bool = b
        .query_one("SELECT to_regclass('pgsync.tasks') IS NOT NULL", &[])
        .await
        .map_err(TaskError::sql("looking for pgsync.tasks"))?
        .get(0);
    let mut directions = Vec::new();
    let dirs: &[Direction] = if spec.sync.two_way {
        &[Direction::Forward, Direction::Reverse]
    } else {
        &[Direction::Forward]
    };
    for &dir in dirs {
        let names = TaskNames::new(&spec.name, dir);
        let (reader, writer) = match dir {
            Direction::Forward => (a.as_ref(), Some(&b)),
            Direction::Reverse => (Some(&b), a.as_ref()),
        };
        let (phase, last_error) =
            if has_state {
                let row = b
                .query_opt(
                    "SELECT phase, last_error FROM pgsync.tasks WHERE task = $1 AND direction = $2",
                    &[&spec.name, &if dir == Direction::Forward { "forward" } else { "reverse" }],
                )
                .await
                .map_err(TaskError::sql("reading pgsync.tasks"))?;
                (row.as_ref().map(|r| r.get(0)), row.and_then(|r| r.get(1)))
            } else {
                (None, None)
            };
        let slot = match reader {
            None => None,
            Some(reader) => reader
                .query_opt(
                    "SELECT active, confirmed_flush_lsn::text,
                        (pg_current_wal_lsn() - restart_lsn)::bigint,
                        (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                    &[&names.slot],
                )
                .await
                .map_err(TaskError::sql("reading the slot"))?
                .map(|r| SlotStatus {
                    name: names.slot.clone(),
                    active: r.get(0),
                    confirmed_flush_lsn: r.get(1),
                    retained_bytes: r.get(2),
                    lag_bytes: r.get(3),
                }),
        };
        let applied_lsn: Option<String> = match writer {
            None => None,
            Some(writer) => writer
            .query_opt(
                "SELECT pg_replication_origin_progress(roname, false)::text FROM pg_replication_origin WHERE roname = $1",
                &[&names.origin],
            )
            .await
            .map_err(TaskError::sql("reading the origin's progress"))?
            .and_then(|r| r.get(0)),
        };
        let conflicts = match writer {
            None => pgsync_conflict::ConflictCounters::new(),
            Some(writer) => conflict_counts(writer, &names.origin).await?,
        };
        let runtime = store::read(&b, &spec.name, direction_name(dir))
            .await
            .map_err(TaskError::sql("reading pgsync.task_stats"))?;
        directions.push(DirectionStatus {
            direction: dir,
            phase,
            last_error,
            slot,
            applied_lsn,
            runtime,
            conflicts,
        });
    }
    let paused = has_state
        && b.query_one("SELECT to_regclass('pgsync.task_control') IS NOT NULL", &[])
            .await
            .map_err(TaskError::sql("looking for pgsync.task_control"))?
            .get::<_, bool>(0)
        && store::paused(&b, &spec.name)
            .await
            .map_err(TaskError::sql("reading pgsync.task_control"))?;
    let copied = copied(&b, &spec.name).await?;
    Ok(TaskStatus {
        task: spec.name.clone(),
        runner_pid,
        paused,
        source_error,
        copied,
        directions,
    })
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Reverse => "reverse",
    }
}

/// Rows per table in the copy state of `task`.
async fn copied(b: &tokio_postgres::Client, task: &str) -> Result<Vec<TableCopied>, TaskError> {
    let exists: bool = b
        .query_one("SELECT to_regclass('pgsync.copy_state') IS NOT NULL", &[])
        .await
        .map_err(TaskError::sql("looking for pgsync.copy_state"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = b
        .query(
            "SELECT table_schema, table_name, sum(rows)::bigint, count(*), max(chunks)::bigint
             FROM pgsync.copy_state WHERE task = $1 GROUP BY 1, 2 ORDER BY 1, 2",
            &[&task],
        )
        .await
        .map_err(TaskError::sql("reading pgsync.copy_state"))?;
    Ok(rows
        .iter()
        .map(|r| TableCopied {
            table: format!("{}.{}", r.get::<_, &str>(0), r.get::<_, &str>(1)),
            rows: r.get(2),
            chunks_done: r.get(3),
            chunks: r.get(4),
        })
        .collect())
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runner = match self.runner_pid {
            Some(pid) => format!("running (lock held by destination backend {pid})"),
            None => "not running".to_owned(),
        };
        let paused = if self.paused { ", paused" } else { "" };
        writeln!(f, "task {}: {runner}{paused}", self.task)?;
        if let Some(e) = &self.source_error {
            writeln!(f, "  {e}")?;
        }
        for d in &self.directions {
            let dir = if d.direction == Direction::Forward {
                "forward"
            } else {
                "reverse"
            };
            writeln!(
                f,
                "  {dir}: phase {}",
                d.phase.as_deref().unwrap_or("not started")
            )?;
            if let Some(s) = &d.slot {
                writeln!(
                    f,
                    "    slot {} {}, confirmed {}, lag {} bytes, retains {} bytes of WAL",
                    s.name,
                    if s.active { "active" } else { "inactive" },
                    s.confirmed_flush_lsn.as_deref().unwrap_or("-"),
                    s.lag_bytes.map_or("-".into(), |b| b.to_string()),
                    s.retained_bytes.map_or("-".into(), |b| b.to_string()),
                )?;
            }
            if let Some(lsn) = &d.applied_lsn {
                writeln!(f, "    applied through {lsn}")?;
            }
            if d.conflicts.total() > 0 {
                let kinds: Vec<String> = d
                    .conflicts
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                writeln!(f, "    conflicts: {}", kinds.join(", "))?;
            }
            if let Some(r) = &d.runtime {
                writeln!(
                    f,
                    "    {}: lag {}, {:.0} changes/s ({:.0} kB/s), {} transactions applied, {} retries (as of {:.0} s ago)",
                    r.state,
                    r.lag_seconds.map_or("-".into(), |s| format!("{s:.1} s")),
                    r.changes_per_second,
                    r.bytes_per_second / 1e3,
                    r.applied_transactions,
                    r.retries,
                    r.age_seconds,
                )?;
                if let Some(e) = &r.last_error
                    && d.last_error.as_ref() != Some(e)
                {
                    writeln!(f, "    last retried error: {e}")?;
                }
            }
            if let Some(e) = &d.last_error {
                writeln!(f, "    last error: {e}")?;
            }
        }
        for t in &self.copied {
            writeln!(
                f,
                "  copied {}: {} rows ({}/{} chunks)",
                t.table, t.rows, t.chunks_done, t.chunks
            )?;
        }
        Ok(())
    }
}

/// Conflicts logged by the applier of `origin`, per kind (none before the log exists).
async fn conflict_counts(
    writer: &tokio_postgres::Client,
    origin: &str,
) -> Result<pgsync_conflict::ConflictCounters, TaskError> {
    let rows = writer
        .query(
            "SELECT kind, count(*) FROM pgsync.conflicts WHERE origin = $1 GROUP BY kind",
            &[&origin],
        )
        .await;
    let mut counts = std::collections::BTreeMap::new();
    match rows {
        Ok(rows) => {
            for r in rows {
                let kind: String = r.get(0);
                if pgsync_conflict::ConflictKind::ALL
                    .iter()
                    .any(|k| k.as_str() == kind)
                {
                    counts.insert(kind, r.get::<_, i64>(1));
                }
            }
        }
        // No conflict log yet on this side.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {}
        Err(e) => return Err(TaskError::sql("reading pgsync.conflicts")(e)),
    }
    let json = serde_json::to_value(&counts).unwrap_or_default();
    Ok(serde_json::from_value(json).unwrap_or_default())
}
