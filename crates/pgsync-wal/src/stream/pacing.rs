//! Paced reading of a loopback replication socket while a backlog streams.
//!
//! Why: on loopback, the kernel delivers a TCP segment to the receiving socket inside the
//! sender's `send()`, so the walsender pays for the receive side too. The walsender sends
//! every pgoutput message with a `send()` of its own; a reader that takes each message as
//! soon as it arrives keeps the receive window open, so every message travels the whole
//! stack as its own segment and wakes the reader. During a backlog that made the walsender
//! (the slowest process of a catch-up) spend 12–17 µs per single-row transaction under
//! pgsync against 7.5 µs under PostgreSQL's own apply worker, which reads in large gulps
//! because it is slower than its walsender.
//!
//! How: loopback connections get a small receive buffer ([`LOOPBACK_RECV_BUFFER`], set
//! before connecting), and while a backlog streams the socket's `SO_RCVLOWAT` is raised
//! above what that buffer holds. The kernel then wakes pgsync only when the window is
//! (nearly) closed; until pgsync reads, the walsender's sends merely append to its send
//! queue, which goes out in large segments when the window opens. A timer lowers the mark
//! again after [`STALE`] without a read, so the tail of a backlog (less than a window) is
//! never held back longer than that, and a live stream (transactions arriving soon after
//! their commit) reads every message at once, as before.
//!
//! ```text
//!   Begin lag ≥ 100 ms, or a streamed block ──▶ backlog: mark raised after each read
//!   Begin lag < 20 ms                         ──▶ live: mark at 1 byte
//!   no read for STALE while raised            ──▶ mark lowered (what is queued wakes us)
//! ```

use std::os::fd::RawFd;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::wire::{XLogData, from_pg_micros};

/// The receive buffer asked for loopback replication connections (the kernel doubles it).
/// Smaller windows kept the walsender cheaper down to this size; at half of it the window
/// was too small for the kernel's per-segment overhead and segments were dropped.
pub(crate) const LOOPBACK_RECV_BUFFER: usize = 32 * 1024;

/// The raised low-water mark; the kernel caps it at half the receive buffer, so in effect
/// "wake me when the window closes".
const LOW_WATER: i32 = 1 << 20;

/// The longest a raised mark may hold queued bytes back.
const STALE: Duration = Duration::from_millis(5);

/// A transaction sent this long after its commit means the walsender is working through
/// a backlog...
const BACKLOG_FROM: Duration = Duration::from_millis(100);
/// ...and one sent within this much of its commit means it has caught up.
const LIVE_BELOW: Duration = Duration::from_millis(20);

/// The pacing state of one loopback replication socket.
#[derive(Debug)]
pub(super) struct Pacing {
    fd: RawFd,
    backlog: bool,
    raised: bool,
    deadline: Instant,
}

impl Pacing {
    /// Pacing for a TCP socket whose peer is on this host; `None` otherwise (remote
    /// servers and Unix sockets are read as before).
    pub(super) fn new(tcp: Option<(RawFd, bool)>) -> Option<Self> {
        match tcp {
            Some((fd, true)) => Some(Self {
                fd,
                backlog: false,
                raised: false,
                deadline: Instant::now(),
            }),
            _ => None,
        }
    }

    /// Updates the backlog state from a message the server sent.
    pub(super) fn on_message(&mut self, x: &XLogData) {
        match x.data.first() {
            Some(b'B') => {
                if let Some(lag) = begin_lag(x) {
                    if lag >= BACKLOG_FROM {
                        self.backlog = true;
                    } else if lag < LIVE_BELOW {
                        self.backlog = false;
                    }
                }
            }
            // Stream Start: a large transaction arrives in blocks while it runs, bulk by
            // nature.
            Some(b'S') => self.backlog = true,
            _ => {}
        }
    }

    /// After a read: raise the mark during a backlog (lower it otherwise) and restart the
    /// stale timer.
    pub(super) fn after_read(&mut self) {
        if self.backlog != self.raised {
            self.set(self.backlog);
        }
        self.deadline = Instant::now() + STALE;
    }

    /// When a raised mark has held queued bytes long enough.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.raised.then_some(self.deadline)
    }

    /// The stale timer fired: lower the mark, which wakes the reader at once if anything
    /// is queued.
    pub(super) fn lower(&mut self) {
        self.set(false);
    }

    fn set(&mut self, raised: bool) {
        let mark = if raised { LOW_WATER } else { 1 };
        match set_recv_low_water(self.fd, mark) {
            Ok(()) => self.raised = raised,
            Err(e) => {
                // Only an optimisation: read as before.
                tracing::debug!(target: "pgsync_wal::stream", error = %e, "SO_RCVLOWAT refused");
                self.raised = false;
            }
        }
    }
}

/// How long after its commit the server sent a Begin message ('B', final LSN, commit
/// time, xid); `None` for a short message or a commit time after the send time.
fn begin_lag(x: &XLogData) -> Option<Duration> {
    let commit = x.data.get(9..17)?;
    let micros = i64::from_be_bytes(commit.try_into().ok()?);
    let committed: SystemTime = from_pg_micros(micros);
    x.server_time.duration_since(committed).ok()
}

/// `setsockopt(SO_RCVLOWAT)`. Lowering the mark makes the kernel check at once whether
/// the queued bytes now wake the reader.
fn set_recv_low_water(fd: RawFd, bytes: i32) -> std::io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<i32>()).unwrap_or(4);
    // SAFETY: `bytes` lives across the call and `len` is its size; `fd` is the stream's
    // TCP socket, open for as long as the socket task that owns this runs.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const bytes).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn begin(sent_after_commit: Duration) -> XLogData {
        let commit = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let pg_micros = commit
            .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800))
            .unwrap()
            .as_micros();
        let mut data = BytesMut::new();
        data.put_u8(b'B');
        data.put_u64(0x1000);
        data.put_i64(i64::try_from(pg_micros).unwrap());
        data.put_u32(42);
        XLogData {
            wal_start: crate::Lsn(0),
            wal_end: crate::Lsn(0),
            server_time: commit + sent_after_commit,
            data: data.freeze(),
        }
    }

    fn pacing() -> Pacing {
        Pacing {
            fd: -1,
            backlog: false,
            raised: false,
            deadline: Instant::now(),
        }
    }

    #[test]
    fn the_lag_of_a_begin_decides_backlog_and_live_with_a_gap_between() {
        let mut p = pacing();
        p.on_message(&begin(Duration::from_millis(5)));
        assert!(!p.backlog);
        p.on_message(&begin(Duration::from_secs(3)));
        assert!(p.backlog);
        // Between the two thresholds the state stays as it was.
        p.on_message(&begin(Duration::from_millis(50)));
        assert!(p.backlog);
        p.on_message(&begin(Duration::from_millis(1)));
        assert!(!p.backlog);
    }

    #[test]
    fn a_short_begin_or_a_commit_after_the_send_time_changes_nothing() {
        let mut x = begin(Duration::from_secs(3));
        x.data = x.data.slice(..12);
        assert_eq!(begin_lag(&x), None);
        let mut x = begin(Duration::ZERO);
        x.server_time -= Duration::from_secs(1);
        assert_eq!(begin_lag(&x), None);
    }

    #[test]
    fn only_loopback_tcp_sockets_are_paced() {
        assert!(Pacing::new(None).is_none());
        assert!(Pacing::new(Some((3, false))).is_none());
        assert!(Pacing::new(Some((3, true))).is_some());
    }

    #[test]
    fn a_mark_the_kernel_refuses_leaves_the_socket_read_as_before() {
        let mut p = pacing();
        p.backlog = true;
        p.after_read();
        assert!(!p.raised, "fd -1: setsockopt fails, nothing raised");
        assert_eq!(p.deadline(), None);
    }
}
