//! Column values as statement parameters and as COPY rows, without converting them.
//!
//! pgoutput sends values in their text (or binary) form. Parsing them in Rust only to have
//! tokio-postgres serialise them again would be slow and lossy, so a [`Param`] hands the
//! received bytes to the server as they came, in the same format (`ToSql::encode_format`),
//! and the server's own input function parses them — bit-exact for every type.

use bytes::{BufMut, BytesMut};
use pgsync_wal::pgoutput::ColumnValue;
use postgres_types::{Format, IsNull, ToSql, Type, to_sql_checked};

/// One parameter: null, or bytes in text or binary form.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Null,
    Text(&'a [u8]),
    Binary(&'a [u8]),
    /// A bigint computed by the applier (sent in binary).
    Int8(i64),
}

impl<'a> Param<'a> {
    /// The parameter for a column value; `None` for an unchanged TOAST value, which must
    /// never be written.
    pub(crate) fn from_column(v: ColumnValue<'a>) -> Option<Self> {
        match v {
            ColumnValue::Null => Some(Param::Null),
            ColumnValue::Text(b) => Some(Param::Text(b)),
            ColumnValue::Binary(b) => Some(Param::Binary(b)),
            ColumnValue::Unchanged => None,
        }
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(b) | Param::Binary(b) => {
                out.put_slice(b);
                Ok(IsNull::No)
            }
            Param::Int8(v) => {
                out.put_i64(*v);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Param::Binary(_) | Param::Int8(_) => Format::Binary,
            Param::Null | Param::Text(_) => Format::Text,
        }
    }

    to_sql_checked!();
}

/// Appends one value in `COPY ... (FORMAT text)` form: `\N` for null, and the text with
/// backslash, newline, carriage return and tab escaped.
pub(crate) fn copy_text_value(out: &mut BytesMut, value: &[u8]) {
    let mut start = 0;
    for (i, &b) in value.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.put_slice(&value[start..i]);
        out.put_slice(esc);
        start = i + 1;
    }
    out.put_slice(&value[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_exactly_the_special_bytes() {
        let mut out = BytesMut::new();
        copy_text_value(&mut out, b"a\\b\tc\nd\re");
        assert_eq!(&out[..], b"a\\\\b\\tc\\nd\\re");
        let mut out = BytesMut::new();
        copy_text_value(&mut out, "plain ü".as_bytes());
        assert_eq!(&out[..], "plain ü".as_bytes());
    }

    #[test]
    fn params_keep_their_format() {
        assert!(matches!(
            Param::Text(b"1").encode_format(&Type::INT4),
            Format::Text
        ));
        assert!(matches!(
            Param::Binary(b"\0\0\0\x01").encode_format(&Type::INT4),
            Format::Binary
        ));
        assert!(Param::from_column(ColumnValue::Unchanged).is_none());
    }
}
