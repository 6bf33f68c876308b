//! Reading ahead while a group is applied.
//!
//! Applying a group is a wait on the writer: its statements run there while pgsync has
//! nothing to do. Decoding what the source sent meanwhile (pgoutput messages into
//! transactions) is pgsync's largest share of the work on small transactions, so it is
//! done during that wait: the writer executes group N while pgsync assembles group N+1.
//!
//! ```text
//!  select! (biased)
//!    1. the group's apply future        -> done: the queue becomes the next group
//!    2. stream.recv() (room left)       -> assemble, queue what completes
//! ```
//! What is queued is handed on in the order it arrived, errors included (a malformed
//! message, the stream ending): they surface after everything received before them, as
//! without read-ahead. The queue is bounded like a group (transactions and bytes), so a
//! backlog never holds more than two groups in memory. Nothing queued has been confirmed
//! to the source: at a stop it is dropped and sent again by the slot.

use std::collections::VecDeque;
use std::time::Duration;

use pgsync_wal::txn::{Assembled, Assembler};
use pgsync_wal::{Lsn, WalError, XLogData};

use super::stream::{MAX_GROUP_BYTES, MAX_GROUP_TXNS};
use crate::error::TaskError;

/// One thing the stream delivered, assembled.
pub(super) struct Pending {
    pub(super) assembled: Assembled,
    /// The WAL position of the message that completed it.
    pub(super) wal_start: Lsn,
    /// Streamed transactions open right after it was assembled.
    pub(super) open_streams: usize,
    /// A transaction the source sent [`BEHIND`] or more after its commit: the stream is
    /// working through a backlog.
    pub(super) behind: bool,
}

/// How long after its commit a transaction must have been sent to count as backlog.
const BEHIND: Duration = Duration::from_millis(200);

/// Assembled items waiting for the next group.
#[derive(Default)]
pub(super) struct Ahead {
    queue: VecDeque<Pending>,
    txns: usize,
    bytes: usize,
    /// Where the stream or the assembler failed, after everything queued; nothing after
    /// it was read.
    failed: Option<TaskError>,
}

impl Ahead {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.failed.is_none()
    }

    /// Whether reading on is allowed: no failure queued, and less than a group's worth
    /// of transactions and bytes waiting.
    pub(super) fn has_room(&self) -> bool {
        self.failed.is_none() && self.txns < MAX_GROUP_TXNS && self.bytes < MAX_GROUP_BYTES
    }

    /// The oldest item; the failure once every item before it was taken.
    pub(super) fn pop(&mut self) -> Option<Result<Pending, TaskError>> {
        let Some(p) = self.queue.pop_front() else {
            return self.failed.take().map(Err);
        };
        if let Assembled::Transaction(t) = &p.assembled {
            self.txns -= 1;
            self.bytes -= t.memory_bytes();
        }
        Some(Ok(p))
    }

    /// Feeds what `stream.recv()` returned through the assembler.
    pub(super) fn received(
        &mut self,
        assembler: &mut Assembler,
        msg: Result<Option<XLogData>, WalError>,
    ) {
        match msg {
            Ok(Some(data)) => self.assemble(assembler, &data),
            Ok(None) => self.fail(TaskError::StreamEnded),
            Err(e) => self.fail(e.into()),
        }
    }

    fn assemble(&mut self, assembler: &mut Assembler, data: &XLogData) {
        match assembler.push_payload(&data.data) {
            Ok(Some(assembled)) => {
                let mut behind = false;
                if let Assembled::Transaction(t) = &assembled {
                    self.txns += 1;
                    self.bytes += t.memory_bytes();
                    // Both times are the source's clock.
                    behind = data
                        .server_time
                        .duration_since(t.commit_time.to_system_time())
                        .is_ok_and(|d| d >= BEHIND);
                }
                self.queue.push_back(Pending {
                    assembled,
                    wal_start: data.wal_start,
                    open_streams: assembler.open_streams(),
                    behind,
                });
            }
            Ok(None) => {}
            Err(e) => self.fail(e.into()),
        }
    }

    fn fail(&mut self, e: TaskError) {
        self.failed.get_or_insert(e);
    }
}
