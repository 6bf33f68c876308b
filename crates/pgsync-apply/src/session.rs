//! The destination session: set up once, so that every transaction applied on it is
//! attributed to the task's replication origin, fires no user triggers, and parses values
//! exactly as the source printed them.
//!
//! Durability without waiting for every flush: the session commits with
//! `synchronous_commit = off`, and records the local WAL position after each commit. The
//! source is told that a transaction is applied only once the destination's WAL is
//! flushed past that position ([`FlushTracker`]), so a destination crash can lose only
//! transactions the source still keeps, and the origin's progress (committed atomically
//! with the data) says where to resume.

use std::collections::VecDeque;

use pgsync_names::sql::quote_literal;
use pgsync_wal::Lsn;
use tokio_postgres::Client;

use crate::error::ApplyError;

/// Settings of the apply session. The date, interval and float formats match those the
/// replication connection asks the source for, so text values round-trip exactly.
const SESSION_SETUP: &str = "SET session_replication_role = replica;
SET synchronous_commit = off;
SET datestyle = 'ISO, MDY';
SET intervalstyle = 'postgres';
SET extra_float_digits = 3;
SET lock_timeout = 0;
SET statement_timeout = 0;
SET idle_in_transaction_session_timeout = 0;";

/// Prepares `client` for applying under `origin` (creating the origin if needed) and
/// returns the end LSN of the last applied source transaction: from the progress row that
/// commits with every applied group (`pgsync.apply_progress`), or, before the first, from
/// the origin (which the task sets where the stream starts).
pub(crate) async fn setup(client: &Client, origin: &str) -> Result<Lsn, ApplyError> {
    client
        .batch_execute(SESSION_SETUP)
        .await
        .map_err(ApplyError::pg("setting up the apply session"))?;
    ensure_origin(client, origin).await?;
    client
        .batch_execute(&format!(
            "SELECT pg_replication_origin_session_setup({})",
            quote_literal(origin)
        ))
        .await
        .map_err(ApplyError::pg(format!(
            "attaching to replication origin {origin}"
        )))?;
    client
        .batch_execute(PROGRESS_TABLE)
        .await
        .map_err(ApplyError::pg("creating pgsync.apply_progress"))?;
    // The row is written in every applied transaction, so it is exactly what committed;
    // before the first one, the origin's progress (set where the stream starts) applies.
    let row = client
        .query_opt(
            "SELECT end_lsn::text FROM pgsync.apply_progress WHERE origin = $1",
            &[&origin],
        )
        .await
        .map_err(ApplyError::pg("reading pgsync.apply_progress"))?;
    match row.and_then(|r| r.get::<_, String>(0).parse().ok()) {
        Some(lsn) => Ok(lsn),
        None => origin_progress(client, origin).await,
    }
}

/// Progress per origin, committed with the applied rows.
const PROGRESS_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS pgsync;
CREATE TABLE IF NOT EXISTS pgsync.apply_progress (origin text PRIMARY KEY, end_lsn pg_lsn NOT NULL);";

/// Creates the replication origin if it does not exist.
pub async fn ensure_origin(client: &Client, origin: &str) -> Result<(), ApplyError> {
    client
        .execute(
            "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS
                 (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&origin],
        )
        .await
        .map_err(ApplyError::pg(format!(
            "creating replication origin {origin}"
        )))?;
    Ok(())
}

/// The origin's committed progress (`0/0` when nothing was applied yet).
pub async fn origin_progress(client: &Client, origin: &str) -> Result<Lsn, ApplyError> {
    let row = client
        .query_one(
            "SELECT coalesce(pg_replication_origin_progress($1, true), '0/0')::text",
            &[&origin],
        )
        .await
        .map_err(ApplyError::pg(format!(
            "reading the progress of origin {origin}"
        )))?;
    Ok(row.get::<_, String>(0).parse().unwrap_or(Lsn::INVALID))
}

/// Source positions waiting for the destination's WAL to be flushed.
#[derive(Debug, Default)]
pub(crate) struct FlushTracker {
    /// (local WAL insert position after the commit, source end LSN), in commit order.
    pending: VecDeque<(Lsn, Lsn)>,
    /// The highest source LSN known durable.
    durable: Lsn,
}

impl FlushTracker {
    pub(crate) fn committed(&mut self, local: Lsn, source_end: Lsn) {
        self.pending.push_back((local, source_end));
    }

    /// A source position that needs no local flush (nothing was written for it).
    pub(crate) fn nothing_written(&mut self, source_end: Lsn) {
        if self.pending.is_empty() {
            self.durable = self.durable.max(source_end);
        } else {
            // Ordered after the pending ones: durable once they are.
            let local = self.pending.back().map(|p| p.0).unwrap_or_default();
            self.pending.push_back((local, source_end));
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Moves everything at or below the local flush position to durable.
    pub(crate) fn flushed_to(&mut self, local_flush: Lsn) -> Lsn {
        while let Some(&(local, source)) = self.pending.front() {
            if local > local_flush {
                break;
            }
            self.durable = self.durable.max(source);
            self.pending.pop_front();
        }
        self.durable
    }

    pub(crate) fn durable(&self) -> Lsn {
        self.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_position_is_durable_only_after_the_local_flush_passes_its_commit() {
        let mut t = FlushTracker::default();
        t.committed(Lsn(100), Lsn(1000));
        t.committed(Lsn(200), Lsn(2000));
        t.nothing_written(Lsn(2500));
        assert_eq!(t.flushed_to(Lsn(99)), Lsn(0));
        assert_eq!(t.flushed_to(Lsn(150)), Lsn(1000));
        assert!(t.has_pending());
        assert_eq!(t.flushed_to(Lsn(200)), Lsn(2500));
        assert!(!t.has_pending());
        t.nothing_written(Lsn(3000));
        assert_eq!(t.durable(), Lsn(3000));
    }
}
