//! The runner's figures and the pause flag, on the destination next to `pgsync.tasks`,
//! so that `pgsync status` (another process) can show them and `pgsync pause` can reach
//! the runner without any channel but the database both already use.
//!
//! | table                 | key              | written by          | read by          |
//! |-----------------------|------------------|---------------------|------------------|
//! | `pgsync.task_stats`   | task, direction  | the runner, every 2 s | `status`       |
//! | `pgsync.task_control` | task             | `pause` / `resume`  | the runner, every 1 s |
//!
//! Lag in seconds is computed when read (`now() − last_commit_time`), so it keeps growing
//! while a task is paused or its runner is gone. Both tables have a `task` column, which
//! is how `release` finds and clears them.

use std::sync::atomic::Ordering::Relaxed;

use tokio_postgres::Client;

use super::metrics::{Metrics, direction_str};

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS pgsync.task_stats (
    task                 text        NOT NULL,
    direction            text        NOT NULL,
    state                text        NOT NULL,
    last_commit_time     timestamptz,
    applied_at           timestamptz,
    lag_bytes            bigint,
    retained_bytes       bigint,
    applied_transactions bigint      NOT NULL DEFAULT 0,
    applied_changes      bigint      NOT NULL DEFAULT 0,
    changes_per_second   float8      NOT NULL DEFAULT 0,
    bytes_per_second     float8      NOT NULL DEFAULT 0,
    heartbeats           bigint      NOT NULL DEFAULT 0,
    retries              bigint      NOT NULL DEFAULT 0,
    last_error           text,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, direction)
);
CREATE TABLE IF NOT EXISTS pgsync.task_control (
    task       text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);";

/// Creates the tables when schema `pgsync` exists; false when it does not (the task was
/// never started here, or was released).
pub(crate) async fn ensure(c: &Client) -> Result<bool, tokio_postgres::Error> {
    let exists: bool = c
        .query_one("SELECT to_regclass('pgsync.tasks') IS NOT NULL", &[])
        .await?
        .get(0);
    if exists {
        c.batch_execute(CREATE).await?;
    }
    Ok(exists)
}

/// Stores every active direction's figures (only while the task has a row in
/// `pgsync.tasks`, so that a released task is not brought back).
pub(crate) async fn write(c: &Client, m: &Metrics) -> Result<(), tokio_postgres::Error> {
    for d in m.active() {
        let micros = |v: i64| (v > 0).then_some(v);
        let (cps, bps) = d.rates();
        c.execute(
            "INSERT INTO pgsync.task_stats AS s (task, direction, state, last_commit_time, applied_at,
                 lag_bytes, retained_bytes, applied_transactions, applied_changes, changes_per_second,
                 bytes_per_second, heartbeats, retries, last_error, updated_at)
             SELECT $1, $2, $3,
                    'epoch'::timestamptz + $4::bigint * interval '1 microsecond',
                    'epoch'::timestamptz + $5::bigint * interval '1 microsecond',
                    $6, $7, $8, $9, $10, $11, $12, $13, $14, now()
             WHERE EXISTS (SELECT 1 FROM pgsync.tasks WHERE task = $1)
             ON CONFLICT (task, direction) DO UPDATE SET
                 state = EXCLUDED.state,
                 last_commit_time = coalesce(EXCLUDED.last_commit_time, s.last_commit_time),
                 applied_at = coalesce(EXCLUDED.applied_at, s.applied_at),
                 lag_bytes = EXCLUDED.lag_bytes, retained_bytes = EXCLUDED.retained_bytes,
                 applied_transactions = EXCLUDED.applied_transactions,
                 applied_changes = EXCLUDED.applied_changes,
                 changes_per_second = EXCLUDED.changes_per_second,
                 bytes_per_second = EXCLUDED.bytes_per_second,
                 heartbeats = EXCLUDED.heartbeats, retries = EXCLUDED.retries,
                 last_error = EXCLUDED.last_error, updated_at = now()",
            &[
                &m.task(),
                &direction_str(d.direction()),
                &d.state().as_str(),
                &micros(d.last_commit_micros.load(Relaxed)),
                &micros(d.last_apply_micros.load(Relaxed)),
                &d.lag_bytes(),
                &d.retained_bytes(),
                &(d.applied_txns.load(Relaxed) as i64),
                &(d.applied_changes.load(Relaxed) as i64),
                &cps,
                &bps,
                &(d.heartbeats.load(Relaxed) as i64),
                &(d.retries.load(Relaxed) as i64),
                &d.last_error(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Whether `pgsync pause` holds the task.
pub(crate) async fn paused(c: &Client, task: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(c.query_opt(
        "SELECT paused FROM pgsync.task_control WHERE task = $1",
        &[&task],
    )
    .await?
    .is_some_and(|r| r.get(0)))
}

/// Sets or clears the pause flag; false when the task was never started on `c`.
pub async fn set_paused(
    c: &Client,
    task: &str,
    paused: bool,
) -> Result<bool, tokio_postgres::Error> {
    let started: bool = c
        .query_one(
            "SELECT to_regclass('pgsync.tasks') IS NOT NULL
                AND EXISTS (SELECT 1 FROM pgsync.tasks WHERE task = $1)",
            &[&task],
        )
        .await?
        .get(0);
    if !started {
        return Ok(false);
    }
    c.batch_execute(CREATE).await?;
    c.execute(
        "INSERT INTO pgsync.task_control (task, paused) VALUES ($1, $2)
         ON CONFLICT (task) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now()",
        &[&task, &paused],
    )
    .await?;
    Ok(true)
}

/// One direction's stored figures, as `status` shows them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoredStats {
    /// What the runner was doing when it last wrote.
    pub state: String,
    /// Seconds since the newest applied source commit, as of now.
    pub lag_seconds: Option<f64>,
    /// Source WAL not yet confirmed, as last probed by the runner.
    pub lag_bytes: Option<i64>,
    /// Row changes applied per second, recently.
    pub changes_per_second: f64,
    /// Bytes of changes applied per second, recently.
    pub bytes_per_second: f64,
    /// Source transactions applied by this runner.
    pub applied_transactions: i64,
    /// Row changes applied by this runner.
    pub applied_changes: i64,
    /// Transient errors retried by this runner.
    pub retries: i64,
    /// The last error retried (or failed on).
    pub last_error: Option<String>,
    /// Seconds since the runner last wrote these figures.
    pub age_seconds: f64,
}

/// The stored figures of `task` in `direction`, if any.
pub(crate) async fn read(
    c: &Client,
    task: &str,
    direction: &str,
) -> Result<Option<StoredStats>, tokio_postgres::Error> {
    let exists: bool = c
        .query_one("SELECT to_regclass('pgsync.task_stats') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = c
        .query_opt(
            "SELECT state, extract(epoch FROM now() - last_commit_time)::float8, lag_bytes,
                    changes_per_second, bytes_per_second, applied_transactions, applied_changes,
                    retries, last_error, extract(epoch FROM now() - updated_at)::float8
             FROM pgsync.task_stats WHERE task = $1 AND direction = $2",
            &[&task, &direction],
        )
        .await?;
    Ok(row.map(|r| StoredStats {
        state: r.get(0),
        lag_seconds: r.get::<_, Option<f64>>(1).map(|s| s.max(0.0)),
        lag_bytes: r.get(2),
        changes_per_second: r.get(3),
        bytes_per_second: r.get(4),
        applied_transactions: r.get(5),
        applied_changes: r.get(6),
        retries: r.get(7),
        last_error: r.get(8),
        age_seconds: r.get(9),
    }))
}
