//! Gathering a backlog's small messages into fewer, larger reads (`SO_RCVLOWAT`).
//!
//! The walsender sends every pgoutput message with its own `send()`: three per single-row
//! transaction. When the stream task waits on the socket, each of those sends also wakes
//! it: the walsender pays for the wake-up inside `send()`, the task pays a context switch
//! and a `recv()` (with the ACK it triggers) for a few hundred bytes. Working through a
//! backlog of small transactions that way costs more than decoding them, on both sides.
//!
//! While the stream is behind, the task raises the socket's receive low-water mark to
//! [`MARK`] bytes. The kernel then wakes the reader only once that much is waiting, or
//! earlier when its receive memory runs short or the advertised window is nearly used up
//! (`tcp_epollin_ready`), so flow control never stalls on the mark. Reads that find less
//! than the mark still return what is there; the mark only decides when a waiting reader
//! is woken. A tick bounds how long bytes below the mark wait: when no read has happened
//! for [`TICK`], the mark drops back to one byte (setting it wakes the reader at once if
//! anything is waiting), and the next transaction that arrives late raises it again.
//!
//! "Behind" is judged per transaction from its Begin: the server's send time minus its
//! commit time, both on the server's clock, of [`BEHIND`] or more. A live stream keeps the
//! mark at one byte and each message is read as soon as it arrives.
//!
//! Only for TCP (plain or under TLS): a Unix socket ignores the mark when polled.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::wire;

/// Bytes a waiting reader lets pile up while the stream is behind.
pub(super) const MARK: u32 = 16 * 1024;
/// How long bytes below the mark may wait for more.
pub(super) const TICK: Duration = Duration::from_millis(2);
/// A transaction sent this long after its commit means the stream is working through a
/// backlog.
pub(super) const BEHIND: Duration = Duration::from_millis(200);

/// The low-water mark of the stream's TCP socket.
#[derive(Debug)]
pub(super) struct Gather {
    /// A duplicate of the socket's descriptor (same socket), `None` when not TCP.
    fd: Option<OwnedFd>,
    /// The mark is raised.
    raised: bool,
    /// When the mark drops back if no read happens before.
    tick_at: Option<Instant>,
}

impl Gather {
    pub(super) fn new(fd: Option<OwnedFd>) -> Self {
        Self {
            fd,
            raised: false,
            tick_at: None,
        }
    }

    /// Looks at a message as it arrives: a Begin tells whether the stream is behind.
    pub(super) fn on_message(&mut self, data: &[u8], sent: SystemTime) {
        let Some(commit) = begin_commit_time(data) else {
            return;
        };
        let behind = sent.duration_since(commit).is_ok_and(|d| d >= BEHIND);
        if behind != self.raised {
            self.set(behind);
        }
    }

    /// A read brought bytes in: the tick starts again.
    pub(super) fn on_read(&mut self) {
        if self.raised {
            self.tick_at = Some(Instant::now() + TICK);
        }
    }

    /// When the tick is due, while the mark is raised.
    pub(super) fn tick_at(&self) -> Option<Instant> {
        self.tick_at.filter(|_| self.raised)
    }

    /// The tick came with no read: the mark drops back to one byte.
    pub(super) fn on_tick(&mut self) {
        self.set(false);
    }

    fn set(&mut self, raise: bool) {
        self.tick_at = None;
        let Some(fd) = &self.fd else {
            return;
        };
        let mark = if raise { MARK } else { 1 };
        match set_rcvlowat(fd, mark) {
            Ok(()) => {
                self.raised = raise;
                if raise {
                    self.tick_at = Some(Instant::now() + TICK);
                }
            }
            Err(e) => {
                // Not fatal: the stream works without it, only with more wake-ups.
                tracing::debug!(target: "pgsync_wal::stream", error = %e, "SO_RCVLOWAT not set; reading without it");
                self.raised = false;
                self.fd = None;
            }
        }
    }
}

/// The commit time a pgoutput Begin message carries ('B', final LSN, commit time, xid).
fn begin_commit_time(data: &[u8]) -> Option<SystemTime> {
    if data.first() != Some(&b'B') {
        return None;
    }
    let micros: [u8; 8] = data.get(9..17)?.try_into().ok()?;
    Some(wire::from_pg_micros(i64::from_be_bytes(micros)))
}

fn set_rcvlowat(fd: &OwnedFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open descriptor owned for the duration of the call, and the
    // option value is a live `c_int` whose size is passed along with it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(commit_micros: i64) -> Vec<u8> {
        let mut b = vec![b'B'];
        b.extend_from_slice(&0x16_0000_0000u64.to_be_bytes());
        b.extend_from_slice(&commit_micros.to_be_bytes());
        b.extend_from_slice(&742u32.to_be_bytes());
        b
    }

    #[test]
    fn a_begin_gives_its_commit_time_and_other_messages_none() {
        let t = begin_commit_time(&begin(1_000_000)).unwrap();
        assert_eq!(t, wire::from_pg_micros(1_000_000));
        assert_eq!(begin_commit_time(b"C\0"), None);
        assert_eq!(begin_commit_time(&begin(5)[..12]), None, "a short Begin is not read");
    }

    #[test]
    fn the_mark_follows_whether_transactions_arrive_late() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = OwnedFd::from(client.try_clone().unwrap());
        let mut g = Gather::new(Some(fd));
        let commit = wire::from_pg_micros(1_000_000);
        let lowat = |s: &std::net::TcpStream| {
            socket_lowat(s.as_raw_fd()).expect("reading SO_RCVLOWAT")
        };
        g.on_message(&begin(1_000_000), commit + Duration::from_millis(5));
        assert_eq!(lowat(&client), 1, "live: one byte wakes the reader");
        g.on_message(&begin(1_000_000), commit + Duration::from_secs(3));
        assert_eq!(lowat(&client), MARK as i32, "behind: the mark is raised");
        assert!(g.tick_at().is_some());
        g.on_tick();
        assert_eq!(lowat(&client), 1, "a tick without a read drops it");
        assert!(g.tick_at().is_none());
        g.on_message(&begin(1_000_000), commit + Duration::from_secs(3));
        g.on_message(&begin(1_000_000), commit + Duration::from_millis(1));
        assert_eq!(lowat(&client), 1, "a live transaction drops it");
    }

    fn socket_lowat(fd: std::os::fd::RawFd) -> io::Result<i32> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is open for the call; `value` and `len` are live and sized.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
