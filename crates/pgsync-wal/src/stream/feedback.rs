//! What to report to the server in standby status updates, and when.
//!
//! * **flush** (= apply) is what the consumer says is durably applied
//!   ([`crate::ReplicationStream::confirm`]); it only moves forward. The server may recycle
//!   WAL and advance the slot's `confirmed_flush_lsn` up to it.
//! * When **idle** — everything received has been confirmed and nothing is waiting in the
//!   buffers — a keepalive's WAL end is reported as flushed too. The walsender has decoded
//!   everything up to that point, and whatever it did not send (other databases, tables
//!   outside the publication, empty transactions) needs nothing from us; without this a
//!   quiet or fully filtered slot would hold WAL forever. A transaction still in progress
//!   at that point is unaffected: its commit lies beyond, and decoding restarts from the
//!   slot's `restart_lsn`, not from the flush position.
//! * **write** is the furthest position received.
//!
//! Updates go out on a deadline (a third of `wal_sender_timeout`, at most 10 s), at once
//! when the server asks in a keepalive, and at once when an idle keepalive moves the flush
//! position (so the server stops asking).

use std::time::Duration;

use tokio::time::Instant;

use crate::lsn::Lsn;

/// The longest gap between status updates.
const MAX_INTERVAL: Duration = Duration::from_secs(10);
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The status-update interval for a `wal_sender_timeout` (None: disabled).
pub(crate) fn interval_for(wal_sender_timeout: Option<Duration>) -> Duration {
    match wal_sender_timeout {
        Some(t) => (t / 3).clamp(MIN_INTERVAL, MAX_INTERVAL),
        None => MAX_INTERVAL,
    }
}

/// Feedback state of one stream.
#[derive(Debug)]
pub(crate) struct Feedback {
    interval: Duration,
    next_due: Instant,
    received: Lsn,
    idle_end: Lsn,
    reported_flush: Lsn,
    reported_write: Lsn,
}

/// One standby status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) write: Lsn,
    pub(crate) flush: Lsn,
    pub(crate) apply: Lsn,
}

impl Feedback {
    pub(crate) fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            next_due: now + interval,
            received: Lsn::INVALID,
            idle_end: Lsn::INVALID,
            reported_flush: Lsn::INVALID,
            reported_write: Lsn::INVALID,
        }
    }

    /// When the next status update is due.
    pub(crate) fn due(&self) -> Instant {
        self.next_due
    }

    /// An XLogData was read from the socket.
    pub(crate) fn on_xlogdata(&mut self, wal_start: Lsn) {
        self.received = self.received.max(wal_start);
    }

    /// A keepalive was read; `pending` says whether any XLogData still waits for the
    /// consumer. Returns whether a status update should go out now.
    pub(crate) fn on_keepalive(
        &mut self,
        wal_end: Lsn,
        reply_requested: bool,
        confirmed: Lsn,
        pending: bool,
    ) -> bool {
        let idle = !pending && confirmed >= self.received;
        if idle && wal_end > self.idle_end {
            self.idle_end = wal_end;
        }
        reply_requested || (idle && self.flush(confirmed) > self.reported_flush)
    }

    fn flush(&self, confirmed: Lsn) -> Lsn {
        confirmed.max(self.idle_end).max(self.reported_flush)
    }

    /// The update to send now; restarts the deadline.
    pub(crate) fn status(&mut self, confirmed: Lsn, now: Instant) -> Status {
        let flush = self.flush(confirmed);
        let write = flush.max(self.received).max(self.reported_write);
        self.reported_flush = flush;
        self.reported_write = write;
        self.next_due = now + self.interval;
        Status {
            write,
            flush,
            apply: flush,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb() -> Feedback {
        Feedback::new(Duration::from_secs(10), Instant::now())
    }

    #[test]
    fn flush_is_what_the_consumer_confirmed_and_never_moves_back() {
        let mut f = fb();
        f.on_xlogdata(Lsn(100));
        let now = Instant::now();
        assert_eq!(f.status(Lsn(50), now).flush, Lsn(50));
        assert_eq!(f.status(Lsn(40), now).flush, Lsn(50));
        let s = f.status(Lsn(100), now);
        assert_eq!((s.write, s.flush, s.apply), (Lsn(100), Lsn(100), Lsn(100)));
    }

    #[test]
    fn an_idle_keepalive_advances_flush_to_the_wal_end_and_asks_to_reply() {
        let mut f = fb();
        f.on_xlogdata(Lsn(100));
        // Received 100, confirmed 100, nothing pending: idle.
        assert!(f.on_keepalive(Lsn(500), false, Lsn(100), false));
        assert_eq!(f.status(Lsn(100), Instant::now()).flush, Lsn(500));
        // The same keepalive again needs no reply.
        assert!(!f.on_keepalive(Lsn(500), false, Lsn(100), false));
    }

    #[test]
    fn a_keepalive_while_changes_are_unconfirmed_or_pending_does_not_advance_flush() {
        let mut f = fb();
        f.on_xlogdata(Lsn(100));
        assert!(!f.on_keepalive(Lsn(500), false, Lsn(50), false));
        assert!(!f.on_keepalive(Lsn(500), false, Lsn(100), true));
        assert_eq!(f.status(Lsn(50), Instant::now()).flush, Lsn(50));
        // A reply is still sent when asked.
        assert!(f.on_keepalive(Lsn(600), true, Lsn(50), true));
    }

    #[test]
    fn the_interval_is_a_third_of_wal_sender_timeout_capped_at_ten_seconds() {
        assert_eq!(
            interval_for(Some(Duration::from_secs(3))),
            Duration::from_secs(1)
        );
        assert_eq!(
            interval_for(Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
        assert_eq!(interval_for(None), Duration::from_secs(10));
        assert_eq!(interval_for(Some(Duration::from_millis(30))), MIN_INTERVAL);
    }
}
