//! Non-streamed transactions, logical messages, two-phase transactions and protocol errors.

use std::sync::Arc;

use super::*;
use crate::pgoutput::{self, encode_to_bytes};
use crate::txn::{TxnError, TxnKind};

#[test]
fn a_transaction_carries_origin_commit_lsn_end_lsn_and_time() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            begin(743),
            Message::Origin(pgoutput::Origin {
                lsn: Lsn(0x55),
                name: "pgsync_b".into(),
            }),
            relation(USERS, "users", 2),
            insert(None, USERS, &["1", "ann"]),
            Message::Update(pgoutput::Update {
                xid: None,
                relation: USERS,
                old: None,
                new: Tuple::from_values([ColumnValue::Text(b"1"), ColumnValue::Unchanged]).unwrap(),
            }),
            Message::Delete(pgoutput::Delete {
                xid: None,
                relation: USERS,
                old: OldTuple::Key(
                    Tuple::from_values([ColumnValue::Text(b"1"), ColumnValue::Null]).unwrap(),
                ),
            }),
            commit(0x200),
        ],
    );
    let [t] = &txns[..] else { panic!("{txns:?}") };
    assert_eq!(t.xid, 743);
    assert_eq!(t.kind, TxnKind::Committed);
    assert_eq!(t.origin.as_ref().map(|o| o.name.as_str()), Some("pgsync_b"));
    assert_eq!(t.commit_lsn, Lsn(0x200));
    assert_eq!(t.end_lsn, Lsn(0x208));
    assert_eq!(t.commit_time, PgTimestamp(0x200));
    assert!(!t.streamed);
    let cs = changes(t);
    assert_eq!(cs.len(), 3);
    assert!(matches!(&cs[0], Change::Insert { relation, .. } if relation.name.name == "users"));
    assert!(
        matches!(&cs[1], Change::Update { old: None, new, .. } if new.get(1) == Some(ColumnValue::Unchanged))
    );
    assert!(matches!(
        &cs[2],
        Change::Delete {
            old: OldTuple::Key(_),
            ..
        }
    ));
    assert_eq!(asm.memory_used(), 0);
}

#[test]
fn a_transaction_without_origin_has_none() {
    let mut asm = assembler(1 << 20);
    let txns = feed(&mut asm, [begin(1), commit(0x10)]);
    assert_eq!(txns[0].origin, None);
    assert!(txns[0].is_empty());
}

#[test]
fn a_transactional_message_stays_at_its_position_among_the_changes() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            begin(5),
            relation(USERS, "users", 1),
            insert(None, USERS, &["1"]),
            Message::LogicalMessage(LogicalMessage {
                xid: None,
                transactional: true,
                lsn: Lsn(0x99),
                prefix: "pgsync.ddl".into(),
                content: text("{\"tag\":\"ALTER TABLE\"}"),
            }),
            relation(USERS, "users", 2),
            insert(None, USERS, &["2", "b"]),
            commit(0x300),
        ],
    );
    let cs = changes(&txns[0]);
    assert_eq!(cs.len(), 3);
    let Change::Insert {
        relation: before, ..
    } = &cs[0]
    else {
        panic!()
    };
    assert!(
        matches!(&cs[1], Change::Message { prefix, lsn: Lsn(0x99), .. } if prefix == "pgsync.ddl")
    );
    let Change::Insert {
        relation: after, ..
    } = &cs[2]
    else {
        panic!()
    };
    assert_eq!(before.columns.len(), 1);
    assert_eq!(after.columns.len(), 2);
}

#[test]
fn a_non_transactional_message_is_delivered_at_once() {
    let mut asm = assembler(1 << 20);
    let msg = LogicalMessage {
        xid: None,
        transactional: false,
        lsn: Lsn(7),
        prefix: "heartbeat".into(),
        content: text("x"),
    };
    let out = asm.push(Message::LogicalMessage(msg.clone())).unwrap();
    assert!(matches!(out, Some(Assembled::Message(m)) if m == msg));
}

#[test]
fn changes_keep_the_layout_they_arrived_with_when_the_relation_changes_mid_transaction() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            begin(5),
            relation(USERS, "users", 1),
            insert(None, USERS, &["1"]),
            relation(USERS, "users", 3),
            insert(None, USERS, &["2", "b", "c"]),
            commit(0x300),
        ],
    );
    let widths: Vec<usize> = changes(&txns[0])
        .iter()
        .map(|c| match c {
            Change::Insert { relation, .. } => relation.columns.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(widths, [1, 3]);
    assert_eq!(asm.relations().get(USERS).unwrap().columns.len(), 3);
}

#[test]
fn truncate_resolves_every_relation() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            begin(5),
            relation(USERS, "users", 1),
            relation(ORDERS, "orders", 1),
            Message::Truncate(pgoutput::Truncate {
                xid: None,
                options: TruncateOptions {
                    cascade: true,
                    restart_identity: false,
                },
                relations: vec![USERS, ORDERS],
            }),
            commit(0x300),
        ],
    );
    let cs = changes(&txns[0]);
    let Change::Truncate { relations, options } = &cs[0] else {
        panic!()
    };
    let names: Vec<_> = relations.iter().map(|r| r.name.name.as_str()).collect();
    assert_eq!(names, ["users", "orders"]);
    assert!(options.cascade);
}

#[test]
fn type_messages_name_types_in_the_cache() {
    let mut asm = assembler(1 << 20);
    asm.push(Message::Type(TypeMessage {
        xid: None,
        oid: 16_500,
        name: QualifiedName::new("public", "mood"),
    }))
    .unwrap();
    assert_eq!(
        asm.relations().type_name(16_500),
        Some(&QualifiedName::new("public", "mood"))
    );
}

#[test]
fn a_two_phase_transaction_is_delivered_as_prepared_then_settled() {
    let mut asm = assembler(1 << 20);
    let begin_prepare = Message::BeginPrepare(BeginPrepare {
        prepare_lsn: Lsn(0x500),
        end_lsn: Lsn(0x508),
        prepare_time: PgTimestamp(9),
        xid: 77,
        gid: "g1".into(),
    });
    let prepare = Message::Prepare(Prepare {
        prepare_lsn: Lsn(0x500),
        end_lsn: Lsn(0x508),
        prepare_time: PgTimestamp(9),
        xid: 77,
        gid: "g1".into(),
    });
    let txns = feed(
        &mut asm,
        [
            begin_prepare,
            relation(USERS, "users", 1),
            insert(None, USERS, &["1"]),
            prepare,
        ],
    );
    let [t] = &txns[..] else { panic!() };
    assert_eq!(t.kind, TxnKind::Prepared { gid: "g1".into() });
    assert_eq!(
        (t.commit_lsn, t.end_lsn, t.commit_time),
        (Lsn(0x500), Lsn(0x508), PgTimestamp(9))
    );
    assert_eq!(t.len(), 1);
    let cp = CommitPrepared {
        commit_lsn: Lsn(0x600),
        end_lsn: Lsn(0x608),
        commit_time: PgTimestamp(10),
        xid: 77,
        gid: "g1".into(),
    };
    let out = asm.push(Message::CommitPrepared(cp.clone())).unwrap();
    assert!(matches!(out, Some(Assembled::CommitPrepared(c)) if c == cp));
    let rp = RollbackPrepared {
        prepare_end_lsn: Lsn(0x508),
        rollback_end_lsn: Lsn(0x708),
        prepare_time: PgTimestamp(9),
        rollback_time: PgTimestamp(11),
        xid: 78,
        gid: "g2".into(),
    };
    let out = asm.push(Message::RollbackPrepared(rp.clone())).unwrap();
    assert!(matches!(out, Some(Assembled::RollbackPrepared(r)) if r == rp));
}

#[test]
fn a_change_outside_a_transaction_is_a_protocol_error() {
    let mut asm = assembler(1 << 20);
    asm.push(relation(USERS, "users", 1)).unwrap();
    let e = asm.push(insert(None, USERS, &["1"])).unwrap_err();
    assert!(
        matches!(
            e,
            TxnError::Unexpected {
                message: MessageKind::Insert,
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.is_retryable());
}

#[test]
fn a_change_to_an_undescribed_relation_is_refused() {
    let mut asm = assembler(1 << 20);
    asm.push(begin(1)).unwrap();
    let e = asm.push(insert(None, 999, &["1"])).unwrap_err();
    assert!(matches!(e, TxnError::UnknownRelation { oid: 999 }), "{e}");
}

#[test]
fn a_tuple_of_the_wrong_width_is_refused() {
    let mut asm = assembler(1 << 20);
    feed(&mut asm, [begin(1), relation(USERS, "users", 2)]);
    let e = asm.push(insert(None, USERS, &["1"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a tuple of \"public\".\"users\" has 1 columns, its Relation message lists 2"
    );
}

#[test]
fn commit_without_begin_and_nested_begin_are_protocol_errors() {
    let mut asm = assembler(1 << 20);
    assert!(matches!(
        asm.push(commit(1)),
        Err(TxnError::Unexpected { .. })
    ));
    asm.push(begin(1)).unwrap();
    assert!(matches!(
        asm.push(begin(2)),
        Err(TxnError::Unexpected { .. })
    ));
    // Commit of a two-phase transaction with Commit instead of Prepare.
    asm.reset();
    asm.push(Message::BeginPrepare(BeginPrepare {
        prepare_lsn: Lsn(1),
        end_lsn: Lsn(2),
        prepare_time: PgTimestamp(0),
        xid: 3,
        gid: "g".into(),
    }))
    .unwrap();
    assert!(matches!(
        asm.push(commit(1)),
        Err(TxnError::Unexpected { .. })
    ));
}

#[test]
fn reset_recovers_from_a_broken_stream() {
    let mut asm = assembler(1 << 20);
    feed(
        &mut asm,
        [
            begin(1),
            relation(USERS, "users", 1),
            insert(None, USERS, &["1"]),
        ],
    );
    asm.reset();
    assert_eq!(asm.memory_used(), 0);
    let txns = feed(
        &mut asm,
        [begin(2), insert(None, USERS, &["2"]), commit(0x10)],
    );
    assert_eq!(keys(&txns[0]), ["2"]);
}

#[test]
fn payloads_are_decoded_with_stream_state_tracked() {
    let mut asm = assembler(1 << 20);
    let msgs = [
        relation(USERS, "users", 1),
        stream_start(900, true),
        insert(Some(900), USERS, &["s1"]),
        Message::StreamStop,
        begin(3),
        insert(None, USERS, &["p1"]),
        commit(0x10),
        stream_commit(900, 0x20),
    ];
    let mut done = Vec::new();
    for m in &msgs {
        if let Some(Assembled::Transaction(t)) =
            asm.push_payload(&encode_to_bytes(m).unwrap()).unwrap()
        {
            done.push(t);
        }
    }
    assert_eq!(done.len(), 2);
    assert_eq!(keys(&done[0]), ["p1"]);
    assert_eq!(keys(&done[1]), ["s1"]);
    assert!(done[1].streamed);
}

#[test]
fn relations_in_changes_are_shared_not_copied() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            begin(1),
            relation(USERS, "users", 1),
            insert(None, USERS, &["1"]),
            insert(None, USERS, &["2"]),
            commit(0x10),
        ],
    );
    let cs = changes(&txns[0]);
    let (Change::Insert { relation: a, .. }, Change::Insert { relation: b, .. }) = (&cs[0], &cs[1])
    else {
        panic!()
    };
    assert!(Arc::ptr_eq(a, b));
}

#[test]
fn assembler_and_transactions_can_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<crate::txn::Assembler>();
    send_sync::<Transaction>();
    send_sync::<Assembled>();
    send_sync::<crate::txn::TxnError>();
}
