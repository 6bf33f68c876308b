//! Streamed transactions (protocol 2 and later): interleaving, aborts, subtransactions.

use super::*;
use crate::pgoutput;
use crate::txn::{TxnError, TxnKind};

#[test]
fn interleaved_streamed_transactions_are_kept_apart_and_delivered_in_commit_order() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            relation(USERS, "users", 1),
            stream_start(900, true),
            Message::Origin(pgoutput::Origin {
                lsn: Lsn(0),
                name: "pgsync_a".into(),
            }),
            insert(Some(900), USERS, &["a1"]),
            insert(Some(900), USERS, &["a2"]),
            Message::StreamStop,
            stream_start(901, true),
            insert(Some(901), USERS, &["b1"]),
            Message::StreamStop,
            begin(902),
            insert(None, USERS, &["c1"]),
            commit(0x100),
            stream_start(900, false),
            insert(Some(900), USERS, &["a3"]),
            Message::StreamStop,
            stream_commit(901, 0x200),
            stream_start(900, false),
            insert(Some(900), USERS, &["a4"]),
            Message::StreamStop,
            stream_commit(900, 0x300),
        ],
    );
    let got: Vec<(u32, bool, Vec<String>)> =
        txns.iter().map(|t| (t.xid, t.streamed, keys(t))).collect();
    assert_eq!(
        got,
        [
            (902, false, vec!["c1".to_string()]),
            (901, true, vec!["b1".into()]),
            (
                900,
                true,
                vec!["a1".into(), "a2".into(), "a3".into(), "a4".into()]
            ),
        ]
    );
    assert_eq!(txns[2].origin.as_ref().unwrap().name, "pgsync_a");
    assert_eq!(txns[2].commit_lsn, Lsn(0x300));
    assert_eq!(txns[2].end_lsn, Lsn(0x308));
    assert_eq!(txns[1].origin, None);
    assert_eq!(asm.open_streams(), 0);
    assert_eq!(asm.memory_used(), 0);
}

#[test]
fn a_stream_abort_drops_the_whole_transaction() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            relation(USERS, "users", 1),
            stream_start(900, true),
            insert(Some(900), USERS, &["a1"]),
            Message::StreamStop,
            stream_abort(900, 900),
        ],
    );
    assert!(txns.is_empty());
    assert_eq!(asm.open_streams(), 0);
    assert_eq!(asm.memory_used(), 0);
    // Its xid is gone: a later block that continues it is a protocol error.
    assert!(matches!(
        asm.push(stream_start(900, false)),
        Err(TxnError::UnknownStream { xid: 900 })
    ));
}

/// Top-level 900 writes a1; savepoint s1 (sub 905) writes b1; savepoint s2 (sub 906, a
/// child of 905) writes c1; ROLLBACK TO s1 aborts 905 (and 906 with it); 900 writes a2.
fn nested_savepoints_then(abort: Vec<Message>) -> Vec<Message> {
    let mut msgs = vec![
        relation(USERS, "users", 1),
        stream_start(900, true),
        insert(Some(900), USERS, &["a1"]),
        insert(Some(905), USERS, &["b1"]),
        insert(Some(906), USERS, &["c1"]),
        Message::StreamStop,
    ];
    msgs.extend(abort);
    msgs.extend([
        stream_start(900, false),
        insert(Some(900), USERS, &["a2"]),
        Message::StreamStop,
        stream_commit(900, 0x100),
    ]);
    msgs
}

#[test]
fn a_subtransaction_abort_drops_its_changes_and_those_of_its_children() {
    let mut asm = assembler(1 << 20);
    // PostgreSQL sends one Stream Abort per aborted subtransaction that has changes.
    let txns = feed(
        &mut asm,
        nested_savepoints_then(vec![stream_abort(900, 906), stream_abort(900, 905)]),
    );
    assert_eq!(keys(&txns[0]), ["a1", "a2"]);
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        nested_savepoints_then(vec![stream_abort(900, 905), stream_abort(900, 906)]),
    );
    assert_eq!(keys(&txns[0]), ["a1", "a2"]);
    assert_eq!(asm.memory_used(), 0);
}

#[test]
fn aborting_only_the_inner_subtransaction_keeps_the_outer_one() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        nested_savepoints_then(vec![stream_abort(900, 906)]),
    );
    assert_eq!(keys(&txns[0]), ["a1", "b1", "a2"]);
}

#[test]
fn a_subtransaction_abort_without_changes_is_harmless() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        nested_savepoints_then(vec![stream_abort(900, 999), stream_abort(12345, 1)]),
    );
    assert_eq!(keys(&txns[0]), ["a1", "b1", "c1", "a2"]);
}

#[test]
fn a_new_first_segment_replaces_a_stale_partial_transaction() {
    let mut asm = assembler(1 << 20);
    feed(
        &mut asm,
        [
            relation(USERS, "users", 1),
            stream_start(900, true),
            insert(Some(900), USERS, &["old"]),
            Message::StreamStop,
        ],
    );
    let txns = feed(
        &mut asm,
        [
            stream_start(900, true),
            insert(Some(900), USERS, &["new"]),
            Message::StreamStop,
            stream_commit(900, 0x10),
        ],
    );
    assert_eq!(keys(&txns[0]), ["new"]);
    assert_eq!(asm.memory_used(), 0);
}

#[test]
fn a_streamed_two_phase_transaction_is_delivered_as_prepared() {
    let mut asm = assembler(1 << 20);
    let txns = feed(
        &mut asm,
        [
            relation(USERS, "users", 1),
            stream_start(900, true),
            insert(Some(900), USERS, &["a"]),
            Message::StreamStop,
            Message::StreamPrepare(Prepare {
                prepare_lsn: Lsn(0x40),
                end_lsn: Lsn(0x48),
                prepare_time: PgTimestamp(3),
                xid: 900,
                gid: "g".into(),
            }),
        ],
    );
    assert_eq!(txns[0].kind, TxnKind::Prepared { gid: "g".into() });
    assert!(txns[0].streamed);
    assert_eq!(keys(&txns[0]), ["a"]);
}

#[test]
fn stream_protocol_violations_are_typed_errors() {
    let mut asm = assembler(1 << 20);
    assert!(matches!(
        asm.push(stream_start(1, false)),
        Err(TxnError::UnknownStream { xid: 1 })
    ));
    assert!(matches!(
        asm.push(stream_commit(1, 5)),
        Err(TxnError::UnknownStream { xid: 1 })
    ));
    assert!(matches!(
        asm.push(Message::StreamStop),
        Err(TxnError::Unexpected { .. })
    ));
    feed(
        &mut asm,
        [relation(USERS, "users", 1), stream_start(2, true)],
    );
    assert!(matches!(
        asm.push(insert(None, USERS, &["x"])),
        Err(TxnError::MissingXid { .. })
    ));
    assert!(matches!(
        asm.push(stream_commit(2, 5)),
        Err(TxnError::Unexpected { .. })
    ));
    assert!(matches!(
        asm.push(begin(3)),
        Err(TxnError::Unexpected { .. })
    ));
}

#[test]
fn with_emit_streamed_each_streamed_change_and_abort_is_handed_out_as_it_arrives() {
    let mut asm = Assembler::new(crate::txn::AssemblerConfig {
        memory_budget: 1 << 20,
        emit_streamed: true,
        ..crate::txn::AssemblerConfig::default()
    });
    let mut out = Vec::new();
    for m in [
        relation(USERS, "users", 1),
        stream_start(900, true),
        insert(Some(900), USERS, &["a1"]),
        insert(Some(905), USERS, &["a2"]),
        Message::StreamStop,
        begin(902),
        insert(None, USERS, &["c1"]),
        commit(0x100),
        stream_abort(900, 905),
        stream_start(900, false),
        insert(Some(900), USERS, &["a3"]),
        Message::StreamStop,
        stream_commit(900, 0x300),
    ] {
        if let Some(done) = asm.push(m).unwrap() {
            out.push(match done {
                Assembled::StreamedChange {
                    xid,
                    subxid,
                    change,
                } => {
                    let Change::Insert { new, .. } = change else {
                        panic!("{change:?}")
                    };
                    let key = match new.get(0) {
                        Some(pgoutput::ColumnValue::Text(b)) => {
                            String::from_utf8_lossy(b).into_owned()
                        }
                        other => panic!("{other:?}"),
                    };
                    format!("change {xid}/{subxid} {key}")
                }
                Assembled::StreamAborted { xid, subxid } => format!("abort {xid}/{subxid}"),
                Assembled::Transaction(t) => format!("txn {} {:?}", t.xid, keys(&t)),
                other => panic!("{other:?}"),
            });
        }
    }
    assert_eq!(
        out,
        [
            "change 900/900 a1",
            "change 900/905 a2",
            "txn 902 [\"c1\"]",
            "abort 900/905",
            "change 900/900 a3",
            "txn 900 [\"a1\", \"a3\"]",
        ]
    );
}
