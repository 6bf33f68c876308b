//! Why a pgoutput payload could not be decoded.
//!
//! Every way a payload can be malformed has its own variant, naming the message and the
//! field, so a corrupt or unexpected stream is reported precisely instead of panicking or
//! being half-applied. None of these is retryable: the same bytes fail the same way.

use super::messages::MessageKind;

/// A malformed pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload has no bytes at all.
    #[error("empty pgoutput message")]
    Empty,
    /// The first byte is not a known message type.
    #[error("unknown pgoutput message type {0:#04x}")]
    UnknownMessage(u8),
    /// The payload ends inside a field.
    #[error("{message} message truncated in {field}: needs {needed} more bytes, {remaining} left")]
    Truncated {
        /// The message being decoded.
        message: MessageKind,
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the payload.
        remaining: usize,
    },
    /// A length or count is negative or larger than what is left of the payload.
    #[error("{message} message: {field} length {len} is out of range ({remaining} bytes left)")]
    BadLength {
        /// The message being decoded.
        message: MessageKind,
        /// The length field.
        field: &'static str,
        /// The length as sent.
        len: i64,
        /// Bytes left in the payload.
        remaining: usize,
    },
    /// A string field has no terminating NUL before the payload ends.
    #[error("{message} message: {field} is not NUL-terminated")]
    UnterminatedString {
        /// The message being decoded.
        message: MessageKind,
        /// The string field.
        field: &'static str,
    },
    /// A name is not valid UTF-8.
    #[error("{message} message: {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The message being decoded.
        message: MessageKind,
        /// The string field.
        field: &'static str,
    },
    /// A tuple column kind is not `n`, `u`, `t` or `b`.
    #[error("{message} message: unknown tuple column kind {kind:#04x}")]
    UnknownColumnKind {
        /// The message being decoded.
        message: MessageKind,
        /// The kind byte.
        kind: u8,
    },
    /// A marker byte (`N`, `K`, `O`) is not one this message allows here.
    #[error("{message} message: expected {expected}, found {found:#04x}")]
    UnexpectedMarker {
        /// The message being decoded.
        message: MessageKind,
        /// What was allowed.
        expected: &'static str,
        /// What was found.
        found: u8,
    },
    /// A Relation message names an unknown replica identity.
    #[error("{message} message: unknown replica identity {found:#04x}")]
    UnknownReplicaIdentity {
        /// The message being decoded.
        message: MessageKind,
        /// The byte sent.
        found: u8,
    },
    /// A flags byte that PostgreSQL always sends as 0 is not 0 (a newer protocol?).
    #[error("{message} message: unsupported flags {flags:#04x}")]
    UnsupportedFlags {
        /// The message being decoded.
        message: MessageKind,
        /// The flags sent.
        flags: u8,
    },
    /// Bytes are left over after the last field.
    #[error("{message} message: {count} unexpected trailing bytes")]
    TrailingBytes {
        /// The message decoded.
        message: MessageKind,
        /// How many bytes are left.
        count: usize,
    },
}
