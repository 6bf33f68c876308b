//! Property tests: arbitrary messages survive encode + decode; arbitrary bytes and
//! arbitrary damage to valid payloads never panic.

use bytes::Bytes;
use proptest::prelude::*;

use super::strategies::message;
use crate::pgoutput::fuzzing::decode_roundtrip;
use crate::pgoutput::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encoding_then_decoding_gives_the_same_message((msg, in_stream) in message()) {
        let bytes = encode_to_bytes(&msg).unwrap();
        prop_assert_eq!(decode_message(&bytes, in_stream), Ok(msg));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_roundtrip(&data);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_tag_never_panic(
        tag in proptest::sample::select(b"BCORYIUDTMSEcAbPKrp".to_vec()),
        data in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut p = vec![tag];
        p.extend_from_slice(&data);
        decode_roundtrip(&p);
    }

    #[test]
    fn damaged_valid_messages_never_panic(
        (msg, _) in message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let bytes = encode_to_bytes(&msg).unwrap();
        let mut damaged = bytes.to_vec();
        if !damaged.is_empty() {
            let i = flip.index(damaged.len());
            damaged[i] = byte;
        }
        decode_roundtrip(&damaged);
        let truncated = &bytes[..cut.index(bytes.len().max(1)).min(bytes.len())];
        decode_roundtrip(truncated);
    }

    #[test]
    fn every_strict_prefix_of_a_message_is_a_typed_error((msg, in_stream) in message()) {
        let bytes = encode_to_bytes(&msg).unwrap();
        for cut in 0..bytes.len() {
            let prefix = Bytes::copy_from_slice(&bytes[..cut]);
            // A Stream Abort cut exactly before its optional abort position is still valid.
            if let Ok(Message::StreamAbort(_)) = decode_message(&prefix, in_stream) {
                continue;
            }
            prop_assert!(decode_message(&prefix, in_stream).is_err());
        }
    }
}
