//! proptest strategies for arbitrary, well-formed messages. A message that carries an
//! optional xid is generated either inside a stream block (all such xids set) or outside.

use bytes::Bytes;
use pgsync_names::QualifiedName;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::Lsn;
use crate::pgoutput::*;

/// Names as PostgreSQL can send them: no NUL, and not empty where emptiness means
/// `pg_catalog`.
pub(crate) fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_ \"é.]{1,20}"
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn ts() -> impl Strategy<Value = PgTimestamp> {
    any::<i64>().prop_map(PgTimestamp)
}

fn qualified() -> impl Strategy<Value = QualifiedName> {
    (name(), name()).prop_map(|(s, n)| QualifiedName::new(s, n))
}

#[derive(Debug, Clone)]
enum Col {
    Null,
    Unchanged,
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

pub(crate) fn tuple() -> impl Strategy<Value = Tuple> {
    let col = prop_oneof![
        Just(Col::Null),
        Just(Col::Unchanged),
        vec(any::<u8>(), 0..64).prop_map(Col::Text),
        vec(any::<u8>(), 0..64).prop_map(Col::Binary),
    ];
    vec(col, 0..12).prop_map(|cols| {
        Tuple::from_values(cols.iter().map(|c| match c {
            Col::Null => ColumnValue::Null,
            Col::Unchanged => ColumnValue::Unchanged,
            Col::Text(b) => ColumnValue::Text(b),
            Col::Binary(b) => ColumnValue::Binary(b),
        }))
        .unwrap_or_default()
    })
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

pub(crate) fn relation() -> impl Strategy<Value = Relation> {
    let ri = prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ];
    let column = (name(), any::<u32>(), any::<i32>(), any::<bool>()).prop_map(
        |(name, type_oid, type_modifier, is_key)| RelationColumn {
            name,
            type_oid,
            type_modifier,
            is_key,
        },
    );
    (any::<u32>(), qualified(), ri, vec(column, 0..8)).prop_map(
        |(oid, name, replica_identity, columns)| Relation {
            oid,
            name,
            replica_identity,
            columns,
        },
    )
}

/// A message that may carry a stream xid, with `xid` set or not.
fn streamable(xid: Option<u32>) -> impl Strategy<Value = Message> {
    prop_oneof![
        relation().prop_map(move |relation| Message::Relation(RelationMessage { xid, relation })),
        (any::<u32>(), qualified()).prop_map(move |(oid, name)| Message::Type(TypeMessage {
            xid,
            oid,
            name
        })),
        (any::<u32>(), tuple()).prop_map(move |(relation, new)| Message::Insert(Insert {
            xid,
            relation,
            new
        })),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            move |(relation, old, new)| Message::Update(Update {
                xid,
                relation,
                old,
                new
            })
        ),
        (any::<u32>(), old_tuple()).prop_map(move |(relation, old)| Message::Delete(Delete {
            xid,
            relation,
            old
        })),
        (any::<bool>(), any::<bool>(), vec(any::<u32>(), 0..6)).prop_map(
            move |(cascade, restart_identity, relations)| Message::Truncate(Truncate {
                xid,
                options: TruncateOptions {
                    cascade,
                    restart_identity
                },
                relations,
            })
        ),
        (any::<bool>(), lsn(), name(), vec(any::<u8>(), 0..100)).prop_map(
            move |(transactional, lsn, prefix, content)| {
                Message::LogicalMessage(LogicalMessage {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content: Bytes::from(content),
                })
            }
        ),
    ]
}

fn prepare() -> impl Strategy<Value = Prepare> {
    (lsn(), lsn(), ts(), any::<u32>(), name()).prop_map(
        |(prepare_lsn, end_lsn, prepare_time, xid, gid)| Prepare {
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
        },
    )
}

/// Messages without a stream xid field.
fn fixed() -> impl Strategy<Value = Message> {
    prop_oneof![
        (lsn(), ts(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            })
        }),
        (lsn(), lsn(), ts()).prop_map(|(commit_lsn, end_lsn, commit_time)| {
            Message::Commit(Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            })
        }),
        (lsn(), name()).prop_map(|(lsn, name)| Message::Origin(Origin { lsn, name })),
        (any::<u32>(), any::<bool>()).prop_map(|(xid, first_segment)| {
            Message::StreamStart(StreamStart { xid, first_segment })
        }),
        Just(Message::StreamStop),
        (any::<u32>(), lsn(), lsn(), ts()).prop_map(|(xid, commit_lsn, end_lsn, commit_time)| {
            Message::StreamCommit(StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
            })
        }),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::option::of((lsn(), ts()))
        )
            .prop_map(|(xid, subxid, abort)| Message::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort: abort.map(|(lsn, time)| AbortInfo { lsn, time }),
            })),
        prepare().prop_map(|p| Message::BeginPrepare(BeginPrepare {
            prepare_lsn: p.prepare_lsn,
            end_lsn: p.end_lsn,
            prepare_time: p.prepare_time,
            xid: p.xid,
            gid: p.gid,
        })),
        prepare().prop_map(Message::Prepare),
        prepare().prop_map(Message::StreamPrepare),
        (prepare(), ts()).prop_map(|(p, t)| Message::CommitPrepared(CommitPrepared {
            commit_lsn: p.prepare_lsn,
            end_lsn: p.end_lsn,
            commit_time: t,
            xid: p.xid,
            gid: p.gid,
        })),
        (prepare(), ts()).prop_map(|(p, t)| Message::RollbackPrepared(RollbackPrepared {
            prepare_end_lsn: p.prepare_lsn,
            rollback_end_lsn: p.end_lsn,
            prepare_time: p.prepare_time,
            rollback_time: t,
            xid: p.xid,
            gid: p.gid,
        })),
    ]
}

/// Any message, with whether it belongs inside a stream block.
pub(crate) fn message() -> impl Strategy<Value = (Message, bool)> {
    prop_oneof![
        fixed().prop_map(|m| (m, false)),
        streamable(None).prop_map(|m| (m, false)),
        any::<u32>().prop_flat_map(|x| streamable(Some(x)).prop_map(|m| (m, true))),
    ]
}
