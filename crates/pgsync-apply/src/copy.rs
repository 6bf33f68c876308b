//! Inserts through `COPY ... FROM STDIN`: rows in the form the source sent them, text or
//! binary, streamed to the destination as they are read.
//!
//! Within one destination transaction, inserts into a table commute with changes to every
//! other table (no user triggers or FK checks fire under `session_replication_role =
//! replica`, and unique checks are per table). So the applier keeps each table's inserts
//! of a group in an [`InsertRun`] while statements for other tables go on, and sends the
//! run when something touches that table, at a TRUNCATE, or at the end of the group:
//!
//! ```text
//!  group:  U(acc) I(hist) U(acc) I(hist) ... U(acc) I(hist)
//!  wire:   U U ... U (pipelined)   COPY hist (all its rows)   setup   COMMIT
//! ```
//! A run that grows past a few thousand rows becomes an [`ActiveCopy`]: the COPY is opened
//! and rows are sent in 256 kB pieces as they are read (from memory or the transaction's
//! spill file), so one 1M-row `INSERT ... SELECT` is one COPY, the destination works while
//! the next rows are read, and memory stays bounded.
//!
//! Text rows use COPY's text format (pgoutput's text output is exactly what the type's
//! input function reads); binary rows (`binary = true` streams) use COPY BINARY, whose
//! field format is the type's `send` output, which is what pgoutput sends in binary mode.

use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt as _;
use pgsync_wal::pgoutput::ColumnValue;
use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation, Tuple};
use tokio_postgres::{Client, CopyInSink, Statement};

use crate::param::copy_text_value;

/// Bytes gathered before they are handed to the connection.
const SEND_BYTES: usize = 256 << 10;

/// `PGCOPY\n\377\r\n\0`, flags, header extension length.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// COPY's format for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CopyFormat {
    Text,
    Binary,
}

/// Which columns an insert writes and in which format; inserts of one shape share a COPY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RowShape {
    /// Per source column: whether it is written (not an unchanged TOAST value).
    pub(crate) present: Vec<bool>,
    pub(crate) format: CopyFormat,
}

impl RowShape {
    /// The shape of `row`; `None` when it mixes text and binary values (it then goes
    /// through a statement, which takes each parameter in its own format).
    pub(crate) fn of(row: &Tuple) -> Option<Self> {
        let mut text = false;
        let mut binary = false;
        let present = row
            .iter()
            .map(|v| {
                match v {
                    ColumnValue::Text(_) => text = true,
                    ColumnValue::Binary(_) => binary = true,
                    ColumnValue::Null | ColumnValue::Unchanged => {}
                }
                v != ColumnValue::Unchanged
            })
            .collect();
        let format = match (text, binary) {
            (true, true) => return None,
            (_, false) => CopyFormat::Text,
            (false, true) => CopyFormat::Binary,
        };
        Some(Self { present, format })
    }

    /// Indexes of the written columns.
    pub(crate) fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.present
            .iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .map(|(i, _)| i)
    }
}

/// Appends `row` in `format` (its shape was checked with [`RowShape::of`]).
pub(crate) fn encode_row(out: &mut BytesMut, row: &Tuple, format: CopyFormat) {
    let values = row.iter().filter(|v| *v != ColumnValue::Unchanged);
    match format {
        CopyFormat::Text => {
            for (n, v) in values.enumerate() {
                if n > 0 {
                    out.put_u8(b'\t');
                }
                match v {
                    ColumnValue::Text(b) | ColumnValue::Binary(b) => copy_text_value(out, b),
                    ColumnValue::Null | ColumnValue::Unchanged => out.put_slice(b"\\N"),
                }
            }
            out.put_u8(b'\n');
        }
        CopyFormat::Binary => {
            let count_at = out.len();
            out.put_i16(0);
            let mut count: i16 = 0;
            for v in values {
                count = count.saturating_add(1);
                match v {
                    ColumnValue::Text(b) | ColumnValue::Binary(b) => {
                        // Lengths came off the wire as Int32, so they fit.
                        out.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                        out.put_slice(b);
                    }
                    ColumnValue::Null | ColumnValue::Unchanged => out.put_i32(-1),
                }
            }
            out[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
        }
    }
}

/// Inserts into one table waiting to be sent, in order.
#[derive(Debug)]
pub(crate) struct InsertRun {
    pub(crate) relation: Arc<Relation>,
    pub(crate) shape: RowShape,
    /// Each insert with the end LSN of its transaction.
    pub(crate) rows: Vec<(Change, Lsn)>,
    /// Approximate bytes held.
    pub(crate) bytes: usize,
}

impl InsertRun {
    pub(crate) fn new(relation: Arc<Relation>, shape: RowShape) -> Self {
        Self {
            relation,
            shape,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// Whether an insert of `relation` (this layout) and `shape` may join.
    pub(crate) fn accepts(&self, relation: &Arc<Relation>, shape: &RowShape) -> bool {
        Arc::ptr_eq(&self.relation, relation) && self.shape == *shape
    }

    /// Adds an insert; returns the bytes it holds.
    pub(crate) fn push(&mut self, change: Change, end_lsn: Lsn, row_bytes: usize) -> usize {
        let size = row_bytes + 64;
        self.rows.push((change, end_lsn));
        self.bytes += size;
        size
    }
}

/// A COPY in progress: rows are encoded into `buf` and sent in [`SEND_BYTES`] pieces.
pub(crate) struct ActiveCopy {
    pub(crate) relation: Arc<Relation>,
    pub(crate) shape: RowShape,
    /// End LSN of the transaction of the first row (for conflict reports).
    pub(crate) first_lsn: Lsn,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
}

impl std::fmt::Debug for ActiveCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveCopy")
            .field("relation", &self.relation.name)
            .field("format", &self.shape.format)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl ActiveCopy {
    /// Starts `statement` (a prepared `COPY ... FROM STDIN`); `begin`, when given, is sent
    /// first in the same flight (the group's `BEGIN`).
    pub(crate) async fn open(
        client: &Client,
        statement: &Statement,
        begin: bool,
        relation: Arc<Relation>,
        shape: RowShape,
        first_lsn: Lsn,
    ) -> Result<Self, tokio_postgres::Error> {
        let sink = if begin {
            let (b, sink) = futures_util::future::join(
                client.batch_execute("BEGIN"),
                client.copy_in(statement),
            )
            .await;
            b?;
            sink?
        } else {
            client.copy_in(statement).await?
        };
        let mut buf = BytesMut::with_capacity(SEND_BYTES + (SEND_BYTES >> 2));
        if shape.format == CopyFormat::Binary {
            buf.put_slice(BINARY_HEADER);
        }
        Ok(Self {
            relation,
            shape,
            first_lsn,
            sink: Box::pin(sink),
            buf,
        })
    }

    /// Whether an insert of `relation` (this layout) and `shape` may join.
    pub(crate) fn accepts(&self, relation: &Arc<Relation>, shape: &RowShape) -> bool {
        Arc::ptr_eq(&self.relation, relation) && self.shape == *shape
    }

    /// Adds one row, sending what is gathered once it is large enough.
    pub(crate) async fn push(&mut self, row: &Tuple) -> Result<(), tokio_postgres::Error> {
        encode_row(&mut self.buf, row, self.shape.format);
        if self.buf.len() >= SEND_BYTES {
            let piece = self.buf.split().freeze();
            self.sink.send(piece).await?;
        }
        Ok(())
    }

    /// Sends the rest and ends the COPY; returns the number of rows the server loaded.
    pub(crate) async fn finish(mut self) -> Result<u64, tokio_postgres::Error> {
        if self.shape.format == CopyFormat::Binary {
            self.buf.put_i16(-1);
        }
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            self.sink.send(rest).await?;
        }
        self.sink.as_mut().finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_escape_values_and_skip_unchanged_columns() {
        let row = Tuple::from_values([
            ColumnValue::Text(b"1"),
            ColumnValue::Null,
            ColumnValue::Unchanged,
            ColumnValue::Text(b"a\tb\\c"),
        ])
        .unwrap();
        let shape = RowShape::of(&row).unwrap();
        assert_eq!(shape.format, CopyFormat::Text);
        assert_eq!(shape.columns().collect::<Vec<_>>(), [0, 1, 3]);
        let mut out = BytesMut::new();
        encode_row(&mut out, &row, shape.format);
        assert_eq!(&out[..], b"1\t\\N\ta\\tb\\\\c\n");
    }

    #[test]
    fn binary_rows_carry_field_count_lengths_and_null_markers() {
        let row = Tuple::from_values([
            ColumnValue::Binary(&[0, 0, 0, 7]),
            ColumnValue::Null,
            ColumnValue::Binary(b"xy"),
        ])
        .unwrap();
        let shape = RowShape::of(&row).unwrap();
        assert_eq!(shape.format, CopyFormat::Binary);
        let mut out = BytesMut::new();
        encode_row(&mut out, &row, shape.format);
        assert_eq!(
            &out[..],
            b"\x00\x03\x00\x00\x00\x04\x00\x00\x00\x07\xff\xff\xff\xff\x00\x00\x00\x02xy"
        );
    }

    #[test]
    fn rows_mixing_text_and_binary_values_are_not_copied() {
        let row = Tuple::from_values([ColumnValue::Binary(&[1]), ColumnValue::Text(b"1")]).unwrap();
        assert!(RowShape::of(&row).is_none());
    }
}
