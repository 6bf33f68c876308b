//! The replication stream: XLogData out, standby status updates in, never starved.
//!
//! ```text
//!             ┌──────────────── socket task (owns the socket) ────────────────┐
//!  server ◀──▶│ read frames ─▶ XLogData ─▶ held (≤ buffer_bytes) ─▶ channel ─┼─▶ recv()
//!             │            └─▶ keepalive ─▶ reply at once if asked          │
//!             │ timer (⅓ wal_sender_timeout) ─▶ status update 'r'            │
//!             └──────────── reads `confirmed` ◀── confirm(lsn) ◀─────────────┘─── consumer
//! ```
//!
//! The consumer never touches the socket, so a slow consumer cannot make the server time
//! out: the task keeps answering keepalives and sending status updates on its own timer.
//! Backpressure is the bounded channel plus a byte budget of held messages; once both are
//! full the task stops reading the socket (status updates still go out on time) and the
//! server's own flow control takes over.
//!
//! Progress is what the consumer confirms ([`ReplicationStream::confirm`] or a
//! [`FeedbackHandle`] given to the applier): the position up to which changes are durably
//! applied. See [`feedback`] for how idle keepalives advance it.
//!
//! The stream ends cleanly when the server sends CopyDone ([`ReplicationStream::recv`]
//! returns `Ok(None)` after the last message); the server going away is a
//! [`WalError::ConnectionLost`], which is retryable.

mod feedback;
mod task;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::conn::{Backend, ReplicationConnection, StartOptions, log_notice, server_error};
use crate::error::WalError;
use crate::lsn::{AtomicLsn, Lsn};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

pub use wire::XLogData;

/// Batches of messages the channel to the consumer holds (see [`task`] for why batches).
const CHANNEL_BATCHES: usize = 2;

/// Progress shared between the consumer and the socket task.
#[derive(Debug, Default)]
struct Shared {
    confirmed: AtomicLsn,
    received: AtomicLsn,
    poke: Notify,
    /// XLogData messages handed to the consumer (counted before they become visible).
    handed: std::sync::atomic::AtomicU64,
    /// Of those, how many the consumer has finished with (see
    /// [`ReplicationStream::mark_done`]). Keepalives advance the flush position only
    /// while `done == handed`.
    done: std::sync::atomic::AtomicU64,
}

/// A cloneable handle for reporting progress from another task (e.g. the applier).
#[derive(Debug, Clone)]
pub struct FeedbackHandle(Arc<Shared>);

impl FeedbackHandle {
    /// Everything up to `lsn` is durably applied; the server may forget it. Only moves
    /// forward (a lower value is ignored). Reported at the next status update.
    pub fn confirm(&self, lsn: Lsn) {
        self.0.confirmed.fetch_max(lsn);
    }

    /// The confirmed position.
    pub fn confirmed(&self) -> Lsn {
        self.0.confirmed.load()
    }

    /// The furthest XLogData position read from the server.
    pub fn received(&self) -> Lsn {
        self.0.received.load()
    }

    /// Sends a status update now instead of at the next deadline.
    pub fn send_now(&self) {
        self.0.poke.notify_one();
    }
}

/// A running logical replication stream (after START_REPLICATION).
#[derive(Debug)]
pub struct ReplicationStream {
    rx: mpsc::Receiver<Vec<XLogData>>,
    /// The rest of the batch last taken from the channel.
    batch: std::vec::IntoIter<XLogData>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), WalError>>>,
    ended: Option<bool>,
    server_major: u32,
    proto_version: u32,
    status_interval: Duration,
    /// Messages taken from the channel so far (see [`ReplicationStream::mark_done`]).
    taken: u64,
}

impl ReplicationConnection {
    /// Reads `wal_sender_timeout`, sends START_REPLICATION with options chosen for the
    /// server's version, and hands the socket to a background task.
    ///
    /// The initial confirmed position is the larger of `options.start` and the slot's
    /// `confirmed_flush_lsn`, so feedback never moves the slot backwards.
    ///
    /// Not cancel-safe (the connection is consumed either way). Needs a tokio runtime.
    pub async fn start_replication(
        mut self,
        options: &StartOptions,
    ) -> Result<ReplicationStream, WalError> {
        let major = self.server_major();
        let sql = options.sql(major)?;
        let interval = match options.status_interval {
            Some(i) => i,
            None => feedback::interval_for(self.wal_sender_timeout().await?),
        };
        let slot_flush = self.slot_confirmed_flush(&options.slot).await?;
        frontend::query(&sql, self.out())
            .map_err(|e| WalError::Config(format!("command text: {e}")))?;
        self.flush("starting replication").await?;
        let during = format!(
            "starting replication from slot {}",
            pgsync_names::sql::Ident(&options.slot)
        );
        loop {
            match self.reader.next(&during).await? {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(&body, &during));
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
                other => {
                    return Err(WalError::protocol(format!(
                        "unexpected {other:?} after START_REPLICATION"
                    )));
                }
            }
        }
        if !options.start.is_invalid() && slot_flush > options.start {
            // The server starts at the slot's position: what lies between was confirmed
            // earlier and is not sent again.
            tracing::warn!(
                target: "pgsync_wal::stream",
                slot = %options.slot, requested = %options.start, slot_confirmed = %slot_flush,
                "the slot is ahead of the requested start"
            );
        }
        let shared = Arc::new(Shared::default());
        shared.confirmed.fetch_max(options.start.max(slot_flush));
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (reader, writer) = self.into_parts();
        let task = task::SocketTask::new(
            reader,
            writer,
            tx,
            shared.clone(),
            interval,
            options.buffer_messages,
            options.buffer_bytes,
        );
        let handle = tokio::spawn(task.run(stop_rx));
        tracing::debug!(target: "pgsync_wal::stream", slot = %options.slot, ?interval, "streaming");
        Ok(ReplicationStream {
            rx,
            batch: Vec::new().into_iter(),
            shared,
            stop: Some(stop_tx),
            task: Some(handle),
            ended: None,
            server_major: major,
            proto_version: StartOptions::proto_version(major),
            status_interval: interval,
            taken: 0,
        })
    }

    /// The slot's `confirmed_flush_lsn` (0/0 when there is no such slot). Not cancel-safe.
    async fn slot_confirmed_flush(&mut self, slot: &str) -> Result<Lsn, WalError> {
        let sql = format!(
            "SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            pgsync_names::sql::Literal(slot)
        );
        let rows = self.simple_query(&sql).await?;
        match rows.first().and_then(|r| r.get_index(0)) {
            Some(text) => text
                .parse()
                .map_err(|_| WalError::protocol(format!("confirmed_flush_lsn = {text:?}"))),
            // A missing slot is reported by START_REPLICATION itself.
            None => Ok(Lsn::INVALID),
        }
    }
}

impl ReplicationStream {
    /// The next XLogData. `Ok(None)`: the server ended the stream (CopyDone) and everything
    /// before has been returned. An error (connection lost, server error) comes after the
    /// messages received before it.
    ///
    /// Cancel-safe: nothing is lost if the future is dropped before it completes.
    pub async fn recv(&mut self) -> Result<Option<XLogData>, WalError> {
        if let Some(x) = self.batch.next() {
            self.taken += 1;
            return Ok(Some(x));
        }
        while let Some(batch) = self.rx.recv().await {
            self.batch = batch.into_iter();
            if let Some(x) = self.batch.next() {
                self.taken += 1;
                return Ok(Some(x));
            }
        }
        match (self.ended, self.task.as_mut()) {
            (Some(true), _) => Ok(None),
            (Some(false), _) | (None, None) => Err(WalError::Ended),
            (None, Some(task)) => {
                let outcome = task.await;
                self.task = None;
                let outcome = outcome.unwrap_or_else(|e| {
                    Err(WalError::ConnectionLost {
                        during: "streaming".into(),
                        reason: format!("the socket task stopped: {e}"),
                    })
                });
                self.ended = Some(outcome.is_ok());
                outcome.map(|()| None)
            }
        }
    }

    /// Tells the stream that the consumer has finished with every message it received so
    /// far (no transaction half-assembled, nothing waiting to be applied). Only then may a
    /// keepalive move the flush position on to the server's WAL end when the slot is idle:
    /// the changes of a transaction carry the LSNs of their own records, which can be older
    /// than the end of the transaction applied before it (transactions interleave), so
    /// "everything received was confirmed" alone does not prove that nothing is in flight.
    /// A consumer that never calls it never gets the idle advance (safe, but a quiet slot
    /// then keeps WAL until the next confirmed transaction).
    pub fn mark_done(&self) {
        self.shared
            .done
            .store(self.taken, std::sync::atomic::Ordering::Release);
    }

    /// See [`FeedbackHandle::confirm`].
    pub fn confirm(&self, lsn: Lsn) {
        self.shared.confirmed.fetch_max(lsn);
    }

    /// The confirmed position.
    pub fn confirmed(&self) -> Lsn {
        self.shared.confirmed.load()
    }

    /// A handle to report progress from elsewhere.
    pub fn feedback_handle(&self) -> FeedbackHandle {
        FeedbackHandle(self.shared.clone())
    }

    /// Sends a status update now.
    pub fn send_feedback_now(&self) {
        self.shared.poke.notify_one();
    }

    /// The server's major version.
    pub fn server_major(&self) -> u32 {
        self.server_major
    }

    /// The pgoutput protocol version in use.
    pub fn proto_version(&self) -> u32 {
        self.proto_version
    }

    /// The status-update interval in use.
    pub fn status_interval(&self) -> Duration {
        self.status_interval
    }

    /// Ends the stream cleanly: reports the confirmed position a last time, sends CopyDone,
    /// waits (briefly) for the server to finish, and closes the connection. Messages not
    /// yet received are discarded; the server sends them again from the confirmed position.
    ///
    /// Not cancel-safe: if dropped, the connection is closed without the final exchange.
    pub async fn stop(mut self) -> Result<(), WalError> {
        self.rx.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(WalError::ConnectionLost {
                    during: "stopping the stream".into(),
                    reason: format!("the socket task stopped: {e}"),
                })
            }),
            None => Ok(()),
        }
    }
}
