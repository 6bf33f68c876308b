//! Arbitrary bytes as one pgoutput payload, in and out of a stream block: no panic, and
//! whatever decodes survives an encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgsync_wal::pgoutput::fuzzing::decode_roundtrip(data);
});
