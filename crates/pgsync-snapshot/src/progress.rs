//! Progress events for the CLI's progress bars.
//!
//! Events go through an unbounded channel the caller provides; workers send row and byte
//! increments at most every [`REPORT_EVERY`] per worker, so the channel's growth is bounded
//! by time, not by rows. A dropped receiver is fine: sending is best effort.

use std::time::Duration;

use pgsync_names::QualifiedName;
use tokio::sync::mpsc::UnboundedSender;

/// How often a worker reports increments.
pub(crate) const REPORT_EVERY: Duration = Duration::from_millis(200);

/// A phase of the full sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the source catalog inside the snapshot.
    Catalog,
    /// Creating schemas, types, tables, functions, views.
    PreData,
    /// Copying rows.
    Data,
    /// Indexes, constraints, triggers, comments, sequence values.
    PostData,
    /// All done.
    Done,
}

/// Something the CLI can show.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// A phase begins.
    Phase(Phase),
    /// Every copy session has imported the snapshot: the exporting session may end.
    SnapshotImported,
    /// A table is queued for copy.
    TableQueued {
        /// Source name.
        table: QualifiedName,
        /// Number of ctid chunks.
        chunks: u32,
        /// Estimated rows (`reltuples`).
        estimated_rows: u64,
        /// Heap bytes on the source.
        estimated_bytes: u64,
    },
    /// A table was complete from an earlier run and is not copied again.
    TableSkipped {
        /// Source name.
        table: QualifiedName,
    },
    /// Rows and bytes moved since the last event for this table (by one worker).
    Copied {
        /// Source name.
        table: QualifiedName,
        /// Rows.
        rows: u64,
        /// Bytes of COPY data.
        bytes: u64,
    },
    /// A chunk committed on the destination.
    ChunkDone {
        /// Source name.
        table: QualifiedName,
        /// Chunk number (0-based).
        chunk: u32,
        /// Rows in the chunk.
        rows: u64,
    },
    /// All chunks of a table committed.
    TableDone {
        /// Source name.
        table: QualifiedName,
        /// Rows copied in this run.
        rows: u64,
    },
    /// A DDL step finished.
    StepDone {
        /// What it did.
        what: String,
    },
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reporter(Option<UnboundedSender<Progress>>);

impl Reporter {
    pub(crate) fn new(tx: Option<UnboundedSender<Progress>>) -> Self {
        Self(tx)
    }

    pub(crate) fn send(&self, event: Progress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}
