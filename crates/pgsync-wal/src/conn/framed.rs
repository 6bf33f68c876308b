//! Backend message framing over one persistent read buffer.
//!
//! ```text
//!  socket ──read_buf──▶ [ buf: ... | tag len(4) body ... | tag len(4) bo ]
//!                                   └── split_frame ──▶ Backend  └── waits for more
//! ```
//!
//! Bytes read from the socket go into `buf` and stay there until a whole frame can be split
//! off, so a `select!` or timeout that drops [`FrameReader::next`] mid-frame loses nothing:
//! the next call continues where the last stopped. The length in each header is checked
//! against a maximum before anything is reserved, and memory is reserved in steps as bytes
//! arrive, never in one go from a length the server claims. CopyData bodies come out as
//! `Bytes` views into the frame (no copy).

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::WalError;

/// The largest frame accepted. PostgreSQL limits a single value to 1 GB; a CopyData frame
/// carries one pgoutput message, which may hold a few such values in binary mode.
pub(crate) const MAX_FRAME: usize = (1 << 30) + (64 << 20);

/// How much is reserved at a time while a large frame is arriving.
const READ_STEP: usize = 256 * 1024;
const MIN_READ: usize = 8 * 1024;

/// One message from the server.
pub(crate) enum Backend {
    /// A CopyData body (replication messages: XLogData, keepalive).
    CopyData(Bytes),
    /// `W`: the server is in CopyBoth mode (after START_REPLICATION).
    CopyBothResponse,
    /// Everything else, parsed by postgres-protocol.
    Message(Message),
}

/// Splits one complete frame off the front of `buf`, or returns `None` (and leaves `buf`
/// untouched) when more bytes are needed.
pub(crate) fn split_frame(
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<Backend>, WalError> {
    let Some(total) = frame_len(buf, max_frame)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(match buf[0] {
        b'd' => {
            let mut frame = buf.split_to(total);
            frame.advance(5);
            Backend::CopyData(frame.freeze())
        }
        b'W' => {
            buf.advance(total);
            Backend::CopyBothResponse
        }
        _ => match Message::parse(buf) {
            Ok(Some(m)) => Backend::Message(m),
            Ok(None) => return Err(WalError::protocol("a complete frame did not parse")),
            Err(e) => return Err(WalError::protocol(format!("bad backend message: {e}"))),
        },
    }))
}

/// The full length (tag included) of the frame at the front of `buf`, once its header is
/// there.
fn frame_len(buf: &[u8], max_frame: usize) -> Result<Option<usize>, WalError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len).map_err(|_| WalError::protocol("frame length overflow"))?;
    if len < 4 || len > max_frame {
        return Err(WalError::protocol(format!(
            "backend message {:?} claims {len} bytes (allowed: 4..={max_frame})",
            char::from(header[0])
        )));
    }
    Ok(Some(len + 1))
}

/// Reads whole backend messages from `R`.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
            max_frame: MAX_FRAME,
        }
    }

    /// The next message if a whole one is already buffered; never reads the socket. Lets
    /// a caller take every message a read brought in before it does anything else.
    pub(crate) fn try_next(&mut self) -> Result<Option<Backend>, WalError> {
        split_frame(&mut self.buf, self.max_frame)
    }

    /// The next message.
    ///
    /// Cancel-safe: partial frames stay in the reader's buffer (`read_buf` itself is
    /// cancel-safe), so dropping this future and calling again loses nothing.
    pub(crate) async fn next(&mut self, during: &str) -> Result<Backend, WalError> {
        loop {
            if let Some(m) = split_frame(&mut self.buf, self.max_frame)? {
                return Ok(m);
            }
            let missing = match frame_len(&self.buf, self.max_frame)? {
                Some(total) => total - self.buf.len(),
                None => 5 - self.buf.len(),
            };
            self.buf.reserve(missing.clamp(MIN_READ, READ_STEP));
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| WalError::io(during, e))?;
            if n == 0 {
                return Err(WalError::ConnectionLost {
                    during: during.to_owned(),
                    reason: if self.buf.is_empty() {
                        "the server closed the connection".to_owned()
                    } else {
                        "the server closed the connection in the middle of a message".to_owned()
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_data(body: &[u8]) -> Vec<u8> {
        let mut v = vec![b'd'];
        v.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_frame_split_anywhere_comes_out_whole_once_complete() {
        let wire = [copy_data(b"hello"), copy_data(b"world!")].concat();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(Backend::CopyData(b)) = split_frame(&mut buf, MAX_FRAME).unwrap() {
                got.push(b);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(Backend::CopyData(b)) = split_frame(&mut buf, MAX_FRAME).unwrap() {
                got.push(b);
            }
            assert_eq!(got, [&b"hello"[..], &b"world!"[..]], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn lengths_below_four_or_above_the_maximum_are_protocol_errors() {
        for len in [0u32, 3, 1025] {
            let mut buf = BytesMut::from(&[b'd'][..]);
            buf.extend_from_slice(&len.to_be_bytes());
            let e = split_frame(&mut buf, 1024).unwrap_err();
            assert!(matches!(e, WalError::Protocol(_)), "{len}: {e}");
        }
    }

    #[tokio::test]
    async fn a_read_cancelled_mid_frame_loses_nothing() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(rx);
        let wire = copy_data(b"0123456789");
        use tokio::io::AsyncWriteExt;
        tx.write_all(&wire[..7]).await.unwrap();
        let timed =
            tokio::time::timeout(std::time::Duration::from_millis(20), reader.next("test")).await;
        assert!(timed.is_err(), "no whole frame yet");
        tx.write_all(&wire[7..]).await.unwrap();
        match reader.next("test").await.unwrap() {
            Backend::CopyData(b) => assert_eq!(&b[..], b"0123456789"),
            other => panic!("unexpected {other:?}"),
        }
        drop(tx);
        let e = reader.next("test").await.unwrap_err();
        assert!(matches!(e, WalError::ConnectionLost { .. }), "{e}");
    }
}
