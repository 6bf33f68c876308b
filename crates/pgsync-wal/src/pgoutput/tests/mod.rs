//! Decoder tests: every message kind against bytes laid out by hand from PostgreSQL's
//! message formats (so the encoder cannot hide a decoder mistake), malformed input, and
//! property tests (round trips, arbitrary bytes).

mod kinds;
mod malformed;
mod props;
pub(crate) mod strategies;

use bytes::{BufMut, Bytes, BytesMut};

/// Builds a payload field by field, big-endian like the wire.
#[derive(Default)]
pub(crate) struct Wire(BytesMut);

pub(crate) fn wire(tag: u8) -> Wire {
    let mut w = Wire::default();
    w.0.put_u8(tag);
    w
}

impl Wire {
    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.put_u8(v);
        self
    }
    pub(crate) fn u16(mut self, v: u16) -> Self {
        self.0.put_u16(v);
        self
    }
    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.put_u32(v);
        self
    }
    pub(crate) fn i32(mut self, v: i32) -> Self {
        self.0.put_i32(v);
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.put_u64(v);
        self
    }
    pub(crate) fn i64(mut self, v: i64) -> Self {
        self.0.put_i64(v);
        self
    }
    pub(crate) fn s(mut self, v: &str) -> Self {
        self.0.put_slice(v.as_bytes());
        self.0.put_u8(0);
        self
    }
    pub(crate) fn raw(mut self, v: &[u8]) -> Self {
        self.0.put_slice(v);
        self
    }
    pub(crate) fn text(self, v: &[u8]) -> Self {
        let len = i32::try_from(v.len()).unwrap();
        self.u8(b't').i32(len).raw(v)
    }
    pub(crate) fn done(self) -> Bytes {
        self.0.freeze()
    }
}
