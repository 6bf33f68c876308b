//! Payload -> [`Message`]. Sans-IO: the caller hands over the payload of one XLogData frame
//! (pgoutput writes exactly one message per frame) and gets a message or a typed error.
//!
//! The only state is whether a stream block is open: between Stream Start and Stream Stop,
//! Relation, Type, Insert, Update, Delete, Truncate and Message carry an extra leading
//! xid (protocol 2 and later), and nothing else in the message says so.
//!
//! Stream Abort carries an abort LSN and time only with protocol 4 and
//! `streaming = parallel`; since the payload is exactly one message, the decoder reads them
//! when they are there (16 more bytes) instead of needing to be told the session options.

use bytes::Bytes;

use super::error::DecodeError;
use super::messages::{
    AbortInfo, Begin, BeginPrepare, Commit, CommitPrepared, Delete, Insert, LogicalMessage,
    Message, MessageKind, OldTuple, Origin, Prepare, RelationMessage, RollbackPrepared,
    StreamAbort, StreamCommit, StreamStart, Truncate, TruncateOptions, TypeMessage, Update,
};
use super::reader::Reader;
use super::relation::{Relation, RelationColumn, ReplicaIdentity};
use pgsync_names::QualifiedName;

/// Decodes the pgoutput messages of one replication stream, in order.
///
/// ```
/// use bytes::Bytes;
/// use pgsync_wal::pgoutput::{Decoder, Message};
///
/// let mut decoder = Decoder::new();
/// let payload = Bytes::from_static(b"E");
/// assert_eq!(decoder.decode(&payload).unwrap(), Message::StreamStop);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    in_stream: bool,
}

impl Decoder {
    /// A decoder outside any stream block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a stream block is open (Stream Start seen, Stream Stop not yet).
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decodes the next message of the stream. Column values and message contents in the
    /// result are slices of `payload`.
    pub fn decode(&mut self, payload: &Bytes) -> Result<Message, DecodeError> {
        let msg = decode_message(payload, self.in_stream)?;
        match msg {
            Message::StreamStart(_) => self.in_stream = true,
            Message::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(msg)
    }
}

/// Decodes one message; `in_stream` says whether it was sent inside a stream block.
pub fn decode_message(payload: &Bytes, in_stream: bool) -> Result<Message, DecodeError> {
    let &tag = payload.first().ok_or(DecodeError::Empty)?;
    let kind = MessageKind::from_tag(tag).ok_or(DecodeError::UnknownMessage(tag))?;
    let mut r = Reader::new(payload, kind);
    let xid = |r: &mut Reader<'_>| -> Result<Option<u32>, DecodeError> {
        if in_stream {
            r.u32("xid").map(Some)
        } else {
            Ok(None)
        }
    };
    let msg = match kind {
        MessageKind::Begin => Message::Begin(Begin {
            final_lsn: r.lsn("final LSN")?,
            commit_time: r.timestamp("commit time")?,
            xid: r.u32("xid")?,
        }),
        MessageKind::Commit => {
            r.zero_flags()?;
            Message::Commit(Commit {
                commit_lsn: r.lsn("commit LSN")?,
                end_lsn: r.lsn("end LSN")?,
                commit_time: r.timestamp("commit time")?,
            })
        }
        MessageKind::Origin => Message::Origin(Origin {
            lsn: r.lsn("origin LSN")?,
            name: r.string("origin name")?,
        }),
        MessageKind::Relation => {
            let xid = xid(&mut r)?;
            Message::Relation(RelationMessage {
                xid,
                relation: relation(&mut r)?,
            })
        }
        MessageKind::Type => Message::Type(TypeMessage {
            xid: xid(&mut r)?,
            oid: r.u32("type OID")?,
            name: qualified_name(&mut r, "type schema", "type name")?,
        }),
        MessageKind::Insert => {
            let xid = xid(&mut r)?;
            let relation = r.u32("relation OID")?;
            expect_marker(&mut r, kind, b'N', "'N'")?;
            Message::Insert(Insert {
                xid,
                relation,
                new: r.tuple()?,
            })
        }
        MessageKind::Update => {
            let xid = xid(&mut r)?;
            let relation = r.u32("relation OID")?;
            let (old, marker) = match r.u8("tuple marker")? {
                b'K' => (Some(OldTuple::Key(r.tuple()?)), r.u8("tuple marker")?),
                b'O' => (Some(OldTuple::Full(r.tuple()?)), r.u8("tuple marker")?),
                other => (None, other),
            };
            if marker != b'N' {
                return Err(DecodeError::UnexpectedMarker {
                    message: kind,
                    expected: if old.is_some() {
                        "'N'"
                    } else {
                        "'K', 'O' or 'N'"
                    },
                    found: marker,
                });
            }
            Message::Update(Update {
                xid,
                relation,
                old,
                new: r.tuple()?,
            })
        }
        MessageKind::Delete => {
            let xid = xid(&mut r)?;
            let relation = r.u32("relation OID")?;
            let old = match r.u8("tuple marker")? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                found => {
                    return Err(DecodeError::UnexpectedMarker {
                        message: kind,
                        expected: "'K' or 'O'",
                        found,
                    });
                }
            };
            Message::Delete(Delete { xid, relation, old })
        }
        MessageKind::Truncate => {
            let xid = xid(&mut r)?;
            let count = r.i32("relation count")?;
            let options = TruncateOptions::from_bits(r.u8("options")?);
            let n = r.check_count("relation count", i64::from(count), 4)?;
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32("relation OID")?);
            }
            Message::Truncate(Truncate {
                xid,
                options,
                relations,
            })
        }
        MessageKind::LogicalMessage => Message::LogicalMessage(LogicalMessage {
            xid: xid(&mut r)?,
            transactional: r.u8("flags")? & 1 != 0,
            lsn: r.lsn("message LSN")?,
            prefix: r.string("prefix")?,
            content: r.counted_bytes("content")?,
        }),
        MessageKind::StreamStart => Message::StreamStart(StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first segment")? == 1,
        }),
        MessageKind::StreamStop => Message::StreamStop,
        MessageKind::StreamCommit => {
            let xid = r.u32("xid")?;
            r.zero_flags()?;
            Message::StreamCommit(StreamCommit {
                xid,
                commit_lsn: r.lsn("commit LSN")?,
                end_lsn: r.lsn("end LSN")?,
                commit_time: r.timestamp("commit time")?,
            })
        }
        MessageKind::StreamAbort => {
            let xid = r.u32("xid")?;
            let subxid = r.u32("subtransaction xid")?;
            let abort = if r.remaining() == 0 {
                None
            } else {
                Some(AbortInfo {
                    lsn: r.lsn("abort LSN")?,
                    time: r.timestamp("abort time")?,
                })
            };
            Message::StreamAbort(StreamAbort { xid, subxid, abort })
        }
        MessageKind::BeginPrepare => Message::BeginPrepare(BeginPrepare {
            prepare_lsn: r.lsn("prepare LSN")?,
            end_lsn: r.lsn("end LSN")?,
            prepare_time: r.timestamp("prepare time")?,
            xid: r.u32("xid")?,
            gid: r.string("gid")?,
        }),
        MessageKind::Prepare => Message::Prepare(prepare(&mut r)?),
        MessageKind::StreamPrepare => Message::StreamPrepare(prepare(&mut r)?),
        MessageKind::CommitPrepared => {
            r.zero_flags()?;
            Message::CommitPrepared(CommitPrepared {
                commit_lsn: r.lsn("commit LSN")?,
                end_lsn: r.lsn("end LSN")?,
                commit_time: r.timestamp("commit time")?,
                xid: r.u32("xid")?,
                gid: r.string("gid")?,
            })
        }
        MessageKind::RollbackPrepared => {
            r.zero_flags()?;
            Message::RollbackPrepared(RollbackPrepared {
                prepare_end_lsn: r.lsn("prepare end LSN")?,
                rollback_end_lsn: r.lsn("rollback end LSN")?,
                prepare_time: r.timestamp("prepare time")?,
                rollback_time: r.timestamp("rollback time")?,
                xid: r.u32("xid")?,
                gid: r.string("gid")?,
            })
        }
    };
    r.finish()?;
    Ok(msg)
}

fn expect_marker(
    r: &mut Reader<'_>,
    message: MessageKind,
    want: u8,
    expected: &'static str,
) -> Result<(), DecodeError> {
    match r.u8("tuple marker")? {
        m if m == want => Ok(()),
        found => Err(DecodeError::UnexpectedMarker {
            message,
            expected,
            found,
        }),
    }
}

/// Schema (empty means `pg_catalog`) and name.
fn qualified_name(
    r: &mut Reader<'_>,
    schema_field: &'static str,
    name_field: &'static str,
) -> Result<QualifiedName, DecodeError> {
    let mut schema = r.string(schema_field)?;
    if schema.is_empty() {
        schema.push_str("pg_catalog");
    }
    Ok(QualifiedName {
        schema,
        name: r.string(name_field)?,
    })
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let oid = r.u32("relation OID")?;
    let name = qualified_name(r, "relation schema", "relation name")?;
    let found = r.u8("replica identity")?;
    let replica_identity =
        ReplicaIdentity::from_byte(found).ok_or(DecodeError::UnknownReplicaIdentity {
            message: MessageKind::Relation,
            found,
        })?;
    let count = r.u16("column count")?;
    // Each column takes at least flags (1) + an empty name (1) + type (4) + typmod (4).
    let n = r.check_count("column count", i64::from(count), 10)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.u8("column flags")?;
        columns.push(RelationColumn {
            name: r.string("column name")?,
            type_oid: r.u32("column type OID")?,
            type_modifier: r.i32("column type modifier")?,
            is_key: flags & 1 != 0,
        });
    }
    Ok(Relation {
        oid,
        name,
        replica_identity,
        columns,
    })
}

fn prepare(r: &mut Reader<'_>) -> Result<Prepare, DecodeError> {
    r.zero_flags()?;
    Ok(Prepare {
        prepare_lsn: r.lsn("prepare LSN")?,
        end_lsn: r.lsn("end LSN")?,
        prepare_time: r.timestamp("prepare time")?,
        xid: r.u32("xid")?,
        gid: r.string("gid")?,
    })
}
