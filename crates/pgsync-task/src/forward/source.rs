//! Where the streaming loop reads changes from: the walsender (a replication stream), or
//! the SQL decoding functions during a catch-up (catchup.rs). Both hand over the same
//! pgoutput messages in commit order; only the stream takes confirmations as it goes.

use pgsync_wal::peek::SlotPeek;
use pgsync_wal::{Lsn, ReplicationStream, WalError, XLogData};

/// A reader of the slot's changes.
pub(super) trait Source {
    /// The next message; `Ok(None)` at the end. Cancel-safe.
    async fn recv(&mut self) -> Result<Option<XLogData>, WalError>;
    /// Everything up to `lsn` is durable on the writer.
    fn confirm(&self, lsn: Lsn);
    /// The consumer has finished with every message it received (an idle slot may move).
    fn mark_done(&self);
    /// Ends the reading cleanly.
    async fn stop(self) -> Result<(), WalError>;
}

impl Source for ReplicationStream {
    async fn recv(&mut self) -> Result<Option<XLogData>, WalError> {
        ReplicationStream::recv(self).await
    }

    fn confirm(&self, lsn: Lsn) {
        ReplicationStream::confirm(self, lsn);
    }

    fn mark_done(&self) {
        ReplicationStream::mark_done(self);
    }

    async fn stop(self) -> Result<(), WalError> {
        ReplicationStream::stop(self).await
    }
}

/// The slot moves once the catch-up read is applied (`advance_slot`), not during it.
impl Source for SlotPeek {
    async fn recv(&mut self) -> Result<Option<XLogData>, WalError> {
        SlotPeek::recv(self).await
    }

    fn confirm(&self, _lsn: Lsn) {}

    fn mark_done(&self) {}

    async fn stop(self) -> Result<(), WalError> {
        Ok(())
    }
}
