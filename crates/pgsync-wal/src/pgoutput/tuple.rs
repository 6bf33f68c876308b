//! Row data (`TupleData`), kept as one slice of the received payload.
//!
//! ```text
//! Int16 ncols, then per column:  'n'                      null
//!                                'u'                      unchanged TOAST value (not sent)
//!                                't' Int32 len, len bytes text form
//!                                'b' Int32 len, len bytes binary form
//! ```
//!
//! Decoding walks the columns once to check every kind byte and length against the
//! payload, then keeps the whole region as a single [`Bytes`] (one reference-count bump, no
//! per-column allocation). Reading columns walks the checked region again; values are
//! borrowed slices, or zero-copy [`Bytes`] with [`Tuple::values`].

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// One column of a row, borrowed from its [`Tuple`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnValue<'a> {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOAST value that was not sent; never write it.
    Unchanged,
    /// `t`: the value's text form.
    Text(&'a [u8]),
    /// `b`: the value's binary (`send` function) form.
    Binary(&'a [u8]),
}

/// One column of a row, holding a zero-copy slice of the payload.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An unchanged TOAST value that was not sent.
    Unchanged,
    /// Text form.
    Text(Bytes),
    /// Binary form.
    Binary(Bytes),
}

impl Value {
    /// Borrows the value.
    pub fn as_column(&self) -> ColumnValue<'_> {
        match self {
            Value::Null => ColumnValue::Null,
            Value::Unchanged => ColumnValue::Unchanged,
            Value::Text(b) => ColumnValue::Text(b),
            Value::Binary(b) => ColumnValue::Binary(b),
        }
    }
}

/// The columns of one row, in the order of the relation's columns.
///
/// Always well-formed: a `Tuple` is only made by the decoder (after checking every length)
/// or by [`Tuple::from_values`].
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Tuple {
    ncols: u16,
    /// The column region, just after the Int16 count.
    data: Bytes,
}

/// Why a column region is malformed; the decoder adds the message context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TupleScanError {
    /// The region ends before the column does.
    Truncated { needed: usize, remaining: usize },
    /// A length is negative or runs past the end.
    BadLength { len: i64, remaining: usize },
    /// Not one of `n`, `u`, `t`, `b`.
    UnknownKind(u8),
}

/// Checks `ncols` columns at the start of `buf`; returns how many bytes they take.
pub(crate) fn scan(buf: &[u8], ncols: u16) -> Result<usize, TupleScanError> {
    let mut pos = 0usize;
    for _ in 0..ncols {
        let Some(&kind) = buf.get(pos) else {
            return Err(TupleScanError::Truncated {
                needed: 1,
                remaining: 0,
            });
        };
        pos += 1;
        match kind {
            b'n' | b'u' => {}
            b't' | b'b' => {
                let rest = &buf[pos..];
                let Some(len) = rest.first_chunk::<4>() else {
                    return Err(TupleScanError::Truncated {
                        needed: 4,
                        remaining: rest.len(),
                    });
                };
                let len = i32::from_be_bytes(*len);
                let remaining = rest.len() - 4;
                match usize::try_from(len) {
                    Ok(n) if n <= remaining => pos += 4 + n,
                    _ => {
                        return Err(TupleScanError::BadLength {
                            len: i64::from(len),
                            remaining,
                        });
                    }
                }
            }
            other => return Err(TupleScanError::UnknownKind(other)),
        }
    }
    Ok(pos)
}

impl Tuple {
    /// A tuple over a region already checked by [`scan`].
    pub(crate) fn from_checked(ncols: u16, data: Bytes) -> Self {
        Self { ncols, data }
    }

    /// Encodes `values` as a tuple (for tests, fuzzing and spill files). `None` when there
    /// are more than 65535 columns or a value is longer than `i32::MAX` bytes.
    pub fn from_values<'a>(values: impl IntoIterator<Item = ColumnValue<'a>>) -> Option<Self> {
        let mut data = BytesMut::new();
        let mut ncols: u16 = 0;
        for v in values {
            ncols = ncols.checked_add(1)?;
            match v {
                ColumnValue::Null => data.put_u8(b'n'),
                ColumnValue::Unchanged => data.put_u8(b'u'),
                ColumnValue::Text(b) | ColumnValue::Binary(b) => {
                    let kind = if matches!(v, ColumnValue::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    };
                    data.put_u8(kind);
                    data.put_i32(i32::try_from(b.len()).ok()?);
                    data.put_slice(b);
                }
            }
        }
        Some(Self {
            ncols,
            data: data.freeze(),
        })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        usize::from(self.ncols)
    }

    /// Whether the tuple has no columns.
    pub fn is_empty(&self) -> bool {
        self.ncols == 0
    }

    /// The encoded column region (without the Int16 count), as on the wire.
    pub fn raw(&self) -> &Bytes {
        &self.data
    }

    /// The columns, borrowed.
    pub fn iter(&self) -> TupleIter<'_> {
        TupleIter {
            buf: &self.data,
            left: self.ncols,
        }
    }

    /// The column at `index` (walks the columns before it).
    pub fn get(&self, index: usize) -> Option<ColumnValue<'_>> {
        self.iter().nth(index)
    }

    /// The columns as zero-copy [`Bytes`] slices of the payload.
    pub fn values(&self) -> impl Iterator<Item = Value> + '_ {
        self.iter().map(|c| match c {
            ColumnValue::Null => Value::Null,
            ColumnValue::Unchanged => Value::Unchanged,
            ColumnValue::Text(s) => Value::Text(self.data.slice_ref(s)),
            ColumnValue::Binary(s) => Value::Binary(self.data.slice_ref(s)),
        })
    }

    /// Whether any column is an unchanged TOAST value.
    pub fn has_unchanged(&self) -> bool {
        self.iter().any(|c| c == ColumnValue::Unchanged)
    }
}

impl<'a> IntoIterator for &'a Tuple {
    type Item = ColumnValue<'a>;
    type IntoIter = TupleIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over the columns of a [`Tuple`].
#[derive(Debug, Clone)]
pub struct TupleIter<'a> {
    buf: &'a [u8],
    left: u16,
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = ColumnValue<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        // The region was checked when the tuple was made; a failed `get` below can only
        // mean a bug, and ends the iteration rather than panicking.
        self.left = self.left.checked_sub(1)?;
        let (&kind, rest) = self.buf.split_first()?;
        match kind {
            b'n' => {
                self.buf = rest;
                Some(ColumnValue::Null)
            }
            b'u' => {
                self.buf = rest;
                Some(ColumnValue::Unchanged)
            }
            _ => {
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
                let value = rest.get(..len)?;
                self.buf = rest.get(len..)?;
                Some(if kind == b't' {
                    ColumnValue::Text(value)
                } else {
                    ColumnValue::Binary(value)
                })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

/// At most this many bytes of a value are shown by `Debug`.
const DEBUG_PREVIEW: usize = 32;

fn preview(f: &mut fmt::Formatter<'_>, tag: &str, b: &[u8]) -> fmt::Result {
    let shown = &b[..b.len().min(DEBUG_PREVIEW)];
    let more = if b.len() > DEBUG_PREVIEW { "…" } else { "" };
    write!(
        f,
        "{tag}({:?}{more}, {} bytes)",
        String::from_utf8_lossy(shown),
        b.len()
    )
}

impl fmt::Debug for ColumnValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnValue::Null => f.write_str("Null"),
            ColumnValue::Unchanged => f.write_str("Unchanged"),
            ColumnValue::Text(b) => preview(f, "Text", b),
            ColumnValue::Binary(b) => preview(f, "Binary", b),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_column().fmt(f)
    }
}

impl fmt::Debug for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_in_order_as_slices_of_one_buffer() {
        let t = Tuple::from_values([
            ColumnValue::Text(b"42"),
            ColumnValue::Null,
            ColumnValue::Unchanged,
            ColumnValue::Binary(&[0, 1, 2]),
            ColumnValue::Text(b""),
        ])
        .unwrap();
        assert_eq!(t.len(), 5);
        let cols: Vec<_> = t.iter().collect();
        assert_eq!(
            cols,
            [
                ColumnValue::Text(b"42"),
                ColumnValue::Null,
                ColumnValue::Unchanged,
                ColumnValue::Binary(&[0, 1, 2]),
                ColumnValue::Text(b""),
            ]
        );
        assert_eq!(t.get(3), Some(ColumnValue::Binary(&[0, 1, 2])));
        assert_eq!(t.get(5), None);
        assert!(t.has_unchanged());
        let owned: Vec<Value> = t.values().collect();
        let Value::Text(ref v) = owned[0] else {
            panic!("{owned:?}")
        };
        // Zero-copy: the value points into the tuple's own buffer.
        assert!(t.raw().as_ptr_range().contains(&v.as_ptr()));
    }

    #[test]
    fn scan_reports_where_a_region_is_malformed() {
        assert_eq!(scan(b"n", 1), Ok(1));
        assert_eq!(
            scan(b"", 1),
            Err(TupleScanError::Truncated {
                needed: 1,
                remaining: 0
            })
        );
        assert_eq!(
            scan(b"t\0\0", 1),
            Err(TupleScanError::Truncated {
                needed: 4,
                remaining: 2
            })
        );
        assert_eq!(
            scan(b"t\0\0\0\x05abc", 1),
            Err(TupleScanError::BadLength {
                len: 5,
                remaining: 3
            })
        );
        assert_eq!(
            scan(b"b\xff\xff\xff\xff", 1),
            Err(TupleScanError::BadLength {
                len: -1,
                remaining: 0
            })
        );
        assert_eq!(scan(b"x", 1), Err(TupleScanError::UnknownKind(b'x')));
    }

    #[test]
    fn debug_shows_a_short_preview_of_long_values() {
        let long = vec![b'a'; 100];
        let t = Tuple::from_values([ColumnValue::Text(&long)]).unwrap();
        let s = format!("{t:?}");
        assert!(s.contains("100 bytes"), "{s}");
        assert!(s.len() < 80, "{s}");
    }
}
