//! Arbitrary bytes cut into a sequence of payloads and fed to a transaction assembler with
//! a tiny memory budget (spilling, truncation, re-reading): no panic, and every transaction
//! reads back the same twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgsync_wal::txn::fuzzing::assemble(data);
});
