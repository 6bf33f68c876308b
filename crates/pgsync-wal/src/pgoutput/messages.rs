//! The pgoutput messages of protocol versions 1 to 4, one struct per message body.
//!
//! Field names follow PostgreSQL's "Logical Replication Message Formats". Bodies own their
//! few strings (names are short and rare) and hold row data as [`Tuple`]s, which are
//! slices of the received payload: decoding copies no column value.
//!
//! `xid` fields typed `Option<u32>` are the ones pgoutput sends only inside a stream block
//! (Stream Start .. Stream Stop, protocol 2 and later); there they name the (sub)transaction
//! that made the change.

use std::fmt;

use bytes::Bytes;
use pgsync_names::QualifiedName;

use super::relation::Relation;
use super::time::PgTimestamp;
use super::tuple::Tuple;
use crate::Lsn;

/// One decoded pgoutput message (the payload of one XLogData frame).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `B`: a transaction starts.
    Begin(Begin),
    /// `C`: the transaction committed.
    Commit(Commit),
    /// `O`: the transaction was replayed from another node (sent right after Begin).
    Origin(Origin),
    /// `R`: the layout of a table, sent before its first change and after every change to it.
    Relation(RelationMessage),
    /// `Y`: the name of a non-built-in type used by a column.
    Type(TypeMessage),
    /// `I`: a row was inserted.
    Insert(Insert),
    /// `U`: a row was updated.
    Update(Update),
    /// `D`: a row was deleted.
    Delete(Delete),
    /// `T`: tables were truncated.
    Truncate(Truncate),
    /// `M`: `pg_logical_emit_message` output.
    LogicalMessage(LogicalMessage),
    /// `S`: a block of an in-progress (streamed) transaction starts.
    StreamStart(StreamStart),
    /// `E`: the current stream block ends.
    StreamStop,
    /// `c`: a streamed transaction committed.
    StreamCommit(StreamCommit),
    /// `A`: a streamed transaction, or one of its subtransactions, aborted.
    StreamAbort(StreamAbort),
    /// `b`: a two-phase transaction starts.
    BeginPrepare(BeginPrepare),
    /// `P`: the two-phase transaction was prepared.
    Prepare(Prepare),
    /// `K`: a prepared transaction was committed.
    CommitPrepared(CommitPrepared),
    /// `r`: a prepared transaction was rolled back.
    RollbackPrepared(RollbackPrepared),
    /// `p`: a streamed two-phase transaction was prepared.
    StreamPrepare(Prepare),
}

impl Message {
    /// Which message this is.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Begin(_) => MessageKind::Begin,
            Message::Commit(_) => MessageKind::Commit,
            Message::Origin(_) => MessageKind::Origin,
            Message::Relation(_) => MessageKind::Relation,
            Message::Type(_) => MessageKind::Type,
            Message::Insert(_) => MessageKind::Insert,
            Message::Update(_) => MessageKind::Update,
            Message::Delete(_) => MessageKind::Delete,
            Message::Truncate(_) => MessageKind::Truncate,
            Message::LogicalMessage(_) => MessageKind::LogicalMessage,
            Message::StreamStart(_) => MessageKind::StreamStart,
            Message::StreamStop => MessageKind::StreamStop,
            Message::StreamCommit(_) => MessageKind::StreamCommit,
            Message::StreamAbort(_) => MessageKind::StreamAbort,
            Message::BeginPrepare(_) => MessageKind::BeginPrepare,
            Message::Prepare(_) => MessageKind::Prepare,
            Message::CommitPrepared(_) => MessageKind::CommitPrepared,
            Message::RollbackPrepared(_) => MessageKind::RollbackPrepared,
            Message::StreamPrepare(_) => MessageKind::StreamPrepare,
        }
    }

    /// The (sub)transaction id carried by a message sent inside a stream block.
    pub fn stream_xid(&self) -> Option<u32> {
        match self {
            Message::Relation(m) => m.xid,
            Message::Type(m) => m.xid,
            Message::Insert(m) => m.xid,
            Message::Update(m) => m.xid,
            Message::Delete(m) => m.xid,
            Message::Truncate(m) => m.xid,
            Message::LogicalMessage(m) => m.xid,
            _ => None,
        }
    }
}

/// The message types, by their one-byte tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// `B`
    Begin,
    /// `C`
    Commit,
    /// `O`
    Origin,
    /// `R`
    Relation,
    /// `Y`
    Type,
    /// `I`
    Insert,
    /// `U`
    Update,
    /// `D`
    Delete,
    /// `T`
    Truncate,
    /// `M`
    LogicalMessage,
    /// `S`
    StreamStart,
    /// `E`
    StreamStop,
    /// `c`
    StreamCommit,
    /// `A`
    StreamAbort,
    /// `b`
    BeginPrepare,
    /// `P`
    Prepare,
    /// `K`
    CommitPrepared,
    /// `r`
    RollbackPrepared,
    /// `p`
    StreamPrepare,
}

impl MessageKind {
    /// The kind with this tag byte.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            b'B' => Self::Begin,
            b'C' => Self::Commit,
            b'O' => Self::Origin,
            b'R' => Self::Relation,
            b'Y' => Self::Type,
            b'I' => Self::Insert,
            b'U' => Self::Update,
            b'D' => Self::Delete,
            b'T' => Self::Truncate,
            b'M' => Self::LogicalMessage,
            b'S' => Self::StreamStart,
            b'E' => Self::StreamStop,
            b'c' => Self::StreamCommit,
            b'A' => Self::StreamAbort,
            b'b' => Self::BeginPrepare,
            b'P' => Self::Prepare,
            b'K' => Self::CommitPrepared,
            b'r' => Self::RollbackPrepared,
            b'p' => Self::StreamPrepare,
            _ => return None,
        })
    }

    /// The tag byte.
    pub fn tag(self) -> u8 {
        match self {
            Self::Begin => b'B',
            Self::Commit => b'C',
            Self::Origin => b'O',
            Self::Relation => b'R',
            Self::Type => b'Y',
            Self::Insert => b'I',
            Self::Update => b'U',
            Self::Delete => b'D',
            Self::Truncate => b'T',
            Self::LogicalMessage => b'M',
            Self::StreamStart => b'S',
            Self::StreamStop => b'E',
            Self::StreamCommit => b'c',
            Self::StreamAbort => b'A',
            Self::BeginPrepare => b'b',
            Self::Prepare => b'P',
            Self::CommitPrepared => b'K',
            Self::RollbackPrepared => b'r',
            Self::StreamPrepare => b'p',
        }
    }

    /// PostgreSQL's name for the message, e.g. `STREAM COMMIT`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Origin => "ORIGIN",
            Self::Relation => "RELATION",
            Self::Type => "TYPE",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Truncate => "TRUNCATE",
            Self::LogicalMessage => "MESSAGE",
            Self::StreamStart => "STREAM START",
            Self::StreamStop => "STREAM STOP",
            Self::StreamCommit => "STREAM COMMIT",
            Self::StreamAbort => "STREAM ABORT",
            Self::BeginPrepare => "BEGIN PREPARE",
            Self::Prepare => "PREPARE",
            Self::CommitPrepared => "COMMIT PREPARED",
            Self::RollbackPrepared => "ROLLBACK PREPARED",
            Self::StreamPrepare => "STREAM PREPARE",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `B`: start of a (non-streamed) transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the commit record (the transaction's final LSN).
    pub final_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
}

/// `C`: commit of a (non-streamed) transaction. The flags byte is always 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction (just past the commit record).
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
}

/// `O`: the replication origin the transaction came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server (`0/0` in streamed transactions).
    pub lsn: Lsn,
    /// The origin's name.
    pub name: String,
}

/// `R`: a table's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationMessage {
    /// Set inside a stream block.
    pub xid: Option<u32>,
    /// The table.
    pub relation: Relation,
}

/// `Y`: a type's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    /// Set inside a stream block.
    pub xid: Option<u32>,
    /// The type's OID.
    pub oid: u32,
    /// Schema and name (an empty schema on the wire means `pg_catalog`).
    pub name: QualifiedName,
}

/// `I`: an inserted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Set inside a stream block.
    pub xid: Option<u32>,
    /// The table's OID (described by an earlier Relation message).
    pub relation: u32,
    /// The new row.
    pub new: Tuple,
}

/// The old row sent with an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns only (the others are null).
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The row data, whichever kind.
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `U`: an updated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Set inside a stream block.
    pub xid: Option<u32>,
    /// The table's OID.
    pub relation: u32,
    /// Sent when the key changed (`K`) or with `REPLICA IDENTITY FULL` (`O`).
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOAST values are sent as [`ColumnValue::Unchanged`].
    ///
    /// [`ColumnValue::Unchanged`]: super::ColumnValue::Unchanged
    pub new: Tuple,
}

/// `D`: a deleted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Set inside a stream block.
    pub xid: Option<u32>,
    /// The table's OID.
    pub relation: u32,
    /// The key (`K`) or the whole old row (`O`).
    pub old: OldTuple,
}

/// `TRUNCATE` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TruncateOptions {
    /// `CASCADE` (bit 1).
    pub cascade: bool,
    /// `RESTART IDENTITY` (bit 2).
    pub restart_identity: bool,
}

impl TruncateOptions {
    pub(crate) fn from_bits(bits: u8) -> Self {
        Self {
            cascade: bits & 1 != 0,
            restart_identity: bits & 2 != 0,
        }
    }

    pub(crate) fn bits(self) -> u8 {
        u8::from(self.cascade) | (u8::from(self.restart_identity) << 1)
    }
}

/// `T`: truncated tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Set inside a stream block.
    pub xid: Option<u32>,
    /// `CASCADE` / `RESTART IDENTITY`.
    pub options: TruncateOptions,
    /// The tables' OIDs.
    pub relations: Vec<u32>,
}

/// `M`: a message written with `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Set inside a stream block.
    pub xid: Option<u32>,
    /// Transactional messages arrive at their position among the changes of their
    /// transaction; the others arrive as soon as they are decoded, outside any transaction.
    pub transactional: bool,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given by the writer (e.g. `pgsync.ddl`).
    pub prefix: String,
    /// The content, as written.
    pub content: Bytes,
}

/// `S`: start of a block of a streamed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The top-level transaction id.
    pub xid: u32,
    /// Whether this is the transaction's first block.
    pub first_segment: bool,
}

/// `c`: commit of a streamed transaction. The flags byte is always 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    /// The top-level transaction id.
    pub xid: u32,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
}

/// The abort position sent with Stream Abort by protocol 4 when `streaming = parallel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortInfo {
    /// The LSN of the abort record.
    pub lsn: Lsn,
    /// Abort time.
    pub time: PgTimestamp,
}

/// `A`: abort of a streamed transaction (`subxid == xid`) or of one subtransaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level transaction id.
    pub xid: u32,
    /// The aborted subtransaction, or `xid` itself.
    pub subxid: u32,
    /// Only with protocol 4 and `streaming = parallel`.
    pub abort: Option<AbortInfo>,
}

/// `b`: start of a two-phase transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier given to `PREPARE TRANSACTION`.
    pub gid: String,
}

/// `P` / `p`: the (streamed) two-phase transaction was prepared. The flags byte is always 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier.
    pub gid: String,
}

/// `K`: `COMMIT PREPARED`. The flags byte is always 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// The LSN of the commit-prepared record.
    pub commit_lsn: Lsn,
    /// The end LSN of the commit-prepared transaction.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier.
    pub gid: String,
}

/// `r`: `ROLLBACK PREPARED`. The flags byte is always 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the rollback-prepared transaction.
    pub rollback_end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Rollback time.
    pub rollback_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier.
    pub gid: String,
}
