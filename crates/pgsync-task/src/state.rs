//! Task state on the destination, in schema `pgsync`, and the runner lock.
//!
//! One row per (task, direction) records the phase the task has reached. The phase moves
//! forward only, and each move is committed together with the work that completes it (the
//! move to `incremental` commits with the origin's starting position), so a crash at any
//! point resumes from a consistent state:
//!
//! ```text
//! created -> schema -> full -> incremental
//!    |         |        |          `- streaming from pg_replication_origin_progress
//!    |         |        `- copy restarts per pgsync.copy_state (incomplete tables recopied)
//!    |         `- schema sync is idempotent for objects it already made
//!    `- slot and publication are (re)created
//! ```
//!
//! Two runners must never drive one task: the runner holds a session-level advisory lock
//! on the destination for as long as it runs. A second runner fails fast, or (as a hot
//! standby) waits for the lock.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::Client;

use crate::names::{Direction, STATE_SCHEMA};

/// How far a task has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Registered; slot and publication being made.
    Created,
    /// Creating the schema on the destination.
    Schema,
    /// Copying existing rows.
    Full,
    /// Streaming changes.
    Incremental,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Schema => "schema",
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "created" => Self::Created,
            "schema" => Self::Schema,
            "full" => Self::Full,
            "incremental" => Self::Incremental,
            other => return Err(format!("unknown task phase {other:?} in pgsync.tasks")),
        })
    }
}

/// The DDL of the state tables; idempotent.
const CREATE_STATE: &str = "
CREATE SCHEMA IF NOT EXISTS pgsync;
CREATE TABLE IF NOT EXISTS pgsync.tasks (
    task        text        NOT NULL,
    direction   text        NOT NULL,
    phase       text        NOT NULL,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, direction)
);";

/// Creates schema `pgsync` and its tables if they are missing.
pub async fn ensure_schema(client: &Client) -> Result<(), tokio_postgres::Error> {
    debug_assert_eq!(STATE_SCHEMA, "pgsync");
    client.batch_execute(CREATE_STATE).await
}

/// Whether schema `pgsync` with its task table exists.
pub async fn exists(client: &Client) -> Result<bool, StateError> {
    Ok(client
        .query_one("SELECT to_regclass('pgsync.tasks') IS NOT NULL", &[])
        .await?
        .get(0))
}

fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Reverse => "reverse",
    }
}

/// The recorded phase, or `None` for a task never started here.
pub async fn phase(
    client: &Client,
    task: &str,
    dir: Direction,
) -> Result<Option<Phase>, StateError> {
    let row = client
        .query_opt(
            "SELECT phase FROM pgsync.tasks WHERE task = $1 AND direction = $2",
            &[&task, &direction_str(dir)],
        )
        .await?;
    row.map(|r| r.get::<_, String>(0).parse().map_err(StateError::Corrupt))
        .transpose()
}

/// Records `phase` (inserting the row the first time). Call inside the transaction that
/// completes the work of the previous phase.
pub async fn set_phase(
    client: &Client,
    task: &str,
    dir: Direction,
    phase: Phase,
) -> Result<(), StateError> {
    client
        .execute(
            "INSERT INTO pgsync.tasks (task, direction, phase) VALUES ($1, $2, $3)
             ON CONFLICT (task, direction) DO UPDATE SET phase = EXCLUDED.phase, updated_at = now(), last_error = NULL",
            &[&task, &direction_str(dir), &phase.as_str()],
        )
        .await?;
    Ok(())
}

/// Records why the task stopped, for `pgsync status`.
pub async fn set_error(
    client: &Client,
    task: &str,
    dir: Direction,
    error: &str,
) -> Result<(), StateError> {
    client
        .execute(
            "UPDATE pgsync.tasks SET last_error = $3, updated_at = now() WHERE task = $1 AND direction = $2",
            &[&task, &direction_str(dir), &error],
        )
        .await?;
    Ok(())
}

/// Reading or writing task state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The server refused or the connection broke.
    #[error("task state: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A value in pgsync.tasks is not one pgsync writes.
    #[error("{0}")]
    Corrupt(String),
    /// Another runner holds the task.
    #[error(
        "task {task} is already being run by another pgsync (session pid {pid} on the destination holds its lock); \
         stop that one first, or run this one as a standby with --wait"
    )]
    Locked {
        /// The task.
        task: String,
        /// The backend pid holding the lock, 0 if unknown.
        pid: i32,
    },
}

/// The runner lock: held by a dedicated session for as long as the value lives (the
/// session ends when the client is dropped, and the server releases the lock with it).
#[derive(Debug)]
pub struct RunnerLock {
    _session: Client,
}

/// The advisory lock key of a task: a 64-bit hash of a namespaced name.
const LOCK_KEY_SQL: &str = "hashtextextended('pgsync task ' || $1, 0)";

impl RunnerLock {
    /// Whether the session holding the lock is still connected (a destination restart
    /// ends it, and the lock with it).
    pub fn is_held(&self) -> bool {
        !self._session.is_closed()
    }

    /// Takes the lock on `session` (a connection used for nothing else), or fails naming
    /// the holder.
    pub async fn try_acquire(session: Client, task: &str) -> Result<Self, StateError> {
        let got: bool = session
            .query_one(
                &format!("SELECT pg_try_advisory_lock({LOCK_KEY_SQL})"),
                &[&task],
            )
            .await?
            .get(0);
        if got {
            return Ok(Self { _session: session });
        }
        let pid = holder(&session, task).await?.unwrap_or(0);
        Err(StateError::Locked {
            task: task.to_owned(),
            pid,
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), but keeps trying for up to `patience`: the
    /// session of a runner that was just killed ends a moment after its process.
    pub async fn try_acquire_within(
        session: Client,
        task: &str,
        patience: std::time::Duration,
    ) -> Result<Self, StateError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let got: bool = session
                .query_one(
                    &format!("SELECT pg_try_advisory_lock({LOCK_KEY_SQL})"),
                    &[&task],
                )
                .await?
                .get(0);
            if got {
                return Ok(Self { _session: session });
            }
            if tokio::time::Instant::now() >= deadline {
                let pid = holder(&session, task).await?.unwrap_or(0);
                return Err(StateError::Locked {
                    task: task.to_owned(),
                    pid,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Waits for the lock (a standby runner).
    pub async fn acquire(session: Client, task: &str) -> Result<Self, StateError> {
        session
            .execute(
                &format!("SELECT pg_advisory_lock({LOCK_KEY_SQL})"),
                &[&task],
            )
            .await?;
        Ok(Self { _session: session })
    }
}

/// The pid of the session holding the task's lock, if any.
pub async fn holder(client: &Client, task: &str) -> Result<Option<i32>, tokio_postgres::Error> {
    // A bigint advisory key is stored as classid = high half, objid = low half.
    let row = client
        .query_opt(
            &format!(
                "WITH k AS (SELECT {LOCK_KEY_SQL} AS key)
                 SELECT l.pid FROM pg_locks l, k
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.classid::bigint = (k.key >> 32) & 4294967295
                   AND l.objid::bigint = k.key & 4294967295
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            &[&task],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
