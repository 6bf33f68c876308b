//! Why a sequence of pgoutput messages could not be assembled into transactions.

use std::io;

use pgsync_names::QualifiedName;

use crate::pgoutput::{DecodeError, EncodeError, MessageKind};

/// A stream that does not assemble into transactions, or a spill file that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxnError {
    /// The payload itself is malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message arrived where the protocol does not allow it (e.g. an Insert outside a
    /// transaction, a Commit inside a stream block).
    #[error("{message} arrived {state}")]
    Unexpected {
        /// The message.
        message: MessageKind,
        /// Where the stream was.
        state: &'static str,
    },
    /// A change names a relation no Relation message has described.
    #[error("a change refers to relation OID {oid}, which no Relation message described")]
    UnknownRelation {
        /// The relation's OID.
        oid: u32,
    },
    /// A tuple does not have one column per published column of its relation.
    #[error("a tuple of {relation} has {found} columns, its Relation message lists {expected}")]
    ColumnCount {
        /// The table.
        relation: QualifiedName,
        /// Columns in the Relation message.
        expected: usize,
        /// Columns in the tuple.
        found: usize,
    },
    /// A stream block continues, or a Stream Commit/Prepare ends, a streamed transaction
    /// whose first block was never seen.
    #[error("streamed transaction {xid} was never started (no first Stream Start seen)")]
    UnknownStream {
        /// The top-level transaction id.
        xid: u32,
    },
    /// A change inside a stream block carries no xid.
    #[error("{message} inside a stream block carries no xid")]
    MissingXid {
        /// The message.
        message: MessageKind,
    },
    /// Writing or reading a spill file failed.
    #[error("spill file {action} failed: {source}")]
    Spill {
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A spill file does not read back as it was written.
    #[error("spill file is corrupt: {0}")]
    SpillCorrupt(&'static str),
    /// A change could not be written to a spill file.
    #[error("cannot spill a change: {0}")]
    Encode(#[from] EncodeError),
}

impl TxnError {
    /// Whether starting the stream again (after [`Assembler::reset`]) may succeed: true for
    /// spill-file I/O (e.g. a full disk), false for a stream that is malformed as sent.
    ///
    /// [`Assembler::reset`]: super::Assembler::reset
    pub fn is_retryable(&self) -> bool {
        matches!(self, TxnError::Spill { .. })
    }

    pub(crate) fn spill(action: &'static str) -> impl FnOnce(io::Error) -> TxnError {
        move |source| TxnError::Spill { action, source }
    }
}
