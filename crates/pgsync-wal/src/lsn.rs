//! Log sequence numbers: a 64-bit position in the WAL, written `X/Y` (two hex halves).
//!
//! Progress is shared between the stream reader (which reports feedback) and the applier
//! (which commits), so [`AtomicLsn`] offers a monotonic maximum: the confirmed position
//! only ever moves forward, whichever task updates it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A WAL position.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`, "no position" in PostgreSQL's functions.
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is `0/0`.
    pub fn is_invalid(self) -> bool {
        self.0 == 0
    }

    /// `self + bytes`, or `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// `self - bytes`, or `None` below zero.
    pub fn checked_sub(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_sub(bytes).map(Lsn)
    }

    /// Bytes from `earlier` to `self`, 0 if `earlier` is ahead.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// The text is not `X/Y` with two hex numbers of at most 8 digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an LSN (expected two hex numbers like 16/B374D848)")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 {
                return Err(err());
            }
            u32::from_str_radix(h, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(l: Lsn) -> Self {
        l.0
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An LSN shared between tasks that only ever moves forward.
#[derive(Debug, Default)]
pub struct AtomicLsn(AtomicU64);

impl AtomicLsn {
    /// Starts at `lsn`.
    pub fn new(lsn: Lsn) -> Self {
        Self(AtomicU64::new(lsn.0))
    }

    /// The current value.
    pub fn load(&self) -> Lsn {
        Lsn(self.0.load(Ordering::Acquire))
    }

    /// Raises the value to `lsn` if that is ahead; returns the value before.
    pub fn fetch_max(&self, lsn: Lsn) -> Lsn {
        Lsn(self.0.fetch_max(lsn.0, Ordering::AcqRel))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn display_and_parse_use_postgres_notation() {
        let lsn = Lsn(0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), lsn);
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::INVALID);
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), lsn);
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "1",
            "1/",
            "/1",
            "1/2/3",
            "G/0",
            "123456789/0",
            "-1/0",
            " 1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(0).checked_sub(1), None);
        assert_eq!(Lsn(10).bytes_since(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_since(Lsn(10)), 0);
    }

    #[test]
    fn the_atomic_only_moves_forward() {
        let a = AtomicLsn::new(Lsn(100));
        a.fetch_max(Lsn(50));
        assert_eq!(a.load(), Lsn(100));
        a.fetch_max(Lsn(200));
        assert_eq!(a.load(), Lsn(200));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let json = serde_json::to_string(&Lsn(0x1_0000_0002)).unwrap();
        assert_eq!(json, "\"1/2\"");
        assert_eq!(
            serde_json::from_str::<Lsn>(&json).unwrap(),
            Lsn(0x1_0000_0002)
        );
    }

    proptest! {
        #[test]
        fn text_roundtrips(v: u64) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }
    }
}
