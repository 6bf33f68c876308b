//! Spilling: memory stays within the budget, and what was spilled reads back exactly,
//! across subtransaction aborts and relation changes.

use super::*;
use crate::pgoutput;

/// Runs `msgs` through an assembler with `budget` and one that never spills; both must
/// deliver the same transactions with the same changes. Checks the budget after each push.
#[track_caller]
fn same_as_in_memory(budget: usize, msgs: &[Message]) -> Vec<Transaction> {
    let mut small = assembler(budget);
    let mut big = assembler(usize::MAX);
    let mut out = Vec::new();
    for m in msgs {
        let a = feed(&mut small, [m.clone()]);
        let b = feed(&mut big, [m.clone()]);
        assert!(
            small.memory_used() <= budget,
            "{} bytes held, budget {budget}",
            small.memory_used()
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.into_iter().zip(b) {
            assert_eq!(changes(&x), changes(&y), "xid {}", x.xid);
            // A second read gives the same again.
            assert_eq!(changes(&x), changes(&y));
            assert_eq!(y.spilled_bytes(), 0);
            out.push(x);
        }
    }
    out
}

fn value(i: usize) -> String {
    format!("{i:06}-{}", "x".repeat(i * 37 % 700))
}

#[test]
fn a_transaction_beyond_a_tiny_budget_is_spilled_and_read_back_exactly() {
    let mut msgs = vec![begin(1), relation(USERS, "users", 2)];
    for i in 0..2000 {
        msgs.push(insert(None, USERS, &[&i.to_string(), &value(i)]));
    }
    msgs.push(commit(0x100));
    let txns = same_as_in_memory(1024, &msgs);
    let t = &txns[0];
    assert_eq!(t.len(), 2000);
    assert!(t.spilled_bytes() > 600_000, "{}", t.spilled_bytes());
    assert!(t.memory_bytes() <= 1024);
}

#[test]
fn a_zero_budget_spills_every_change() {
    let mut msgs = vec![begin(1), relation(USERS, "users", 1)];
    msgs.extend((0..50).map(|i| insert(None, USERS, &[&i.to_string()])));
    msgs.push(commit(0x100));
    let txns = same_as_in_memory(0, &msgs);
    assert_eq!(txns[0].memory_bytes(), 0);
    assert_eq!(keys(&txns[0]).len(), 50);
}

#[test]
fn a_streamed_transaction_far_larger_than_the_budget_stays_within_it() {
    let budget = 64 << 10;
    let mut asm = assembler(budget);
    let big = "y".repeat(2000);
    feed(
        &mut asm,
        [relation(USERS, "users", 2), stream_start(900, true)],
    );
    for block in 0..10 {
        if block > 0 {
            feed(&mut asm, [stream_start(900, false)]);
        }
        for i in 0..1000 {
            let key = (block * 1000 + i).to_string();
            asm.push(insert(Some(900), USERS, &[&key, &big])).unwrap();
            assert!(asm.memory_used() <= budget);
        }
        feed(&mut asm, [Message::StreamStop]);
    }
    let txns = feed(&mut asm, [stream_commit(900, 0x100)]);
    let t = &txns[0];
    assert_eq!(t.len(), 10_000);
    assert!(t.spilled_bytes() > 20_000_000);
    let mut n = 0;
    for (i, c) in t.changes().enumerate() {
        let Change::Insert { new, .. } = c.unwrap() else {
            panic!()
        };
        assert_eq!(
            new.get(0),
            Some(ColumnValue::Text(i.to_string().as_bytes()))
        );
        assert_eq!(new.get(1), Some(ColumnValue::Text(big.as_bytes())));
        n += 1;
    }
    assert_eq!(n, 10_000);
}

#[test]
fn a_subtransaction_abort_truncates_the_spill_file() {
    let mut msgs = vec![relation(USERS, "users", 2), stream_start(900, true)];
    let mut k = 0;
    let mut ins = |xid| {
        k += 1;
        insert(Some(xid), USERS, &[&k.to_string(), &value(k)])
    };
    for _ in 0..30 {
        msgs.push(ins(900));
    }
    for _ in 0..30 {
        msgs.push(ins(905));
    }
    msgs.push(Message::StreamStop);
    msgs.push(stream_start(901, true));
    for _ in 0..30 {
        msgs.push(ins(901));
    }
    msgs.push(Message::StreamStop);
    msgs.push(stream_start(900, false));
    for _ in 0..10 {
        msgs.push(ins(906));
    }
    msgs.push(Message::StreamStop);
    msgs.push(stream_abort(900, 905));
    msgs.push(stream_start(900, false));
    for _ in 0..30 {
        msgs.push(ins(900));
    }
    msgs.push(Message::StreamStop);
    msgs.push(stream_commit(901, 0x100));
    msgs.push(stream_commit(900, 0x200));
    for budget in [0, 500, 4000, 20_000] {
        let txns = same_as_in_memory(budget, &msgs);
        assert_eq!(txns[1].len(), 60, "budget {budget}");
        let ks = keys(&txns[1]);
        assert_eq!(ks.first().map(String::as_str), Some("1"));
        assert_eq!(ks[30], "101");
    }
}

#[test]
fn every_kind_of_change_survives_spilling() {
    let t = |v: &[ColumnValue<'_>]| Tuple::from_values(v.iter().copied()).unwrap();
    let msgs = vec![
        begin(1),
        relation(USERS, "users", 2),
        relation(ORDERS, "orders", 2),
        Message::Update(pgoutput::Update {
            xid: None,
            relation: USERS,
            old: Some(OldTuple::Full(t(&[
                ColumnValue::Text(b"1"),
                ColumnValue::Null,
            ]))),
            new: t(&[ColumnValue::Binary(&[0, 1]), ColumnValue::Unchanged]),
        }),
        Message::Delete(pgoutput::Delete {
            xid: None,
            relation: ORDERS,
            old: OldTuple::Key(t(&[ColumnValue::Text(b"9"), ColumnValue::Null])),
        }),
        Message::Truncate(pgoutput::Truncate {
            xid: None,
            options: TruncateOptions {
                cascade: false,
                restart_identity: true,
            },
            relations: vec![ORDERS, USERS],
        }),
        Message::LogicalMessage(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(0x77),
            prefix: "pgsync.ddl".into(),
            content: text("ALTER TABLE users ADD c2 text"),
        }),
        relation(USERS, "users", 3),
        insert(None, USERS, &["1", "2", "3"]),
        commit(0x100),
    ];
    let txns = same_as_in_memory(0, &msgs);
    assert_eq!(txns[0].len(), 5);
}

#[test]
fn a_layout_changed_by_another_transaction_meanwhile_is_not_mixed_up() {
    // 900 streams an insert into a 1-column users; then 901 (not streamed) alters users to 2
    // columns and commits; then 900 goes on with the 1-column layout resent.
    let msgs = vec![
        relation(USERS, "users", 1),
        stream_start(900, true),
        insert(Some(900), USERS, &["a1"]),
        Message::StreamStop,
        begin(901),
        relation(USERS, "users", 2),
        insert(None, USERS, &["b1", "b2"]),
        commit(0x100),
        stream_start(900, false),
        insert(Some(900), USERS, &["a2"]),
        Message::StreamStop,
        stream_commit(900, 0x200),
    ];
    // `a2` arrives while the cache says 2 columns: a width error, as it would be from
    // PostgreSQL only if it failed to resend the layout. With the resend it is fine:
    let mut resent = msgs.clone();
    resent.insert(9, relation(USERS, "users", 1));
    let txns = same_as_in_memory(0, &resent);
    let widths: Vec<usize> = changes(&txns[1])
        .iter()
        .map(|c| match c {
            Change::Insert { relation, .. } => relation.columns.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(widths, [1, 1]);
    let mut asm = assembler(0);
    let e = msgs.into_iter().try_for_each(|m| asm.push(m).map(drop));
    assert!(matches!(e, Err(crate::txn::TxnError::ColumnCount { .. })));
}
