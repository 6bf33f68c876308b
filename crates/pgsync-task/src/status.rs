//! `status`: what a task is doing, read from both servers without disturbing it — the
//! phase and last error (destination, `pgsync.tasks`), whether a runner holds the task,
//! the origin's progress, and the slot on the source (active, confirmed position,
//! retained WAL, lag in bytes).

use serde::Serialize;

use crate::error::TaskError;
use crate::names::{Direction, TaskNames};
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
    /// Forward and (if two-way) reverse.
    pub directions: Vec<DirectionStatus>,
}

/// Reads the status of `spec`'s task from both servers.
pub async fn read(spec: &TaskSpec) -> Result<TaskStatus, TaskError> {
    let a = spec
        .source
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the source"))?;
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
            Direction::Forward => (&a, &b),
            Direction::Reverse => (&b, &a),
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
        let slot = reader
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
            });
        let applied_lsn: Option<String> = writer
            .query_opt(
                "SELECT pg_replication_origin_progress(roname, false)::text FROM pg_replication_origin WHERE roname = $1",
                &[&names.origin],
            )
            .await
            .map_err(TaskError::sql("reading the origin's progress"))?
            .and_then(|r| r.get(0));
        directions.push(DirectionStatus {
            direction: dir,
            phase,
            last_error,
            slot,
            applied_lsn,
        });
    }
    Ok(TaskStatus {
        task: spec.name.clone(),
        runner_pid,
        directions,
    })
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runner = match self.runner_pid {
            Some(pid) => format!("running (lock held by destination backend {pid})"),
            None => "not running".to_owned(),
        };
        writeln!(f, "task {}: {runner}", self.task)?;
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
            if let Some(e) = &d.last_error {
                writeln!(f, "    last error: {e}")?;
            }
        }
        Ok(())
    }
}
