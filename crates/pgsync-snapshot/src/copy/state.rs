//! Copy state on the destination, so that an interrupted sync resumes cleanly.
//!
//! ```text
//! pgsync.copy_state (task, table_schema, table_name, chunk) -> chunks, rows, bytes,
//!                                                              snapshot_lsn, done_at
//! pgsync.copy_steps (task, step)                            -> done_at
//! ```
//! A chunk's row is inserted in the destination transaction that commits the chunk's
//! rows, and a DDL step's row in the transaction that runs it, so state and data can never
//! disagree, whatever crashes.
//!
//! **Resume rule.** After a crash the exported snapshot is gone. The caller starts the
//! sync again with the same task name and a *new* snapshot. Then:
//! * pre-data that committed is not run again (step `pre-data`);
//! * a table whose chunks all committed is kept as it is; its rows are as of the old
//!   snapshot, whose LSN is in `snapshot_lsn` so the stream can skip that table's changes
//!   up to it (as PostgreSQL's tablesync does per table);
//! * a table with only some chunks committed is truncated on the destination and copied
//!   again entirely from the new snapshot (a table kept in `ignore` mode is never
//!   truncated: its rows are merged again and key clashes skipped);
//! * post-data steps that committed are not run again.
//!
//! Nothing is lost (every table is complete as of some snapshot) and nothing is
//! duplicated (a table is either kept whole or truncated before it is copied again).

use std::collections::{HashMap, HashSet};

use pgsync_names::QualifiedName;
use tokio_postgres::Client;

use crate::error::{Result, Side, SnapshotError};

fn dst(context: &str) -> impl FnOnce(tokio_postgres::Error) -> SnapshotError {
    SnapshotError::db(Side::Destination, context)
}

/// Creates the state tables if needed (serialised with an advisory lock, so that two
/// tasks starting together do not race on `CREATE .. IF NOT EXISTS`).
pub(crate) async fn ensure(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgsync state schema'));
             CREATE SCHEMA IF NOT EXISTS pgsync;
             CREATE TABLE IF NOT EXISTS pgsync.copy_state (
                 task text NOT NULL,
                 table_schema text NOT NULL,
                 table_name text NOT NULL,
                 chunk integer NOT NULL,
                 chunks integer NOT NULL,
                 rows bigint NOT NULL,
                 bytes bigint NOT NULL,
                 snapshot_lsn pg_catalog.pg_lsn,
                 done_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
                 PRIMARY KEY (task, table_schema, table_name, chunk));
             CREATE TABLE IF NOT EXISTS pgsync.copy_steps (
                 task text NOT NULL,
                 step text NOT NULL,
                 done_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
                 PRIMARY KEY (task, step));
             COMMIT;",
        )
        .await
        .map_err(dst("creating pgsync.copy_state"))
}

/// What earlier runs of a task completed.
#[derive(Debug, Clone, Default)]
pub struct CopyState {
    /// DDL steps done (keys), including `pre-data`.
    pub steps: HashSet<String>,
    /// Per source table: chunks committed and the chunk count they were planned with.
    pub chunks: HashMap<QualifiedName, (HashSet<u32>, u32)>,
}

impl CopyState {
    /// Reads the state of `task`.
    pub async fn load(client: &Client, task: &str) -> Result<Self> {
        let steps = client
            .query(
                "SELECT step FROM pgsync.copy_steps WHERE task = $1",
                &[&task],
            )
            .await
            .map_err(dst("reading pgsync.copy_steps"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut chunks: HashMap<QualifiedName, (HashSet<u32>, u32)> = HashMap::new();
        for r in client
            .query(
                "SELECT table_schema, table_name, chunk, chunks FROM pgsync.copy_state WHERE task = $1",
                &[&task],
            )
            .await
            .map_err(dst("reading pgsync.copy_state"))?
        {
            let name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            let e = chunks.entry(name).or_default();
            e.0.insert(u32::try_from(r.get::<_, i32>(2)).unwrap_or(0));
            e.1 = u32::try_from(r.get::<_, i32>(3)).unwrap_or(0);
        }
        Ok(Self { steps, chunks })
    }

    /// Whether every chunk of the table committed.
    pub fn table_complete(&self, table: &QualifiedName) -> bool {
        self.chunks
            .get(table)
            .is_some_and(|(done, n)| *n > 0 && (0..*n).all(|c| done.contains(&c)))
    }

    /// Whether some but not all chunks committed.
    pub fn table_partial(&self, table: &QualifiedName) -> bool {
        self.chunks.contains_key(table) && !self.table_complete(table)
    }
}

/// The statement that records a committed chunk (run inside the chunk's transaction).
pub(crate) const RECORD_CHUNK: &str = "INSERT INTO pgsync.copy_state
     (task, table_schema, table_name, chunk, chunks, rows, bytes, snapshot_lsn)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::pg_catalog.pg_lsn)";

/// The statement that records a DDL step.
pub(crate) const RECORD_STEP: &str =
    "INSERT INTO pgsync.copy_steps (task, step) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// Forgets a table's chunks (before it is copied again).
pub(crate) async fn forget_table(client: &Client, task: &str, table: &QualifiedName) -> Result<()> {
    client
        .execute(
            "DELETE FROM pgsync.copy_state WHERE task = $1 AND table_schema = $2 AND table_name = $3",
            &[&task, &table.schema, &table.name],
        )
        .await
        .map_err(dst("clearing pgsync.copy_state"))
        .map(drop)
}

/// Removes all state of a task (after a release, or to force a fresh copy).
pub async fn clear(client: &Client, task: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "DELETE FROM pgsync.copy_state WHERE task = {t}; DELETE FROM pgsync.copy_steps WHERE task = {t}",
            t = pgsync_names::sql::Literal(task)
        ))
        .await
        .map_err(dst("clearing the copy state"))
}
