//! Transaction assembly: decoded pgoutput messages in, complete source transactions out,
//! with memory bounded by a budget.
//!
//! ```text
//!  payloads ─► Decoder ─► Assembler ──► Assembled::Transaction ─► applier
//!                          │  │   ├───► Assembled::CommitPrepared / RollbackPrepared
//!                          │  │   └───► Assembled::Message (non-transactional)
//!                          │  └ RelationCache (every Relation message, also mid-transaction)
//!                          └ per open transaction: ChangeBuffer = memory ⊕ spill file
//! ```
//!
//! The applier applies one source transaction as one destination transaction, so it gets
//! transactions whole, in commit order, with everything it needs up front: xid, origin
//! (for loop prevention), commit LSN, end LSN (progress), commit time (for
//! `pg_replication_origin_xact_setup` and last-write-wins), and changes that each carry the
//! relation layout they were sent with. Transactional logical messages (DDL capture) stay
//! at their exact position among the changes.
//!
//! Why whole transactions rather than a stream of begin/change/commit events: streamed
//! transactions (protocol 2 and later) interleave and may abort, so they must be held until
//! their Stream Commit anyway; and the applier may need to read a transaction twice (fast
//! pipelined path, then the careful path after a conflict). Memory stays bounded because a
//! transaction's changes move to an anonymous spill file once the open transactions
//! together pass [`AssemblerConfig::memory_budget`], whether streamed or not; reading them
//! back holds one change at a time.

mod assembler;
mod buffer;
mod cache;
mod change;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod spill;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use assembler::Assembler;
pub use cache::RelationCache;
pub use change::{Change, Changes, Transaction, TxnKind};
pub use error::TxnError;

use crate::pgoutput::{CommitPrepared, LogicalMessage, RollbackPrepared};

/// What a message completed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Assembled {
    /// A committed (or, with two-phase decoding, prepared) transaction.
    Transaction(Transaction),
    /// `COMMIT PREPARED` of a transaction delivered earlier as prepared.
    CommitPrepared(CommitPrepared),
    /// `ROLLBACK PREPARED` of a transaction delivered earlier as prepared.
    RollbackPrepared(RollbackPrepared),
    /// A non-transactional logical message, delivered as soon as it arrives.
    Message(LogicalMessage),
    /// With [`AssemblerConfig::emit_streamed`]: a change of streamed transaction `xid`
    /// as it arrives (it is kept for the transaction too). `subxid` is the
    /// (sub)transaction that made it.
    StreamedChange {
        xid: u32,
        subxid: u32,
        change: Change,
    },
    /// With [`AssemblerConfig::emit_streamed`]: streamed transaction `xid` (or, when
    /// `subxid` differs, one of its subtransactions) was rolled back on the source; the
    /// changes emitted for it are void.
    StreamAborted { xid: u32, subxid: u32 },
}

/// How much an [`Assembler`] keeps in memory, and where the rest goes.
#[derive(Debug, Clone)]
pub struct AssemblerConfig {
    /// Bytes of changes that open transactions may hold in memory together; beyond it the
    /// largest open transaction is moved to its spill file. Default 64 MiB, like
    /// PostgreSQL's `logical_decoding_work_mem`. A delivered [`Transaction`] keeps what it
    /// had in memory (at most this much) until dropped, so a bounded queue of `n`
    /// transactions to the applier holds at most `n + 1` budgets.
    pub memory_budget: usize,
    /// Directory for spill files (anonymous files, removed when closed). Default: the
    /// system's temporary directory.
    pub spill_dir: PathBuf,
    /// Also hand out each change of a streamed (in-progress) transaction as it arrives,
    /// and stream aborts ([`Assembled::StreamedChange`], [`Assembled::StreamAborted`]), so
    /// that a consumer can start applying a large transaction before its commit. The
    /// transaction is still delivered whole at its Stream Commit. Default off.
    pub emit_streamed: bool,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self {
            memory_budget: 64 << 20,
            spill_dir: std::env::temp_dir(),
            emit_streamed: false,
        }
    }
}
