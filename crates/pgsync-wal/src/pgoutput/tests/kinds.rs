//! One test per message kind: hand-laid bytes decode to the expected message, and the
//! encoder writes exactly those bytes back.

use bytes::Bytes;
use pgsync_names::QualifiedName;

use super::wire;
use crate::Lsn;
use crate::pgoutput::*;

const LSN_A: u64 = 0x0000_0016_B374_D848;
const LSN_B: u64 = 0x0000_0016_B374_D900;
const TS: i64 = 774_000_000_123_456;

#[track_caller]
fn check(payload: Bytes, in_stream: bool, expected: Message) {
    let encoded = encode_to_bytes(&expected).unwrap();
    assert_eq!(decode_message(&payload, in_stream), Ok(expected));
    assert_eq!(encoded, Vec::from(payload), "encoder differs");
}

fn row(values: &[ColumnValue<'_>]) -> Tuple {
    Tuple::from_values(values.iter().copied()).unwrap()
}

#[test]
fn begin_carries_final_lsn_commit_time_and_xid() {
    let p = wire(b'B').u64(LSN_A).i64(TS).u32(743).done();
    check(
        p,
        false,
        Message::Begin(Begin {
            final_lsn: Lsn(LSN_A),
            commit_time: PgTimestamp(TS),
            xid: 743,
        }),
    );
}

#[test]
fn commit_carries_commit_and_end_lsn_and_time() {
    let p = wire(b'C').u8(0).u64(LSN_A).u64(LSN_B).i64(TS).done();
    check(
        p,
        false,
        Message::Commit(Commit {
            commit_lsn: Lsn(LSN_A),
            end_lsn: Lsn(LSN_B),
            commit_time: PgTimestamp(TS),
        }),
    );
}

#[test]
fn origin_carries_the_origin_lsn_and_name() {
    let p = wire(b'O').u64(LSN_A).s("pgsync_task_a").done();
    check(
        p,
        false,
        Message::Origin(Origin {
            lsn: Lsn(LSN_A),
            name: "pgsync_task_a".into(),
        }),
    );
}

fn accounts() -> Relation {
    Relation {
        oid: 16_396,
        name: QualifiedName::new("public", "pgbench_accounts"),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            RelationColumn {
                name: "aid".into(),
                type_oid: 23,
                type_modifier: -1,
                is_key: true,
            },
            RelationColumn {
                name: "filler".into(),
                type_oid: 1042,
                type_modifier: 88,
                is_key: false,
            },
        ],
    }
}

fn accounts_wire(w: super::Wire) -> Bytes {
    w.u32(16_396)
        .s("public")
        .s("pgbench_accounts")
        .u8(b'd')
        .u16(2)
        .u8(1)
        .s("aid")
        .u32(23)
        .i32(-1)
        .u8(0)
        .s("filler")
        .u32(1042)
        .i32(88)
        .done()
}

#[test]
fn relation_describes_columns_keys_and_replica_identity() {
    check(
        accounts_wire(wire(b'R')),
        false,
        Message::Relation(RelationMessage {
            xid: None,
            relation: accounts(),
        }),
    );
    let rel = accounts();
    assert_eq!(rel.key_columns().map(|(i, _)| i).collect::<Vec<_>>(), [0]);
    assert_eq!(rel.column_index("filler"), Some(1));
}

#[test]
fn relation_inside_a_stream_block_carries_an_xid() {
    check(
        accounts_wire(wire(b'R').u32(900)),
        true,
        Message::Relation(RelationMessage {
            xid: Some(900),
            relation: accounts(),
        }),
    );
}

#[test]
fn an_empty_namespace_means_pg_catalog() {
    let p = wire(b'R')
        .u32(1259)
        .s("")
        .s("pg_class")
        .u8(b'n')
        .u16(0)
        .done();
    let Ok(Message::Relation(m)) = decode_message(&p, false) else {
        panic!()
    };
    assert_eq!(
        m.relation.name,
        QualifiedName::new("pg_catalog", "pg_class")
    );
    assert_eq!(m.relation.replica_identity, ReplicaIdentity::Nothing);
    assert_eq!(encode_to_bytes(&Message::Relation(m)).unwrap(), p);
}

#[test]
fn every_replica_identity_is_understood() {
    for (b, ri) in [
        (b'd', ReplicaIdentity::Default),
        (b'n', ReplicaIdentity::Nothing),
        (b'f', ReplicaIdentity::Full),
        (b'i', ReplicaIdentity::Index),
    ] {
        assert_eq!(ReplicaIdentity::from_byte(b), Some(ri));
        assert_eq!(ri.to_byte(), b);
    }
}

#[test]
fn type_names_a_type_by_schema_and_name() {
    let p = wire(b'Y').u32(16_500).s("public").s("mood").done();
    check(
        p,
        false,
        Message::Type(TypeMessage {
            xid: None,
            oid: 16_500,
            name: QualifiedName::new("public", "mood"),
        }),
    );
    let p = wire(b'Y').u32(7).u32(16_500).s("").s("int4").done();
    check(
        p,
        true,
        Message::Type(TypeMessage {
            xid: Some(7),
            oid: 16_500,
            name: QualifiedName::new("pg_catalog", "int4"),
        }),
    );
}

#[test]
fn insert_carries_a_new_tuple_of_every_column_kind() {
    let p = wire(b'I')
        .u32(16_396)
        .u8(b'N')
        .u16(4)
        .text(b"17")
        .u8(b'n')
        .u8(b'u')
        .u8(b'b')
        .i32(3)
        .raw(&[1, 2, 3])
        .done();
    let expected = Message::Insert(Insert {
        xid: None,
        relation: 16_396,
        new: row(&[
            ColumnValue::Text(b"17"),
            ColumnValue::Null,
            ColumnValue::Unchanged,
            ColumnValue::Binary(&[1, 2, 3]),
        ]),
    });
    check(p.clone(), false, expected.clone());
    // Zero-copy: the text value points into the payload.
    let Ok(Message::Insert(m)) = decode_message(&p, false) else {
        panic!()
    };
    let Some(ColumnValue::Text(v)) = m.new.get(0) else {
        panic!()
    };
    assert!(p.as_ptr_range().contains(&v.as_ptr()));
}

#[test]
fn insert_inside_a_stream_block_carries_the_subtransaction_xid() {
    let p = wire(b'I')
        .u32(901)
        .u32(16_396)
        .u8(b'N')
        .u16(1)
        .text(b"1")
        .done();
    check(
        p,
        true,
        Message::Insert(Insert {
            xid: Some(901),
            relation: 16_396,
            new: row(&[ColumnValue::Text(b"1")]),
        }),
    );
}

#[test]
fn update_without_old_tuple_has_only_the_new_row() {
    let p = wire(b'U')
        .u32(16_396)
        .u8(b'N')
        .u16(2)
        .text(b"5")
        .u8(b'u')
        .done();
    check(
        p,
        false,
        Message::Update(Update {
            xid: None,
            relation: 16_396,
            old: None,
            new: row(&[ColumnValue::Text(b"5"), ColumnValue::Unchanged]),
        }),
    );
}

#[test]
fn update_with_a_changed_key_carries_the_old_key() {
    let p = wire(b'U')
        .u32(16_396)
        .u8(b'K')
        .u16(2)
        .text(b"4")
        .u8(b'n')
        .u8(b'N')
        .u16(2)
        .text(b"5")
        .text(b"x")
        .done();
    check(
        p,
        false,
        Message::Update(Update {
            xid: None,
            relation: 16_396,
            old: Some(OldTuple::Key(row(&[
                ColumnValue::Text(b"4"),
                ColumnValue::Null,
            ]))),
            new: row(&[ColumnValue::Text(b"5"), ColumnValue::Text(b"x")]),
        }),
    );
}

#[test]
fn update_with_replica_identity_full_carries_the_old_row() {
    let p = wire(b'U')
        .u32(3)
        .u32(16_396)
        .u8(b'O')
        .u16(1)
        .text(b"old")
        .u8(b'N')
        .u16(1)
        .text(b"new")
        .done();
    check(
        p,
        true,
        Message::Update(Update {
            xid: Some(3),
            relation: 16_396,
            old: Some(OldTuple::Full(row(&[ColumnValue::Text(b"old")]))),
            new: row(&[ColumnValue::Text(b"new")]),
        }),
    );
}

#[test]
fn delete_carries_the_key_or_the_old_row() {
    let p = wire(b'D').u32(16_396).u8(b'K').u16(1).text(b"9").done();
    check(
        p,
        false,
        Message::Delete(Delete {
            xid: None,
            relation: 16_396,
            old: OldTuple::Key(row(&[ColumnValue::Text(b"9")])),
        }),
    );
    let p = wire(b'D').u32(8).u32(16_396).u8(b'O').u16(0).done();
    check(
        p,
        true,
        Message::Delete(Delete {
            xid: Some(8),
            relation: 16_396,
            old: OldTuple::Full(Tuple::default()),
        }),
    );
}

#[test]
fn truncate_lists_relations_and_options() {
    let p = wire(b'T').i32(2).u8(3).u32(10).u32(11).done();
    check(
        p,
        false,
        Message::Truncate(Truncate {
            xid: None,
            options: TruncateOptions {
                cascade: true,
                restart_identity: true,
            },
            relations: vec![10, 11],
        }),
    );
    let p = wire(b'T').u32(77).i32(1).u8(0).u32(10).done();
    check(
        p,
        true,
        Message::Truncate(Truncate {
            xid: Some(77),
            options: TruncateOptions::default(),
            relations: vec![10],
        }),
    );
}

#[test]
fn logical_message_carries_flag_lsn_prefix_and_content() {
    let p = wire(b'M')
        .u8(1)
        .u64(LSN_A)
        .s("pgsync.ddl")
        .i32(5)
        .raw(b"{\"a\"}")
        .done();
    check(
        p,
        false,
        Message::LogicalMessage(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(LSN_A),
            prefix: "pgsync.ddl".into(),
            content: Bytes::from_static(b"{\"a\"}"),
        }),
    );
    let p = wire(b'M').u32(12).u8(0).u64(LSN_A).s("p").i32(0).done();
    check(
        p,
        true,
        Message::LogicalMessage(LogicalMessage {
            xid: Some(12),
            transactional: false,
            lsn: Lsn(LSN_A),
            prefix: "p".into(),
            content: Bytes::new(),
        }),
    );
}

#[test]
fn stream_start_and_stop_bracket_a_block() {
    check(
        wire(b'S').u32(900).u8(1).done(),
        false,
        Message::StreamStart(StreamStart {
            xid: 900,
            first_segment: true,
        }),
    );
    check(
        wire(b'S').u32(900).u8(0).done(),
        false,
        Message::StreamStart(StreamStart {
            xid: 900,
            first_segment: false,
        }),
    );
    check(wire(b'E').done(), true, Message::StreamStop);
}

#[test]
fn the_decoder_reads_xids_only_inside_stream_blocks() {
    let mut d = Decoder::new();
    let insert = |xid: Option<u32>| {
        let w = wire(b'I');
        let w = match xid {
            Some(x) => w.u32(x),
            None => w,
        };
        w.u32(16_396).u8(b'N').u16(0).done()
    };
    assert!(matches!(
        d.decode(&insert(None)),
        Ok(Message::Insert(Insert { xid: None, .. }))
    ));
    d.decode(&wire(b'S').u32(900).u8(1).done()).unwrap();
    assert!(d.in_stream());
    assert!(matches!(
        d.decode(&insert(Some(901))),
        Ok(Message::Insert(Insert { xid: Some(901), .. }))
    ));
    assert_eq!(d.decode(&wire(b'E').done()), Ok(Message::StreamStop));
    assert!(!d.in_stream());
    assert!(matches!(
        d.decode(&insert(None)),
        Ok(Message::Insert(Insert { xid: None, .. }))
    ));
}

#[test]
fn stream_commit_carries_xid_lsns_and_time() {
    let p = wire(b'c')
        .u32(900)
        .u8(0)
        .u64(LSN_A)
        .u64(LSN_B)
        .i64(TS)
        .done();
    check(
        p,
        false,
        Message::StreamCommit(StreamCommit {
            xid: 900,
            commit_lsn: Lsn(LSN_A),
            end_lsn: Lsn(LSN_B),
            commit_time: PgTimestamp(TS),
        }),
    );
}

#[test]
fn stream_abort_names_the_transaction_and_subtransaction() {
    check(
        wire(b'A').u32(900).u32(905).done(),
        false,
        Message::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 905,
            abort: None,
        }),
    );
}

#[test]
fn stream_abort_with_parallel_streaming_carries_abort_lsn_and_time() {
    check(
        wire(b'A').u32(900).u32(900).u64(LSN_A).i64(TS).done(),
        false,
        Message::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 900,
            abort: Some(AbortInfo {
                lsn: Lsn(LSN_A),
                time: PgTimestamp(TS),
            }),
        }),
    );
}

#[test]
fn begin_prepare_carries_lsns_time_xid_and_gid() {
    let p = wire(b'b')
        .u64(LSN_A)
        .u64(LSN_B)
        .i64(TS)
        .u32(743)
        .s("tx-1")
        .done();
    check(
        p,
        false,
        Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(LSN_A),
            end_lsn: Lsn(LSN_B),
            prepare_time: PgTimestamp(TS),
            xid: 743,
            gid: "tx-1".into(),
        }),
    );
}

fn prepare_body() -> Prepare {
    Prepare {
        prepare_lsn: Lsn(LSN_A),
        end_lsn: Lsn(LSN_B),
        prepare_time: PgTimestamp(TS),
        xid: 743,
        gid: "tx-1".into(),
    }
}

#[test]
fn prepare_and_stream_prepare_share_one_layout() {
    let body = |tag| {
        wire(tag)
            .u8(0)
            .u64(LSN_A)
            .u64(LSN_B)
            .i64(TS)
            .u32(743)
            .s("tx-1")
            .done()
    };
    check(body(b'P'), false, Message::Prepare(prepare_body()));
    check(body(b'p'), false, Message::StreamPrepare(prepare_body()));
}

#[test]
fn commit_prepared_carries_lsns_time_xid_and_gid() {
    let p = wire(b'K')
        .u8(0)
        .u64(LSN_A)
        .u64(LSN_B)
        .i64(TS)
        .u32(743)
        .s("tx-1")
        .done();
    check(
        p,
        false,
        Message::CommitPrepared(CommitPrepared {
            commit_lsn: Lsn(LSN_A),
            end_lsn: Lsn(LSN_B),
            commit_time: PgTimestamp(TS),
            xid: 743,
            gid: "tx-1".into(),
        }),
    );
}

#[test]
fn rollback_prepared_carries_both_end_lsns_and_times() {
    let p = wire(b'r')
        .u8(0)
        .u64(LSN_A)
        .u64(LSN_B)
        .i64(TS)
        .i64(TS + 1)
        .u32(743)
        .s("tx-1")
        .done();
    check(
        p,
        false,
        Message::RollbackPrepared(RollbackPrepared {
            prepare_end_lsn: Lsn(LSN_A),
            rollback_end_lsn: Lsn(LSN_B),
            prepare_time: PgTimestamp(TS),
            rollback_time: PgTimestamp(TS + 1),
            xid: 743,
            gid: "tx-1".into(),
        }),
    );
}

#[test]
fn every_tag_maps_to_its_kind_and_back() {
    for tag in 0..=u8::MAX {
        if let Some(k) = MessageKind::from_tag(tag) {
            assert_eq!(k.tag(), tag);
            assert!(!k.name().is_empty());
        }
    }
    assert_eq!(MessageKind::StreamCommit.to_string(), "STREAM COMMIT");
}
