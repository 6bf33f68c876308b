//! The CopyBoth payloads of streaming replication (sans-IO).
//!
//! ```text
//! server → client   'w' wal_start(8) wal_end(8) send_time(8) data...   XLogData
//!                   'k' wal_end(8) send_time(8) reply_requested(1)     primary keepalive
//! client → server   'r' write(8) flush(8) apply(8) send_time(8) reply(1)  standby status
//! ```
//! Times are microseconds since 2000-01-01 UTC (PostgreSQL's epoch).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::WalError;
use crate::lsn::Lsn;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET: u64 = 946_684_800;

/// One XLogData message: a pgoutput message and where it is in the WAL.
#[derive(Clone, PartialEq, Eq)]
pub struct XLogData {
    /// The WAL position of the change (for a commit: the end of the commit record). 0/0 on
    /// messages the server marks as "not the last write" (e.g. Begin, Relation).
    pub wal_start: Lsn,
    /// The server's WAL end when it sent this.
    pub wal_end: Lsn,
    /// The server's clock when it sent this.
    pub server_time: SystemTime,
    /// The pgoutput message, a view into the received frame.
    pub data: Bytes,
}

impl std::fmt::Debug for XLogData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XLogData")
            .field("wal_start", &self.wal_start)
            .field("wal_end", &self.wal_end)
            .field("tag", &self.data.first().map(|b| char::from(*b)))
            .field("len", &self.data.len())
            .finish()
    }
}

/// A parsed CopyData payload from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CopyMessage {
    XLogData(XLogData),
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// Parses one CopyData body.
pub(crate) fn parse(mut body: Bytes) -> Result<CopyMessage, WalError> {
    let short = |what: &str| WalError::protocol(format!("{what} message too short"));
    match body.first().copied() {
        Some(b'w') => {
            if body.len() < 25 {
                return Err(short("XLogData"));
            }
            body.advance(1);
            let wal_start = Lsn(body.get_u64());
            let wal_end = Lsn(body.get_u64());
            let server_time = from_pg_micros(body.get_i64());
            Ok(CopyMessage::XLogData(XLogData {
                wal_start,
                wal_end,
                server_time,
                data: body,
            }))
        }
        Some(b'k') => {
            if body.len() < 18 {
                return Err(short("keepalive"));
            }
            body.advance(1);
            let wal_end = Lsn(body.get_u64());
            let _time = body.get_i64();
            let reply_requested = body.get_u8() != 0;
            Ok(CopyMessage::Keepalive {
                wal_end,
                reply_requested,
            })
        }
        Some(other) => Err(WalError::protocol(format!(
            "unknown replication message {:?}",
            char::from(other)
        ))),
        None => Err(WalError::protocol("empty CopyData")),
    }
}

/// Appends a CopyData frame holding a standby status update to `out`.
pub(crate) fn status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    now: SystemTime,
    out: &mut BytesMut,
) {
    const BODY: usize = 1 + 8 * 4 + 1;
    out.put_u8(b'd');
    out.put_u32(4 + BODY as u32);
    out.put_u8(b'r');
    out.put_u64(write.0);
    out.put_u64(flush.0);
    out.put_u64(apply.0);
    out.put_i64(to_pg_micros(now));
    out.put_u8(0);
}

fn from_pg_micros(micros: i64) -> SystemTime {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET);
    let delta = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        epoch.checked_add(delta).unwrap_or(epoch)
    } else {
        epoch.checked_sub(delta).unwrap_or(epoch)
    }
}

fn to_pg_micros(t: SystemTime) -> i64 {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET);
    match t.duration_since(epoch) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_and_keepalives_parse_and_short_ones_are_errors() {
        let mut w = BytesMut::new();
        w.put_u8(b'w');
        w.put_u64(0x1_0000_0010);
        w.put_u64(0x1_0000_0020);
        w.put_i64(1_000_000);
        w.put_slice(b"Bpayload");
        match parse(w.freeze()).unwrap() {
            CopyMessage::XLogData(x) => {
                assert_eq!(x.wal_start, Lsn(0x1_0000_0010));
                assert_eq!(x.wal_end, Lsn(0x1_0000_0020));
                assert_eq!(&x.data[..], b"Bpayload");
                assert_eq!(
                    x.server_time,
                    UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET + 1)
                );
            }
            other => panic!("{other:?}"),
        }
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(42);
        k.put_i64(0);
        k.put_u8(1);
        assert_eq!(
            parse(k.freeze()).unwrap(),
            CopyMessage::Keepalive {
                wal_end: Lsn(42),
                reply_requested: true
            }
        );
        for bad in [&b"w123"[..], b"k", b"", b"x"] {
            assert!(parse(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_updates_are_one_copydata_frame() {
        let mut out = BytesMut::new();
        let now = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET + 2);
        status_update(Lsn(3), Lsn(2), Lsn(1), now, &mut out);
        assert_eq!(out.len(), 1 + 4 + 34);
        assert_eq!(&out[..6], &[b'd', 0, 0, 0, 38, b'r']);
        assert_eq!(&out[6..14], &3u64.to_be_bytes());
        assert_eq!(&out[14..22], &2u64.to_be_bytes());
        assert_eq!(&out[30..38], &2_000_000i64.to_be_bytes());
        assert_eq!(to_pg_micros(from_pg_micros(-5)), -5);
    }
}
