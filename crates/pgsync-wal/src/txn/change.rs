//! What the applier consumes: [`Transaction`]s of [`Change`]s, each change holding the
//! relation layout it was sent with.
//!
//! A transaction's changes may live partly in a spill file and partly in memory; they are
//! read with [`Transaction::changes`], in order, as often as needed (e.g. once on the fast
//! path and again on the careful path after a conflict), holding at most one spilled change
//! in memory at a time.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::buffer::ChangeBuffer;
use super::error::TxnError;
use super::spill::SpillReader;
use crate::Lsn;
use crate::pgoutput::{
    self, LogicalMessage, Message, MessageKind, OldTuple, Origin, PgTimestamp, Relation,
    TruncateOptions, Tuple,
};

/// One change of a transaction, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A row was inserted.
    Insert {
        /// The table, as described when the change arrived.
        relation: Arc<Relation>,
        /// The new row.
        new: Tuple,
    },
    /// A row was updated.
    Update {
        /// The table.
        relation: Arc<Relation>,
        /// The old key (key changed) or old row (`REPLICA IDENTITY FULL`), if sent; when
        /// absent, the key is the key columns of `new`.
        old: Option<OldTuple>,
        /// The new row; [`ColumnValue::Unchanged`](crate::pgoutput::ColumnValue::Unchanged)
        /// columns must be left as they are.
        new: Tuple,
    },
    /// A row was deleted.
    Delete {
        /// The table.
        relation: Arc<Relation>,
        /// The key or the whole old row.
        old: OldTuple,
    },
    /// Tables were truncated.
    Truncate {
        /// The tables.
        relations: Vec<Arc<Relation>>,
        /// `CASCADE` / `RESTART IDENTITY`.
        options: TruncateOptions,
    },
    /// A transactional logical message (`pg_logical_emit_message(true, ...)`), at its
    /// position among the changes (DDL capture uses these).
    Message {
        /// The LSN of the message.
        lsn: Lsn,
        /// The prefix.
        prefix: String,
        /// The content.
        content: Bytes,
    },
}

/// Fixed cost counted per change on top of its data (enum, `Arc`, vector slot).
const CHANGE_OVERHEAD: usize = 64;

impl Change {
    /// Approximate memory held by the change, for the memory budget.
    pub(crate) fn mem_size(&self) -> usize {
        CHANGE_OVERHEAD
            + match self {
                Change::Insert { new, .. } => new.raw().len(),
                Change::Update { old, new, .. } => {
                    new.raw().len() + old.as_ref().map_or(0, |o| o.tuple().raw().len())
                }
                Change::Delete { old, .. } => old.tuple().raw().len(),
                Change::Truncate { relations, .. } => relations.len() * 8,
                Change::Message {
                    prefix, content, ..
                } => prefix.len() + content.len(),
            }
    }

    /// The message kind the change arrived as.
    pub(crate) fn kind(&self) -> MessageKind {
        match self {
            Change::Insert { .. } => MessageKind::Insert,
            Change::Update { .. } => MessageKind::Update,
            Change::Delete { .. } => MessageKind::Delete,
            Change::Truncate { .. } => MessageKind::Truncate,
            Change::Message { .. } => MessageKind::LogicalMessage,
        }
    }

    /// The relations whose layout this change needs.
    pub(crate) fn relations(&self) -> &[Arc<Relation>] {
        match self {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => std::slice::from_ref(relation),
            Change::Truncate { relations, .. } => relations,
            Change::Message { .. } => &[],
        }
    }

    /// Appends the change as a pgoutput message (no xid), the spill-file format.
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), TxnError> {
        let msg = match self {
            Change::Insert { relation, new } => Message::Insert(pgoutput::Insert {
                xid: None,
                relation: relation.oid,
                new: new.clone(),
            }),
            Change::Update { relation, old, new } => Message::Update(pgoutput::Update {
                xid: None,
                relation: relation.oid,
                old: old.clone(),
                new: new.clone(),
            }),
            Change::Delete { relation, old } => Message::Delete(pgoutput::Delete {
                xid: None,
                relation: relation.oid,
                old: old.clone(),
            }),
            Change::Truncate { relations, options } => Message::Truncate(pgoutput::Truncate {
                xid: None,
                options: *options,
                relations: relations.iter().map(|r| r.oid).collect(),
            }),
            Change::Message {
                lsn,
                prefix,
                content,
            } => Message::LogicalMessage(LogicalMessage {
                xid: None,
                transactional: true,
                lsn: *lsn,
                prefix: prefix.clone(),
                content: content.clone(),
            }),
        };
        let start = out.len();
        out.put_u32(0);
        pgoutput::encode(&msg, out)?;
        let len = u32::try_from(out.len() - start - 4)
            .map_err(|_| TxnError::SpillCorrupt("change larger than 4 GiB"))?;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// Whether a transaction committed or was prepared (two-phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnKind {
    /// Committed: apply and commit.
    Committed,
    /// Prepared with `PREPARE TRANSACTION gid`; a later
    /// [`Assembled::CommitPrepared`](super::Assembled::CommitPrepared) or
    /// [`Assembled::RollbackPrepared`](super::Assembled::RollbackPrepared) settles it.
    Prepared {
        /// The global transaction identifier.
        gid: String,
    },
}

/// A complete source transaction, in commit order.
pub struct Transaction {
    /// The source transaction id.
    pub xid: u32,
    /// Committed or prepared.
    pub kind: TxnKind,
    /// The replication origin it was replayed from on the source, if any (loop prevention
    /// drops transactions from pgsync's own origins).
    pub origin: Option<Origin>,
    /// The LSN of the commit (or prepare) record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction: what the applier records as progress.
    pub end_lsn: Lsn,
    /// Commit (or prepare) time on the source.
    pub commit_time: PgTimestamp,
    /// Whether it arrived in stream blocks before its commit (protocol 2 and later).
    pub streamed: bool,
    pub(crate) changes: ChangeBuffer,
}

impl Transaction {
    /// The changes, in order; may be called again to re-read them.
    pub fn changes(&self) -> Changes<'_> {
        Changes {
            spilled: self.changes.reader(),
            memory: self.changes.memory().iter(),
            failed: false,
        }
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the transaction has no changes.
    pub fn is_empty(&self) -> bool {
        self.changes.len() == 0
    }

    /// Bytes of changes written to the spill file (0 when all fit in memory).
    pub fn spilled_bytes(&self) -> u64 {
        self.changes.spilled_bytes()
    }

    /// Approximate bytes of changes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.changes.mem_bytes()
    }
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("xid", &self.xid)
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .field("commit_lsn", &self.commit_lsn)
            .field("end_lsn", &self.end_lsn)
            .field("commit_time", &self.commit_time)
            .field("streamed", &self.streamed)
            .field("changes", &self.len())
            .field("spilled_bytes", &self.spilled_bytes())
            .finish()
    }
}

/// Iterator over a transaction's changes: first those in the spill file, then those in
/// memory. Stops after the first error.
pub struct Changes<'a> {
    spilled: Option<SpillReader<'a>>,
    memory: std::slice::Iter<'a, Change>,
    failed: bool,
}

impl Iterator for Changes<'_> {
    type Item = Result<Change, TxnError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(reader) = &mut self.spilled {
            match reader.next_change() {
                Ok(Some(c)) => return Some(Ok(c)),
                Ok(None) => self.spilled = None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.memory.next().cloned().map(Ok)
    }
}

impl fmt::Debug for Changes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("reading_spill_file", &self.spilled.is_some())
            .field("in_memory_left", &self.memory.len())
            .finish()
    }
}

/// A message sorted into a change (with its relations resolved) or anything else.
pub(crate) enum Classified {
    /// A change, with the stream xid it carried.
    Change { change: Change, xid: Option<u32> },
    /// Not a change: transaction control, a Relation, a non-transactional message, ...
    Other(Message),
}

/// Turns Insert/Update/Delete/Truncate and transactional messages into [`Change`]s, taking
/// each relation from `lookup` and checking tuple widths against it.
pub(crate) fn classify(
    msg: Message,
    lookup: impl Fn(u32) -> Option<Arc<Relation>>,
) -> Result<Classified, TxnError> {
    let rel = |oid: u32| lookup(oid).ok_or(TxnError::UnknownRelation { oid });
    let (change, xid) = match msg {
        Message::Insert(m) => {
            let relation = rel(m.relation)?;
            check_width(&relation, &m.new)?;
            (
                Change::Insert {
                    relation,
                    new: m.new,
                },
                m.xid,
            )
        }
        Message::Update(m) => {
            let relation = rel(m.relation)?;
            check_width(&relation, &m.new)?;
            if let Some(old) = &m.old {
                check_width(&relation, old.tuple())?;
            }
            let change = Change::Update {
                relation,
                old: m.old,
                new: m.new,
            };
            (change, m.xid)
        }
        Message::Delete(m) => {
            let relation = rel(m.relation)?;
            check_width(&relation, m.old.tuple())?;
            (
                Change::Delete {
                    relation,
                    old: m.old,
                },
                m.xid,
            )
        }
        Message::Truncate(m) => {
            let relations = m
                .relations
                .iter()
                .map(|&oid| rel(oid))
                .collect::<Result<Vec<_>, _>>()?;
            let change = Change::Truncate {
                relations,
                options: m.options,
            };
            (change, m.xid)
        }
        Message::LogicalMessage(m) if m.transactional => {
            let change = Change::Message {
                lsn: m.lsn,
                prefix: m.prefix,
                content: m.content,
            };
            (change, m.xid)
        }
        other => return Ok(Classified::Other(other)),
    };
    Ok(Classified::Change { change, xid })
}

fn check_width(relation: &Relation, tuple: &Tuple) -> Result<(), TxnError> {
    if tuple.len() == relation.columns.len() {
        Ok(())
    } else {
        Err(TxnError::ColumnCount {
            relation: relation.name.clone(),
            expected: relation.columns.len(),
            found: tuple.len(),
        })
    }
}
