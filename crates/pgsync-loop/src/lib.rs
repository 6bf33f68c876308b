//! Loop prevention: a change pgsync applied is never sent back.
//!
//! ```text
//!   A ── forward reader ──> applier on B (origin pgsync_<task>_fwd) ──┐
//!   ^                                                                │ B's WAL: the
//!   └── applier on A (origin pgsync_<task>_rev) <── reverse reader <─┘ applied rows
//!                                                    drops them here
//! ```
//!
//! **Origins** (default). Every transaction pgsync writes carries one of its replication
//! origins (the applier's, or a copy worker's `<origin>_<n>`), and the pgoutput stream
//! names it in the Origin message right after Begin. The reader drops transactions whose
//! origin is a pgsync origin. On PostgreSQL 16+ the reader also asks the server not to
//! send them at all (`origin 'none'`), which saves decoding and network — that drops
//! transactions of every origin, so it is only used when the source has no other
//! replication writing into it (the caller decides).
//!
//! **Marker** (for servers where replication origins may not be used). Every transaction
//! pgsync applies also writes a row of `pgsync.loop_marker`; the marker table is part of
//! the publication, and the reader drops transactions that contain a change to it.

use pgsync_names::QualifiedName;
use pgsync_wal::Transaction;
use pgsync_wal::txn::{Change, TxnError};
use serde::{Deserialize, Serialize};

/// Every replication origin pgsync creates starts with this.
pub const ORIGIN_PREFIX: &str = "pgsync_";

/// The marker table of marker mode.
pub const MARKER_SCHEMA: &str = "pgsync";
/// The marker table's name.
pub const MARKER_TABLE: &str = "loop_marker";

/// How loops are prevented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopPrevention {
    /// Replication origins (default).
    #[default]
    Origins,
    /// A row written to `pgsync.loop_marker` in every applied transaction.
    Marker,
}

/// Decides, per source transaction, whether it came from pgsync (and must be dropped).
#[derive(Debug, Clone)]
pub struct LoopFilter {
    mode: LoopPrevention,
    marker: QualifiedName,
}

impl LoopFilter {
    /// A filter for `mode`.
    pub fn new(mode: LoopPrevention) -> Self {
        Self {
            mode,
            marker: QualifiedName::new(MARKER_SCHEMA, MARKER_TABLE),
        }
    }

    /// The mode.
    pub fn mode(&self) -> LoopPrevention {
        self.mode
    }

    /// Whether `txn` was written by pgsync and must not be applied on the other side.
    /// In marker mode this reads the transaction's changes (spilled ones from disk).
    pub fn is_echo(&self, txn: &Transaction) -> Result<bool, TxnError> {
        if txn
            .origin
            .as_ref()
            .is_some_and(|o| is_pgsync_origin(&o.name))
        {
            return Ok(true);
        }
        if self.mode == LoopPrevention::Marker {
            for change in txn.changes() {
                if let Change::Insert { relation, .. } | Change::Update { relation, .. } = change?
                    && relation.name == self.marker
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The statement the applier runs in every transaction it writes (marker mode).
    pub fn marker_statement(&self, task: &str) -> Option<String> {
        (self.mode == LoopPrevention::Marker).then(|| {
            format!(
                "INSERT INTO {} (task, n) VALUES ({}, 1) ON CONFLICT (task) DO UPDATE SET n = {}.n + 1",
                self.marker,
                pgsync_names::sql::Literal(task),
                pgsync_names::sql::Ident(MARKER_TABLE)
            )
        })
    }
}

/// Whether `name` is one of pgsync's replication origins.
pub fn is_pgsync_origin(name: &str) -> bool {
    name.starts_with(ORIGIN_PREFIX)
}

/// The marker table (marker mode), created on both sides and added to both publications.
///
/// Both directions of a two-way pair run it on the same server at start-up (one as the
/// reader's publication member, one as the writer's table), and concurrent `CREATE ...
/// IF NOT EXISTS` can still fail on the catalog's unique index; a transaction-scoped
/// advisory lock (the statements are one implicit transaction) makes the second wait and
/// then find the table.
pub const MARKER_DDL: &str =
    "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgsync.loop_marker'));
CREATE SCHEMA IF NOT EXISTS pgsync;
CREATE TABLE IF NOT EXISTS pgsync.loop_marker (task text PRIMARY KEY, n bigint NOT NULL);";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pgsync_origins_are_echoes() {
        assert!(is_pgsync_origin("pgsync_shop_fwd"));
        assert!(is_pgsync_origin("pgsync_shop_fwd_3"));
        assert!(!is_pgsync_origin("pg_16384"));
        assert!(!is_pgsync_origin("sub_ab"));
    }

    #[test]
    fn the_marker_statement_is_an_upsert_per_task() {
        let f = LoopFilter::new(LoopPrevention::Marker);
        assert_eq!(
            f.marker_statement("shop").unwrap(),
            "INSERT INTO \"pgsync\".\"loop_marker\" (task, n) VALUES ('shop', 1) ON CONFLICT (task) DO UPDATE SET n = \"loop_marker\".n + 1"
        );
        assert!(
            LoopFilter::new(LoopPrevention::Origins)
                .marker_statement("shop")
                .is_none()
        );
    }
}
