//! Model-based property test: random interleavings of streamed and plain transactions
//! with subtransaction aborts, under random budgets, against a plain in-memory model of
//! what PostgreSQL's own apply worker would keep.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::txn::fuzzing::assemble;

#[derive(Debug, Clone)]
enum Op {
    /// A stream block of top-level `top` with inserts by (sub)transaction `sub` (0 = top)
    /// carrying values of the given sizes.
    Block {
        top: u8,
        rows: Vec<(u8, u16)>,
    },
    SubAbort {
        top: u8,
        sub: u8,
    },
    Abort {
        top: u8,
    },
    Commit {
        top: u8,
    },
    /// A whole non-streamed transaction with this many rows.
    Plain {
        rows: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let top = 0u8..3;
    prop_oneof![
        4 => (top.clone(), proptest::collection::vec((0u8..4, 0u16..600), 1..12))
            .prop_map(|(top, rows)| Op::Block { top, rows }),
        2 => (top.clone(), 1u8..4).prop_map(|(top, sub)| Op::SubAbort { top, sub }),
        1 => top.clone().prop_map(|top| Op::Abort { top }),
        2 => top.prop_map(|top| Op::Commit { top }),
        1 => (0u8..5).prop_map(|rows| Op::Plain { rows }),
    ]
}

fn xid(top: u8, sub: u8) -> u32 {
    let top = 900 + u32::from(top);
    if sub == 0 {
        top
    } else {
        top * 10 + u32::from(sub)
    }
}

/// The messages for `ops`, and the (xid, keys) the model expects, in commit order.
fn program(ops: &[Op]) -> (Vec<Message>, Vec<(u32, Vec<String>)>) {
    let mut msgs = vec![relation(USERS, "users", 2)];
    let mut open: BTreeMap<u8, Vec<(u32, String)>> = BTreeMap::new();
    let mut expected = Vec::new();
    let mut n = 0u32;
    let mut key = |size: u16| {
        n += 1;
        (n.to_string(), "v".repeat(usize::from(size)))
    };
    for op in ops {
        match op {
            Op::Block { top, rows } => {
                let first = !open.contains_key(top);
                let kept = open.entry(*top).or_default();
                msgs.push(stream_start(xid(*top, 0), first));
                for (sub, size) in rows {
                    let (k, v) = key(*size);
                    msgs.push(insert(Some(xid(*top, *sub)), USERS, &[&k, &v]));
                    kept.push((xid(*top, *sub), k));
                }
                msgs.push(Message::StreamStop);
            }
            Op::SubAbort { top, sub } => {
                if let Some(kept) = open.get_mut(top) {
                    msgs.push(stream_abort(xid(*top, 0), xid(*top, *sub)));
                    if let Some(at) = kept.iter().position(|(x, _)| *x == xid(*top, *sub)) {
                        kept.truncate(at);
                    }
                }
            }
            Op::Abort { top } => {
                if open.remove(top).is_some() {
                    msgs.push(stream_abort(xid(*top, 0), xid(*top, 0)));
                }
            }
            Op::Commit { top } => {
                if let Some(kept) = open.remove(top) {
                    msgs.push(stream_commit(xid(*top, 0), 0x1000 + expected.len() as u64));
                    expected.push((xid(*top, 0), kept.into_iter().map(|(_, k)| k).collect()));
                }
            }
            Op::Plain { rows } => {
                msgs.push(begin(1));
                let mut ks = Vec::new();
                for _ in 0..*rows {
                    let (k, v) = key(10);
                    msgs.push(insert(None, USERS, &[&k, &v]));
                    ks.push(k);
                }
                msgs.push(commit(0x10));
                expected.push((1, ks));
            }
        }
    }
    (msgs, expected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn assembly_matches_the_model_under_any_budget(
        ops in proptest::collection::vec(op(), 1..40),
        budget in prop_oneof![Just(0usize), Just(300), 0usize..5000, Just(usize::MAX)],
    ) {
        let (msgs, expected) = program(&ops);
        let mut asm = assembler(budget);
        let mut got = Vec::new();
        for m in msgs {
            if let Some(Assembled::Transaction(t)) = asm.push(m).unwrap() {
                got.push((t.xid, keys(&t)));
            }
            prop_assert!(asm.memory_used() <= budget);
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn the_assembler_never_panics_on_arbitrary_payloads(
        data in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        assemble(&data);
    }

    #[test]
    fn the_assembler_never_panics_on_damaged_valid_streams(
        ops in proptest::collection::vec(op(), 1..10),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let (msgs, _) = program(&ops);
        let mut data = Vec::new();
        for m in &msgs {
            let p = crate::pgoutput::encode_to_bytes(m).unwrap();
            let Ok(len) = u8::try_from(p.len()) else { continue };
            data.push(len);
            data.extend_from_slice(&p);
        }
        for (at, byte) in flips {
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = byte;
            }
        }
        assemble(&data);
    }
}
