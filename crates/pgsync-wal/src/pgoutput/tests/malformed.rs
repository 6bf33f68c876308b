//! Malformed input gives the typed error that says what is wrong, never a panic and never
//! an allocation sized by an unchecked length.

use super::wire;
use crate::pgoutput::*;

fn err(p: &[u8], in_stream: bool) -> DecodeError {
    decode_message(&bytes::Bytes::copy_from_slice(p), in_stream).unwrap_err()
}

#[test]
fn an_empty_payload_is_refused() {
    assert_eq!(err(b"", false), DecodeError::Empty);
}

#[test]
fn an_unknown_tag_is_refused() {
    assert_eq!(err(b"Z", false), DecodeError::UnknownMessage(b'Z'));
}

#[test]
fn every_truncation_of_a_valid_message_is_a_typed_error() {
    let valid = wire(b'U')
        .u32(16_396)
        .u8(b'K')
        .u16(2)
        .text(b"4")
        .u8(b'n')
        .u8(b'N')
        .u16(2)
        .text(b"5")
        .text(b"xyz")
        .done();
    assert!(decode_message(&valid, false).is_ok());
    for cut in 0..valid.len() {
        let e = decode_message(&valid.slice(..cut), false).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Empty | DecodeError::Truncated { .. } | DecodeError::BadLength { .. }
            ),
            "cut at {cut}: {e:?}"
        );
    }
}

#[test]
fn a_column_length_past_the_end_is_out_of_range() {
    let p = wire(b'I')
        .u32(1)
        .u8(b'N')
        .u16(1)
        .u8(b't')
        .i32(1_000_000)
        .raw(b"abc")
        .done();
    assert_eq!(
        decode_message(&p, false),
        Err(DecodeError::BadLength {
            message: MessageKind::Insert,
            field: "tuple column value",
            len: 1_000_000,
            remaining: 3,
        })
    );
}

#[test]
fn a_negative_column_length_is_out_of_range() {
    let p = wire(b'I').u32(1).u8(b'N').u16(1).u8(b'b').i32(-1).done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::BadLength { len: -1, .. })
    ));
}

#[test]
fn a_column_count_larger_than_the_payload_is_refused_before_allocating() {
    // 65535 columns announced, none sent: refused from the count alone.
    let p = wire(b'R')
        .u32(1)
        .s("public")
        .s("t")
        .u8(b'd')
        .u16(u16::MAX)
        .done();
    assert_eq!(
        decode_message(&p, false),
        Err(DecodeError::BadLength {
            message: MessageKind::Relation,
            field: "column count",
            len: 65_535,
            remaining: 0,
        })
    );
    // More tuple columns than bytes: truncated at the first missing column.
    let p = wire(b'I').u32(1).u8(b'N').u16(u16::MAX).done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn a_truncate_relation_count_is_checked_before_allocating() {
    for count in [i32::MAX, -1, 3] {
        let p = wire(b'T').i32(count).u8(0).u32(1).u32(2).done();
        assert!(
            matches!(
                decode_message(&p, false),
                Err(DecodeError::BadLength {
                    message: MessageKind::Truncate,
                    ..
                })
            ),
            "{count}"
        );
    }
}

#[test]
fn an_oversized_message_content_length_is_out_of_range() {
    let p = wire(b'M')
        .u8(1)
        .u64(1)
        .s("p")
        .i32(i32::MAX)
        .raw(b"ab")
        .done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::BadLength {
            field: "content",
            len: 2_147_483_647,
            remaining: 2,
            ..
        })
    ));
}

#[test]
fn unterminated_and_non_utf8_names_are_refused() {
    let p = wire(b'O').u64(1).raw(b"no-nul").done();
    assert_eq!(
        decode_message(&p, false),
        Err(DecodeError::UnterminatedString {
            message: MessageKind::Origin,
            field: "origin name",
        })
    );
    let p = wire(b'O').u64(1).raw(b"\xff\xfe\0").done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::InvalidUtf8 { .. })
    ));
}

#[test]
fn unknown_column_kinds_and_markers_are_refused() {
    let p = wire(b'I').u32(1).u8(b'N').u16(1).u8(b'x').done();
    assert_eq!(
        decode_message(&p, false),
        Err(DecodeError::UnknownColumnKind {
            message: MessageKind::Insert,
            kind: b'x',
        })
    );
    let p = wire(b'I').u32(1).u8(b'K').u16(0).done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::UnexpectedMarker { found: b'K', .. })
    ));
    let p = wire(b'U').u32(1).u8(b'K').u16(0).u8(b'O').u16(0).done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::UnexpectedMarker { found: b'O', .. })
    ));
    let p = wire(b'D').u32(1).u8(b'N').u16(0).done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::UnexpectedMarker { found: b'N', .. })
    ));
    let p = wire(b'R').u32(1).s("s").s("t").u8(b'x').u16(0).done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::UnknownReplicaIdentity { found: b'x', .. })
    ));
}

#[test]
fn non_zero_flags_that_postgres_never_sends_are_refused() {
    let p = wire(b'C').u8(1).u64(1).u64(2).i64(3).done();
    assert_eq!(
        decode_message(&p, false),
        Err(DecodeError::UnsupportedFlags {
            message: MessageKind::Commit,
            flags: 1,
        })
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let p = wire(b'E').u8(0).done();
    assert_eq!(
        decode_message(&p, false),
        Err(DecodeError::TrailingBytes {
            message: MessageKind::StreamStop,
            count: 1,
        })
    );
    // A streamed insert read as if outside a stream block does not fit.
    let p = wire(b'I').u32(7).u32(1).u8(b'N').u16(0).done();
    assert!(decode_message(&p, false).is_err());
    // A stream abort with a partial abort position.
    let p = wire(b'A').u32(1).u32(1).u64(5).done();
    assert!(matches!(
        decode_message(&p, false),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn errors_name_the_message_and_field() {
    let p = wire(b'B').u64(1).done();
    let text = decode_message(&p, false).unwrap_err().to_string();
    assert_eq!(
        text,
        "BEGIN message truncated in commit time: needs 8 more bytes, 0 left"
    );
}
