//! Assembly tests: plain, streamed and interleaved transactions, subtransaction aborts,
//! spilling beyond tiny budgets, relation changes mid-transaction, and a model-based
//! property test.

mod model;
mod plain;
mod server;
mod spill;
mod streamed;

use bytes::Bytes;
use pgsync_names::QualifiedName;

use super::{Assembled, Assembler, AssemblerConfig, Change, Transaction};
use crate::Lsn;
use crate::pgoutput::*;

pub(crate) const USERS: u32 = 16_400;
pub(crate) const ORDERS: u32 = 16_401;

pub(crate) fn assembler(budget: usize) -> Assembler {
    Assembler::new(AssemblerConfig {
        memory_budget: budget,
        ..AssemblerConfig::default()
    })
}

/// A table with `ncols` text columns `c0..`, the first being the key.
pub(crate) fn relation(oid: u32, name: &str, ncols: usize) -> Message {
    Message::Relation(RelationMessage {
        xid: None,
        relation: Relation {
            oid,
            name: QualifiedName::new("public", name),
            replica_identity: ReplicaIdentity::Default,
            columns: (0..ncols)
                .map(|i| RelationColumn {
                    name: format!("c{i}"),
                    type_oid: 25,
                    type_modifier: -1,
                    is_key: i == 0,
                })
                .collect(),
        },
    })
}

pub(crate) fn row(values: &[&str]) -> Tuple {
    Tuple::from_values(values.iter().map(|v| ColumnValue::Text(v.as_bytes()))).unwrap()
}

pub(crate) fn insert(xid: Option<u32>, rel: u32, values: &[&str]) -> Message {
    Message::Insert(Insert {
        xid,
        relation: rel,
        new: row(values),
    })
}

pub(crate) fn begin(xid: u32) -> Message {
    Message::Begin(Begin {
        final_lsn: Lsn(0x100),
        commit_time: PgTimestamp(1),
        xid,
    })
}

pub(crate) fn commit(lsn: u64) -> Message {
    Message::Commit(Commit {
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 8),
        commit_time: PgTimestamp(lsn as i64),
    })
}

pub(crate) fn stream_start(xid: u32, first_segment: bool) -> Message {
    Message::StreamStart(StreamStart { xid, first_segment })
}

pub(crate) fn stream_commit(xid: u32, lsn: u64) -> Message {
    Message::StreamCommit(StreamCommit {
        xid,
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 8),
        commit_time: PgTimestamp(lsn as i64),
    })
}

pub(crate) fn stream_abort(xid: u32, subxid: u32) -> Message {
    Message::StreamAbort(StreamAbort {
        xid,
        subxid,
        abort: None,
    })
}

/// Pushes every message; returns the transactions completed, failing on anything else.
#[track_caller]
pub(crate) fn feed(
    asm: &mut Assembler,
    msgs: impl IntoIterator<Item = Message>,
) -> Vec<Transaction> {
    let mut out = Vec::new();
    for m in msgs {
        let kind = m.kind();
        match asm.push(m) {
            Ok(Some(Assembled::Transaction(t))) => out.push(t),
            Ok(None) => {}
            Ok(Some(other)) => panic!("unexpected output {other:?}"),
            Err(e) => panic!("{kind} failed: {e}"),
        }
    }
    out
}

/// The changes of `t`, read back.
#[track_caller]
pub(crate) fn changes(t: &Transaction) -> Vec<Change> {
    t.changes().collect::<Result<_, _>>().unwrap()
}

/// The first column of every inserted row, as text.
pub(crate) fn keys(t: &Transaction) -> Vec<String> {
    changes(t)
        .iter()
        .map(|c| match c {
            Change::Insert { new, .. } => match new.get(0) {
                Some(ColumnValue::Text(v)) => String::from_utf8_lossy(v).into_owned(),
                other => panic!("{other:?}"),
            },
            other => panic!("not an insert: {other:?}"),
        })
        .collect()
}

pub(crate) fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
