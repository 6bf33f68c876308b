//! The pgoutput logical replication protocol (versions 1 to 4), sans-IO and zero-copy.
//!
//! ```text
//!   XLogData payload (Bytes) ──► Decoder::decode ──► Message
//!                                   │  (tracks Stream Start .. Stream Stop,
//!                                   │   where changes carry an extra xid)
//!   Message ──► encode ──► payload  (tests, fuzzing, benches, spill files)
//! ```
//!
//! * No I/O and no async: the replication stream feeds payloads in; this module never waits.
//! * Zero-copy: row data stays in the received [`bytes::Bytes`]; a [`Tuple`] is one slice of
//!   the payload, checked once when decoded and read lazily column by column.
//! * The wire is not trusted: every read is bounds-checked, every length and count is
//!   checked against what is left of the payload before anything is sliced or allocated,
//!   and every malformed input is a [`DecodeError`], never a panic.
//!
//! Layouts follow PostgreSQL's "Logical Replication Message Formats" and
//! `src/backend/replication/logical/proto.c`.

mod decode;
mod encode;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod messages;
mod reader;
mod relation;
mod time;
mod tuple;

#[cfg(test)]
mod tests;

pub use decode::{Decoder, decode_message};
pub(crate) use encode::encode_relation;
pub use encode::{EncodeError, encode, encode_to_bytes};
pub use error::DecodeError;
pub use messages::{
    AbortInfo, Begin, BeginPrepare, Commit, CommitPrepared, Delete, Insert, LogicalMessage,
    Message, MessageKind, OldTuple, Origin, Prepare, RelationMessage, RollbackPrepared,
    StreamAbort, StreamCommit, StreamStart, Truncate, TruncateOptions, TypeMessage, Update,
};
pub use relation::{Relation, RelationColumn, ReplicaIdentity};
pub use time::PgTimestamp;
pub use tuple::{ColumnValue, Tuple, TupleIter, Value};
