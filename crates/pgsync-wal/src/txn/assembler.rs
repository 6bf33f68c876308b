//! The assembler's state machine: messages in stream order in, whole transactions out.
//!
//! ```text
//!            Begin / Begin Prepare                  Stream Start(xid)
//!   Idle ─────────────────────────► Txn    Idle ─────────────────────────► Stream(xid)
//!    ▲   Commit / Prepare: emit       │      ▲   Stream Stop                   │
//!    └────────────────────────────────┘      └─────────────────────────────────┘
//!   In Idle: Stream Commit / Stream Prepare (emit the streamed transaction),
//!            Stream Abort (drop it, or truncate it at a subtransaction),
//!            Commit Prepared / Rollback Prepared (emit as they are).
//!   Anywhere: Relation / Type refresh the cache; non-transactional messages are emitted.
//! ```
//!
//! Memory: every open transaction (the current non-streamed one and every streamed one with
//! a block seen) keeps its changes in a [`ChangeBuffer`]. When their total passes the
//! budget, the largest buffer moves to its spill file, as PostgreSQL's reorder buffer does;
//! so a 10 GB transaction, streamed or not, holds at most the budget in memory.

use std::collections::HashMap;
use std::mem;

use bytes::Bytes;

use super::buffer::ChangeBuffer;
use super::cache::RelationCache;
use super::change::{Change, Classified, Transaction, TxnKind, classify};
use super::error::TxnError;
use super::{Assembled, AssemblerConfig};
use crate::Lsn;
use crate::pgoutput::{Decoder, Message, Origin, PgTimestamp};

/// A non-streamed transaction between its Begin (or Begin Prepare) and Commit (or Prepare).
struct OpenTxn {
    xid: u32,
    /// Set for a two-phase transaction.
    gid: Option<String>,
    origin: Option<Origin>,
    buffer: ChangeBuffer,
}

/// A streamed transaction between its first Stream Start and its Stream Commit/Abort.
#[derive(Default)]
struct StreamedTxn {
    origin: Option<Origin>,
    buffer: ChangeBuffer,
}

/// Commit (or prepare) LSN, end LSN and time.
type Times = (Lsn, Lsn, PgTimestamp);

enum State {
    Idle,
    Txn(Box<OpenTxn>),
    Stream(u32),
}

impl State {
    fn describe(&self) -> &'static str {
        match self {
            State::Idle => "outside any transaction",
            State::Txn(_) => "inside a transaction",
            State::Stream(_) => "inside a stream block",
        }
    }
}

/// Turns pgoutput messages, fed in stream order, into complete transactions.
///
/// ```
/// use bytes::Bytes;
/// use pgsync_wal::txn::{Assembler, AssemblerConfig};
///
/// let mut asm = Assembler::new(AssemblerConfig::default());
/// // For each XLogData payload of the replication stream:
/// # let payloads: Vec<Bytes> = Vec::new();
/// for payload in &payloads {
///     if let Some(done) = asm.push_payload(payload)? {
///         // apply `done` (a Transaction, a prepared-transaction outcome or a message)
///     }
/// }
/// # Ok::<(), pgsync_wal::txn::TxnError>(())
/// ```
///
/// After an error the assembler's state is undefined: call [`Assembler::reset`] and start
/// streaming again from the last confirmed position.
pub struct Assembler {
    config: AssemblerConfig,
    decoder: Decoder,
    cache: RelationCache,
    state: State,
    streams: HashMap<u32, StreamedTxn>,
    mem_used: usize,
}

impl Assembler {
    /// An assembler with an empty relation cache.
    pub fn new(config: AssemblerConfig) -> Self {
        Self {
            config,
            decoder: Decoder::new(),
            cache: RelationCache::default(),
            state: State::Idle,
            streams: HashMap::new(),
            mem_used: 0,
        }
    }

    /// Decodes one XLogData payload and feeds it in.
    pub fn push_payload(&mut self, payload: &Bytes) -> Result<Option<Assembled>, TxnError> {
        let msg = self.decoder.decode(payload)?;
        self.push(msg)
    }

    /// Feeds the next message of the stream; returns what it completes, if anything.
    pub fn push(&mut self, msg: Message) -> Result<Option<Assembled>, TxnError> {
        match msg {
            Message::Relation(m) => {
                self.cache.insert(m.relation);
                return Ok(None);
            }
            Message::Type(m) => {
                self.cache.insert_type(m.oid, m.name);
                return Ok(None);
            }
            Message::LogicalMessage(m) if !m.transactional => {
                return Ok(Some(Assembled::Message(m)));
            }
            _ => {}
        }
        let cache = &self.cache;
        match classify(msg, |oid| cache.get(oid).cloned())? {
            Classified::Change { change, xid } => {
                let emit = match (&self.state, xid) {
                    (State::Stream(top), Some(sub)) if self.config.emit_streamed => {
                        Some((*top, sub, change.clone()))
                    }
                    _ => None,
                };
                self.add_change(change, xid)?;
                Ok(emit.map(|(xid, subxid, change)| Assembled::StreamedChange {
                    xid,
                    subxid,
                    change,
                }))
            }
            Classified::Other(msg) => self.control(msg),
        }
    }

    /// Drops every open transaction and the decoder's stream state, keeping the relation
    /// cache; call it before streaming again after an error or a reconnection (the server
    /// sends open transactions again from their start).
    pub fn reset(&mut self) {
        self.decoder = Decoder::new();
        self.state = State::Idle;
        self.streams.clear();
        self.mem_used = 0;
    }

    /// The relations (and types) described so far.
    pub fn relations(&self) -> &RelationCache {
        &self.cache
    }

    /// Approximate memory held by open transactions (at most the budget after each push,
    /// plus the last change).
    pub fn memory_used(&self) -> usize {
        self.mem_used
    }

    /// Whether no transaction is open: none between Begin and Commit, no streamed one
    /// waiting for its commit.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle) && self.streams.is_empty()
    }

    /// Streamed transactions started and not yet committed or aborted.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    fn add_change(&mut self, change: Change, xid: Option<u32>) -> Result<(), TxnError> {
        let size = match &mut self.state {
            State::Idle => {
                return Err(TxnError::Unexpected {
                    message: change.kind(),
                    state: self.state.describe(),
                });
            }
            State::Txn(open) => open.buffer.push(change, None),
            State::Stream(top) => {
                let Some(sub) = xid else {
                    return Err(TxnError::MissingXid {
                        message: change.kind(),
                    });
                };
                let txn = self.streams.entry(*top).or_default();
                txn.buffer.push(change, Some(sub))
            }
        };
        self.mem_used += size;
        self.enforce_budget()
    }

    /// Spills the largest buffers until the total fits the budget.
    fn enforce_budget(&mut self) -> Result<(), TxnError> {
        while self.mem_used > self.config.memory_budget {
            let open = match &mut self.state {
                State::Txn(open) => Some(&mut open.buffer),
                _ => None,
            };
            let largest = open
                .into_iter()
                .chain(self.streams.values_mut().map(|s| &mut s.buffer))
                .max_by_key(|b| b.mem_bytes());
            let Some(buffer) = largest.filter(|b| b.mem_bytes() > 0) else {
                break;
            };
            let freed = buffer.spill(&self.config.spill_dir)?;
            self.mem_used -= freed;
        }
        Ok(())
    }

    fn release(&mut self, buffer: &ChangeBuffer) {
        self.mem_used -= buffer.mem_bytes();
    }

    fn control(&mut self, msg: Message) -> Result<Option<Assembled>, TxnError> {
        let unexpected = |msg: &Message, state: &State| TxnError::Unexpected {
            message: msg.kind(),
            state: state.describe(),
        };
        match (msg, &mut self.state) {
            (Message::Begin(b), State::Idle) => {
                self.state = State::Txn(Box::new(OpenTxn {
                    xid: b.xid,
                    gid: None,
                    origin: None,
                    buffer: ChangeBuffer::default(),
                }));
                Ok(None)
            }
            (Message::BeginPrepare(b), State::Idle) => {
                self.state = State::Txn(Box::new(OpenTxn {
                    xid: b.xid,
                    gid: Some(b.gid),
                    origin: None,
                    buffer: ChangeBuffer::default(),
                }));
                Ok(None)
            }
            (Message::Origin(o), State::Txn(open)) => {
                open.origin = Some(o);
                Ok(None)
            }
            (Message::Origin(o), State::Stream(xid)) => {
                self.streams.entry(*xid).or_default().origin = Some(o);
                Ok(None)
            }
            (Message::Commit(c), State::Txn(open)) if open.gid.is_none() => {
                let times = (c.commit_lsn, c.end_lsn, c.commit_time);
                Ok(Some(Assembled::Transaction(
                    self.finish_open(TxnKind::Committed, times)?,
                )))
            }
            (Message::Prepare(p), State::Txn(open)) if open.gid.is_some() => {
                let kind = TxnKind::Prepared { gid: p.gid };
                let times = (p.prepare_lsn, p.end_lsn, p.prepare_time);
                Ok(Some(Assembled::Transaction(self.finish_open(kind, times)?)))
            }
            (Message::StreamStart(s), State::Idle) => {
                if s.first_segment {
                    if let Some(old) = self.streams.insert(s.xid, StreamedTxn::default()) {
                        self.release(&old.buffer);
                    }
                } else if !self.streams.contains_key(&s.xid) {
                    return Err(TxnError::UnknownStream { xid: s.xid });
                }
                self.state = State::Stream(s.xid);
                Ok(None)
            }
            (Message::StreamStop, State::Stream(_)) => {
                self.state = State::Idle;
                Ok(None)
            }
            (Message::StreamCommit(c), State::Idle) => {
                let times = (c.commit_lsn, c.end_lsn, c.commit_time);
                Ok(Some(Assembled::Transaction(self.finish_stream(
                    c.xid,
                    TxnKind::Committed,
                    times,
                )?)))
            }
            (Message::StreamPrepare(p), State::Idle) => {
                let kind = TxnKind::Prepared { gid: p.gid };
                let times = (p.prepare_lsn, p.end_lsn, p.prepare_time);
                Ok(Some(Assembled::Transaction(
                    self.finish_stream(p.xid, kind, times)?,
                )))
            }
            (Message::StreamAbort(a), State::Idle) => {
                if a.xid == a.subxid {
                    if let Some(txn) = self.streams.remove(&a.xid) {
                        self.release(&txn.buffer);
                    }
                } else if let Some(txn) = self.streams.get_mut(&a.xid) {
                    let freed = txn.buffer.abort_subxact(a.subxid)?;
                    self.mem_used -= freed;
                }
                Ok(self
                    .config
                    .emit_streamed
                    .then_some(Assembled::StreamAborted {
                        xid: a.xid,
                        subxid: a.subxid,
                    }))
            }
            (Message::CommitPrepared(c), State::Idle) => Ok(Some(Assembled::CommitPrepared(c))),
            (Message::RollbackPrepared(r), State::Idle) => Ok(Some(Assembled::RollbackPrepared(r))),
            (msg, state) => Err(unexpected(&msg, state)),
        }
    }

    /// Closes the open non-streamed transaction.
    fn finish_open(&mut self, kind: TxnKind, times: Times) -> Result<Transaction, TxnError> {
        let (commit_lsn, end_lsn, commit_time) = times;
        let State::Txn(open) = mem::replace(&mut self.state, State::Idle) else {
            return Err(TxnError::Unexpected {
                message: crate::pgoutput::MessageKind::Commit,
                state: "outside a transaction",
            });
        };
        self.release(&open.buffer);
        Ok(Transaction {
            xid: open.xid,
            kind,
            origin: open.origin,
            commit_lsn,
            end_lsn,
            commit_time,
            streamed: false,
            changes: open.buffer,
        })
    }

    /// Closes streamed transaction `xid`.
    fn finish_stream(
        &mut self,
        xid: u32,
        kind: TxnKind,
        times: Times,
    ) -> Result<Transaction, TxnError> {
        let (commit_lsn, end_lsn, commit_time) = times;
        let txn = self
            .streams
            .remove(&xid)
            .ok_or(TxnError::UnknownStream { xid })?;
        self.release(&txn.buffer);
        Ok(Transaction {
            xid,
            kind,
            origin: txn.origin,
            commit_lsn,
            end_lsn,
            commit_time,
            streamed: true,
            changes: txn.buffer,
        })
    }
}

impl std::fmt::Debug for Assembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembler")
            .field("config", &self.config)
            .field("state", &self.state.describe())
            .field("open_streams", &self.streams.len())
            .field("memory_used", &self.mem_used)
            .field("relations", &self.cache.len())
            .finish()
    }
}
