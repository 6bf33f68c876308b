//! [`Message`] -> payload, byte for byte as pgoutput writes it. Used by tests and fuzzing
//! (round trips), by the benches (realistic input), and as the spill-file format of the
//! transaction assembler.
//!
//! Whatever the decoder accepts, the encoder writes back; what the wire cannot express
//! (a NUL inside a name, more than 65535 columns, a value over 2 GiB) is refused.

use bytes::{BufMut, Bytes, BytesMut};

use super::messages::{Message, OldTuple, Prepare};
use super::relation::Relation;
use super::tuple::Tuple;

/// A message the wire format cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A name contains a NUL byte (names are NUL-terminated on the wire).
    #[error("{field} contains a NUL byte")]
    Nul {
        /// The string field.
        field: &'static str,
    },
    /// A count or length does not fit its wire field.
    #[error("{field} is too large for the protocol")]
    TooLarge {
        /// The field.
        field: &'static str,
    },
}

/// Encodes `msg` and returns the payload.
pub fn encode_to_bytes(msg: &Message) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode(msg, &mut out)?;
    Ok(out.freeze())
}

/// Appends the payload of `msg` to `out` (on error, `out` may hold a partial message).
pub fn encode(msg: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u8(msg.kind().tag());
    let xid = |out: &mut BytesMut, xid: Option<u32>| {
        if let Some(x) = xid {
            out.put_u32(x);
        }
    };
    match msg {
        Message::Begin(m) => {
            out.put_u64(m.final_lsn.0);
            out.put_i64(m.commit_time.0);
            out.put_u32(m.xid);
        }
        Message::Commit(m) => {
            out.put_u8(0);
            out.put_u64(m.commit_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.commit_time.0);
        }
        Message::Origin(m) => {
            out.put_u64(m.lsn.0);
            string(out, "origin name", &m.name)?;
        }
        Message::Relation(m) => {
            xid(out, m.xid);
            relation(out, &m.relation)?;
        }
        Message::Type(m) => {
            xid(out, m.xid);
            out.put_u32(m.oid);
            schema(out, "type schema", &m.name.schema)?;
            string(out, "type name", &m.name.name)?;
        }
        Message::Insert(m) => {
            xid(out, m.xid);
            out.put_u32(m.relation);
            out.put_u8(b'N');
            tuple(out, &m.new);
        }
        Message::Update(m) => {
            xid(out, m.xid);
            out.put_u32(m.relation);
            if let Some(old) = &m.old {
                old_tuple(out, old);
            }
            out.put_u8(b'N');
            tuple(out, &m.new);
        }
        Message::Delete(m) => {
            xid(out, m.xid);
            out.put_u32(m.relation);
            old_tuple(out, &m.old);
        }
        Message::Truncate(m) => {
            xid(out, m.xid);
            out.put_i32(len_i32("truncate relation count", m.relations.len())?);
            out.put_u8(m.options.bits());
            for oid in &m.relations {
                out.put_u32(*oid);
            }
        }
        Message::LogicalMessage(m) => {
            xid(out, m.xid);
            out.put_u8(u8::from(m.transactional));
            out.put_u64(m.lsn.0);
            string(out, "message prefix", &m.prefix)?;
            out.put_i32(len_i32("message content", m.content.len())?);
            out.put_slice(&m.content);
        }
        Message::StreamStart(m) => {
            out.put_u32(m.xid);
            out.put_u8(u8::from(m.first_segment));
        }
        Message::StreamStop => {}
        Message::StreamCommit(m) => {
            out.put_u32(m.xid);
            out.put_u8(0);
            out.put_u64(m.commit_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.commit_time.0);
        }
        Message::StreamAbort(m) => {
            out.put_u32(m.xid);
            out.put_u32(m.subxid);
            if let Some(a) = &m.abort {
                out.put_u64(a.lsn.0);
                out.put_i64(a.time.0);
            }
        }
        Message::BeginPrepare(m) => {
            out.put_u64(m.prepare_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.prepare_time.0);
            out.put_u32(m.xid);
            string(out, "gid", &m.gid)?;
        }
        Message::Prepare(m) | Message::StreamPrepare(m) => prepare(out, m)?,
        Message::CommitPrepared(m) => {
            out.put_u8(0);
            out.put_u64(m.commit_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.commit_time.0);
            out.put_u32(m.xid);
            string(out, "gid", &m.gid)?;
        }
        Message::RollbackPrepared(m) => {
            out.put_u8(0);
            out.put_u64(m.prepare_end_lsn.0);
            out.put_u64(m.rollback_end_lsn.0);
            out.put_i64(m.prepare_time.0);
            out.put_i64(m.rollback_time.0);
            out.put_u32(m.xid);
            string(out, "gid", &m.gid)?;
        }
    }
    Ok(())
}

/// Appends a Relation message (outside a stream block) for `rel`.
pub(crate) fn encode_relation(rel: &Relation, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u8(b'R');
    relation(out, rel)
}

fn len_i32(field: &'static str, len: usize) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::TooLarge { field })
}

fn string(out: &mut BytesMut, field: &'static str, s: &str) -> Result<(), EncodeError> {
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::Nul { field });
    }
    out.put_slice(s.as_bytes());
    out.put_u8(0);
    Ok(())
}

/// `pg_catalog` is sent as the empty string, as PostgreSQL does.
fn schema(out: &mut BytesMut, field: &'static str, s: &str) -> Result<(), EncodeError> {
    string(out, field, if s == "pg_catalog" { "" } else { s })
}

fn relation(out: &mut BytesMut, rel: &Relation) -> Result<(), EncodeError> {
    out.put_u32(rel.oid);
    schema(out, "relation schema", &rel.name.schema)?;
    string(out, "relation name", &rel.name.name)?;
    out.put_u8(rel.replica_identity.to_byte());
    let count = u16::try_from(rel.columns.len()).map_err(|_| EncodeError::TooLarge {
        field: "relation column count",
    })?;
    out.put_u16(count);
    for c in &rel.columns {
        out.put_u8(u8::from(c.is_key));
        string(out, "column name", &c.name)?;
        out.put_u32(c.type_oid);
        out.put_i32(c.type_modifier);
    }
    Ok(())
}

fn tuple(out: &mut BytesMut, t: &Tuple) {
    // A Tuple always has at most 65535 columns (its count is a u16).
    out.put_u16(u16::try_from(t.len()).unwrap_or(u16::MAX));
    out.put_slice(t.raw());
}

fn old_tuple(out: &mut BytesMut, old: &OldTuple) {
    let (marker, t) = match old {
        OldTuple::Key(t) => (b'K', t),
        OldTuple::Full(t) => (b'O', t),
    };
    out.put_u8(marker);
    tuple(out, t);
}

fn prepare(out: &mut BytesMut, m: &Prepare) -> Result<(), EncodeError> {
    out.put_u8(0);
    out.put_u64(m.prepare_lsn.0);
    out.put_u64(m.end_lsn.0);
    out.put_i64(m.prepare_time.0);
    out.put_u32(m.xid);
    string(out, "gid", &m.gid)
}
