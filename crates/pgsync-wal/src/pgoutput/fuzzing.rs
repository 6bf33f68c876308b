//! The body of the `decode` fuzz target, shared with the property tests so that the same
//! checks run under `cargo fuzz` (nightly) and `cargo test` (stable).
//!
//! It asserts invariants, not input validity: any input may fail to decode, but decoding
//! must not panic, and whatever decodes must encode and decode back to the same message.

use bytes::Bytes;

use super::{decode_message, encode_to_bytes};

/// Decodes `data` as a payload both inside and outside a stream block; every message that
/// decodes must survive an encode/decode round trip unchanged. Panics only on a bug.
pub fn decode_roundtrip(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    for in_stream in [false, true] {
        if let Ok(msg) = decode_message(&payload, in_stream) {
            let encoded = match encode_to_bytes(&msg) {
                Ok(b) => b,
                Err(e) => panic!("decoded {msg:?} but cannot encode it: {e}"),
            };
            match decode_message(&encoded, in_stream) {
                Ok(again) => assert_eq!(again, msg, "round trip changed the message"),
                Err(e) => panic!("re-decoding {msg:?} failed: {e}"),
            }
            if let Some(t) = first_tuple(&msg) {
                // Reading every column of a decoded tuple must stay in bounds.
                assert_eq!(t.iter().count(), t.len());
                assert_eq!(t.values().count(), t.len());
            }
        }
    }
}

fn first_tuple(msg: &super::Message) -> Option<&super::Tuple> {
    match msg {
        super::Message::Insert(m) => Some(&m.new),
        super::Message::Update(m) => Some(&m.new),
        super::Message::Delete(m) => Some(m.old.tuple()),
        _ => None,
    }
}
