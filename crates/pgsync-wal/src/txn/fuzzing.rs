//! The body of the `assemble` fuzz target, shared with the property tests.
//!
//! The input is cut into payloads (`u8` length, then that many bytes) and fed through an
//! assembler with a tiny memory budget, so that spilling, truncation and re-reading are all
//! exercised. Any error is fine; a panic is a bug.

use bytes::Bytes;

use super::{Assembled, Assembler, AssemblerConfig};

/// Feeds `data` to an assembler as a sequence of payloads; reads every transaction it
/// completes twice and checks both reads agree. Panics only on a bug.
pub fn assemble(data: &[u8]) {
    let mut asm = Assembler::new(AssemblerConfig {
        memory_budget: 256,
        ..AssemblerConfig::default()
    });
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        match asm.push_payload(&Bytes::copy_from_slice(payload)) {
            Ok(Some(Assembled::Transaction(t))) => {
                let read = || match t.changes().collect::<Result<Vec<_>, _>>() {
                    Ok(changes) => changes,
                    Err(e) => panic!("reading back {t:?} failed: {e}"),
                };
                let first = read();
                assert_eq!(first.len(), t.len());
                assert_eq!(first, read(), "two reads of one transaction differ");
            }
            Ok(_) => {}
            Err(_) => asm.reset(),
        }
    }
}
