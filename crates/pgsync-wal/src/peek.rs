//! Reading a slot's backlog through the SQL decoding functions (catch-up).
//!
//! A walsender writes every pgoutput message with a `send()` of its own and looks for
//! replies after every WAL record. For a backlog of small transactions that socket work
//! costs several times the decoding itself (about 2.7 µs per single-row transaction to
//! decode, 8–17 µs per transaction to stream, measured in benches/README.md). The same
//! plugin run by `pg_logical_slot_peek_binary_changes` in an ordinary backend writes its
//! output to a tuplestore, and `COPY ... TO STDOUT` sends the rows in full socket buffers.
//!
//! ```text
//! COPY (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes(slot, upto, NULL,
//!       <the pgoutput options START_REPLICATION would get, without streaming>))
//!   TO STDOUT (FORMAT binary)
//!   -> rows (lsn, xid, data) -> XLogData, as the stream would have handed them over
//! ```
//!
//! `peek` does not move the slot: what is read here and applied is confirmed afterwards
//! with [`advance_slot`] (a fast-forward decode, cheap), up to what the writer has made
//! durable, so a crash in between reads the same transactions again and the writer's
//! progress skips them. Output is materialised on the server before the first row comes,
//! so the caller bounds each read with `upto` (a WAL position). Streaming of large
//! transactions is off here: a transaction still open at `upto` would be streamed again
//! from its start by the next read; whole transactions at their commit never are.

use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt as _;
use pgsync_names::sql::Literal;
use tokio_postgres::{Client, CopyOutStream};

use crate::conn::{StartOptions, Streaming};
use crate::error::{ServerError, WalError};
use crate::lsn::Lsn;
use crate::stream::XLogData;

/// The 11-byte signature, flags and extension length that open binary COPY output.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const HEADER_LEN: usize = SIGNATURE.len() + 4 + 4;

/// The changes of a slot up to a WAL position, read once, in commit order.
pub struct SlotPeek {
    rows: std::pin::Pin<Box<CopyOutStream>>,
    buf: BytesMut,
    header_seen: bool,
    ended: bool,
    during: String,
}

impl std::fmt::Debug for SlotPeek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotPeek")
            .field("during", &self.during)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl SlotPeek {
    /// Starts reading the changes of `options.slot` that commit before `upto` (the whole
    /// backlog when `None`) on `client`, an ordinary session on the slot's database whose
    /// role may use the slot (REPLICATION). `server_major` chooses the pgoutput options.
    pub async fn start(
        client: &Client,
        options: &StartOptions,
        server_major: u32,
        upto: Option<Lsn>,
    ) -> Result<Self, WalError> {
        let during = format!(
            "reading slot {} through pg_logical_slot_peek_binary_changes",
            pgsync_names::sql::Ident(&options.slot)
        );
        let sql = peek_sql(options, server_major, upto)?;
        let rows = client
            .copy_out(sql.as_str())
            .await
            .map_err(|e| from_pg(&during, &e))?;
        Ok(Self {
            rows: Box::pin(rows),
            buf: BytesMut::new(),
            header_seen: false,
            ended: false,
            during,
        })
    }

    /// The next message; `Ok(None)` once every change up to `upto` was returned.
    /// Cancel-safe: a row read from the socket stays in the buffer.
    pub async fn recv(&mut self) -> Result<Option<XLogData>, WalError> {
        loop {
            if let Some(x) = self.next_buffered()? {
                return Ok(Some(x));
            }
            if self.ended {
                return Ok(None);
            }
            match self.rows.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(from_pg(&self.during, &e)),
                None => {
                    self.ended = true;
                    if !self.buf.is_empty() {
                        return Err(WalError::protocol(format!(
                            "{}: the COPY output ended in the middle of a row ({} bytes left)",
                            self.during,
                            self.buf.len()
                        )));
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// A whole row from the buffer, if one is there.
    fn next_buffered(&mut self) -> Result<Option<XLogData>, WalError> {
        if !self.header_seen {
            if self.buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let header = self.buf.split_to(HEADER_LEN);
            parse_header(&header)?;
            self.header_seen = true;
        }
        match split_row(&mut self.buf)? {
            Row::Incomplete => Ok(None),
            Row::Trailer => {
                self.ended = true;
                if !self.buf.is_empty() {
                    return Err(WalError::protocol(format!(
                        "{} bytes after the end of the COPY output",
                        self.buf.len()
                    )));
                }
                Ok(None)
            }
            Row::Message(x) => Ok(Some(x)),
        }
    }
}

/// Confirms everything before `lsn` on the slot (`pg_replication_slot_advance`): the
/// server may forget it. Returns the slot's confirmed position afterwards. Never moves
/// the slot backwards (the server ignores a position behind it).
pub async fn advance_slot(client: &Client, slot: &str, lsn: Lsn) -> Result<Lsn, WalError> {
    let during = format!(
        "confirming {lsn} on slot {}",
        pgsync_names::sql::Ident(slot)
    );
    let row = client
        .query_one(
            "SELECT end_lsn::text FROM pg_catalog.pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot, &lsn.to_string()],
        )
        .await
        .map_err(|e| from_pg(&during, &e))?;
    let text: &str = row.get(0);
    text.parse()
        .map_err(|_| WalError::protocol(format!("{during}: end_lsn = {text:?}")))
}

/// The COPY command that reads the slot.
pub(crate) fn peek_sql(
    options: &StartOptions,
    server_major: u32,
    upto: Option<Lsn>,
) -> Result<String, WalError> {
    let opts = options.plugin_options(server_major, Streaming::Off)?;
    let upto = match upto {
        Some(lsn) => format!("{}::pg_lsn", Literal(&lsn.to_string())),
        None => "NULL".to_owned(),
    };
    let mut args = String::new();
    for (name, value) in &opts {
        args.push_str(&format!(", {}, {}", Literal(name), Literal(value)));
    }
    Ok(format!(
        "COPY (SELECT lsn, xid, data FROM pg_catalog.pg_logical_slot_peek_binary_changes({}, {upto}, NULL{args})) TO STDOUT (FORMAT binary)",
        Literal(&options.slot)
    ))
}

fn parse_header(header: &[u8]) -> Result<(), WalError> {
    if !header.starts_with(SIGNATURE) {
        return Err(WalError::protocol(
            "the COPY output does not start with the binary COPY signature",
        ));
    }
    let mut rest = &header[SIGNATURE.len()..];
    let _flags = rest.get_u32();
    if rest.get_u32() != 0 {
        return Err(WalError::protocol(
            "the binary COPY header has an extension pgsync does not read",
        ));
    }
    Ok(())
}

enum Row {
    Incomplete,
    Trailer,
    Message(XLogData),
}

/// One `(lsn pg_lsn, xid xid, data bytea)` row in binary COPY format, taken off `buf`
/// once it is whole.
fn split_row(buf: &mut BytesMut) -> Result<Row, WalError> {
    let Some(count) = buf.get(..2) else {
        return Ok(Row::Incomplete);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        buf.advance(2);
        return Ok(Row::Trailer);
    }
    if count != 3 {
        return Err(WalError::protocol(format!(
            "a decoded change row has {count} columns, expected 3 (lsn, xid, data)"
        )));
    }
    // Field lengths and where each value starts; nothing is taken until the row is whole.
    let mut at = 2;
    let mut fields = [(0usize, 0usize); 3];
    for (i, field) in fields.iter_mut().enumerate() {
        let Some(len) = buf.get(at..at + 4) else {
            return Ok(Row::Incomplete);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let expected = match i {
            0 => Some(8),
            1 => Some(4),
            _ => None,
        };
        let len = match (usize::try_from(len), expected) {
            (Ok(n), Some(e)) if n == e => n,
            (Ok(n), None) => n,
            _ => {
                return Err(WalError::protocol(format!(
                    "column {} of a decoded change row has length {len}",
                    ["lsn", "xid", "data"][i]
                )));
            }
        };
        *field = (at + 4, len);
        at += 4 + len;
    }
    if buf.len() < at {
        return Ok(Row::Incomplete);
    }
    let row: Bytes = buf.split_to(at).freeze();
    let (lsn_at, _) = fields[0];
    let lsn = Lsn(u64::from_be_bytes(
        row[lsn_at..lsn_at + 8].try_into().expect("8 bytes"),
    ));
    let (data_at, data_len) = fields[2];
    Ok(Row::Message(XLogData {
        wal_start: lsn,
        wal_end: lsn,
        // Rows are read long after their commit by definition; the time they came is
        // what a stream would have stamped on them.
        server_time: SystemTime::now(),
        data: row.slice(data_at..data_at + data_len),
    }))
}

/// A client error as a [`WalError`]: the server's error with its SQLSTATE, or a lost
/// connection.
fn from_pg(during: &str, e: &tokio_postgres::Error) -> WalError {
    if let Some(db) = e.as_db_error() {
        return WalError::Server(Box::new(ServerError {
            code: db.code().clone(),
            severity: db.severity().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            hint: db.hint().map(str::to_owned),
            during: during.to_owned(),
        }));
    }
    WalError::ConnectionLost {
        during: during.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn row(lsn: u64, xid: u32, data: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i32(8);
        b.put_u64(lsn);
        b.put_i32(4);
        b.put_u32(xid);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
        b.to_vec()
    }

    #[test]
    fn rows_come_out_whole_however_the_bytes_are_cut() {
        let mut all = SIGNATURE.to_vec();
        all.extend_from_slice(&[0; 8]);
        all.extend(row(0x16_0000_0028, 740, b"B-begin"));
        all.extend(row(0x16_0000_0100, 740, b"I"));
        all.extend((-1i16).to_be_bytes());
        for cut in 1..all.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut header = false;
            for piece in [&all[..cut], &all[cut..]] {
                buf.extend_from_slice(piece);
                if !header && buf.len() >= HEADER_LEN {
                    parse_header(&buf.split_to(HEADER_LEN)).unwrap();
                    header = true;
                }
                if header {
                    while let Row::Message(x) = split_row(&mut buf).unwrap() {
                        got.push((x.wal_start, x.data));
                    }
                }
            }
            assert_eq!(
                got,
                vec![
                    (Lsn(0x16_0000_0028), Bytes::from_static(b"B-begin")),
                    (Lsn(0x16_0000_0100), Bytes::from_static(b"I")),
                ],
                "cut at {cut}"
            );
            assert!(buf.is_empty(), "cut at {cut}: {} bytes left", buf.len());
        }
    }

    #[test]
    fn malformed_rows_are_protocol_errors() {
        let mut wrong_count = BytesMut::from(&[0u8, 2][..]);
        assert!(matches!(
            split_row(&mut wrong_count),
            Err(WalError::Protocol(_))
        ));
        let mut bad_lsn = BytesMut::new();
        bad_lsn.put_i16(3);
        bad_lsn.put_i32(7);
        assert!(matches!(
            split_row(&mut bad_lsn),
            Err(WalError::Protocol(_))
        ));
        let mut null_data = BytesMut::new();
        null_data.put_i16(3);
        null_data.put_i32(8);
        null_data.put_u64(1);
        null_data.put_i32(4);
        null_data.put_u32(1);
        null_data.put_i32(-1);
        assert!(matches!(
            split_row(&mut null_data),
            Err(WalError::Protocol(_))
        ));
        assert!(parse_header(b"PGCOPY\n\xff\r\n\x01\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn the_command_reads_the_slot_with_the_streams_options_but_no_streaming() {
        let mut options = StartOptions::new("pgsync_shop", ["pgsync_shop"]);
        options.origin_none = true;
        let sql = peek_sql(&options, 16, Some(Lsn(0x1_0000_0000))).unwrap();
        assert_eq!(
            sql,
            "COPY (SELECT lsn, xid, data FROM pg_catalog.pg_logical_slot_peek_binary_changes('pgsync_shop', '1/0'::pg_lsn, NULL, 'proto_version', '4', 'publication_names', '\"pgsync_shop\"', 'messages', 'true', 'origin', 'none')) TO STDOUT (FORMAT binary)"
        );
    }
}
