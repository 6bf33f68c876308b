//! A bounds-checked cursor over one payload: every read checks what is left first, and
//! byte ranges come out as zero-copy [`Bytes`] slices of the payload.

use bytes::Bytes;

use super::error::DecodeError;
use super::messages::MessageKind;
use super::time::PgTimestamp;
use super::tuple::{self, Tuple, TupleScanError};
use crate::Lsn;

pub(crate) struct Reader<'a> {
    payload: &'a Bytes,
    pos: usize,
    message: MessageKind,
}

impl<'a> Reader<'a> {
    /// A reader positioned after the tag byte.
    pub(crate) fn new(payload: &'a Bytes, message: MessageKind) -> Self {
        Self {
            payload,
            pos: 1,
            message,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.payload.len() - self.pos
    }

    fn truncated(&self, field: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            message: self.message,
            field,
            needed,
            remaining: self.remaining(),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        match self.payload[self.pos..].first_chunk::<N>() {
            Some(a) => {
                self.pos += N;
                Ok(*a)
            }
            None => Err(self.truncated(field, N)),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[b]| b)
    }

    #[inline]
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.array(field).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    #[inline]
    pub(crate) fn timestamp(&mut self, field: &'static str) -> Result<PgTimestamp, DecodeError> {
        self.i64(field).map(PgTimestamp)
    }

    /// A flags byte that must be 0.
    pub(crate) fn zero_flags(&mut self) -> Result<(), DecodeError> {
        match self.u8("flags")? {
            0 => Ok(()),
            flags => Err(DecodeError::UnsupportedFlags {
                message: self.message,
                flags,
            }),
        }
    }

    /// A NUL-terminated UTF-8 string (its length is bounded by the payload).
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = &self.payload[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::UnterminatedString {
                message: self.message,
                field,
            });
        };
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.message,
            field,
        })?;
        self.pos += nul + 1;
        Ok(s.to_owned())
    }

    /// `len` bytes where `len` is an Int32 sent just before; checked before slicing.
    pub(crate) fn counted_bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.i32(field)?;
        let remaining = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= remaining => {
                let b = self.payload.slice(self.pos..self.pos + n);
                self.pos += n;
                Ok(b)
            }
            _ => Err(DecodeError::BadLength {
                message: self.message,
                field,
                len: i64::from(len),
                remaining,
            }),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each can still follow, so a
    /// vector of `count` items may be allocated.
    pub(crate) fn check_count(
        &self,
        field: &'static str,
        count: i64,
        min_size: usize,
    ) -> Result<usize, DecodeError> {
        let remaining = self.remaining();
        match usize::try_from(count) {
            Ok(n) if n.checked_mul(min_size).is_some_and(|b| b <= remaining) => Ok(n),
            _ => Err(DecodeError::BadLength {
                message: self.message,
                field,
                len: count,
                remaining,
            }),
        }
    }

    /// A `TupleData`: the count, then the column region as one slice.
    pub(crate) fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let ncols = self.u16("tuple column count")?;
        let start = self.pos;
        let used = tuple::scan(&self.payload[start..], ncols).map_err(|e| match e {
            TupleScanError::Truncated { needed, remaining } => DecodeError::Truncated {
                message: self.message,
                field: "tuple column",
                needed,
                remaining,
            },
            TupleScanError::BadLength { len, remaining } => DecodeError::BadLength {
                message: self.message,
                field: "tuple column value",
                len,
                remaining,
            },
            TupleScanError::UnknownKind(kind) => DecodeError::UnknownColumnKind {
                message: self.message,
                kind,
            },
        })?;
        self.pos = start + used;
        Ok(Tuple::from_checked(
            ncols,
            self.payload.slice(start..self.pos),
        ))
    }

    /// Fails when bytes are left after the last field.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                message: self.message,
                count,
            }),
        }
    }
}
