//! The task that owns the socket during streaming.
//!
//! One loop, one `select!` in priority order (`biased`):
//!
//! 1. **shutdown** — the consumer asked to stop (CopyDone exchange) or went away;
//! 2. **pending write** — bytes of a status update still to go out, then a flush;
//! 3. **deadline** — the status-update timer, or the consumer asking for one now;
//! 4. **WAL to the consumer** — held XLogData moves into the channel, as one batch of up
//!    to `batch_messages`, when the channel has room;
//! 5. **the socket** — the next frame (XLogData, keepalive, CopyDone, error), plus every
//!    further frame the same read brought in, read only while the held bytes are under
//!    budget.
//!
//! Messages cross to the consumer in batches because the crossing is what costs: each
//! send into a channel the consumer waits on (or each slot freed in a full one) wakes a
//! thread, microseconds apiece, against well under a microsecond to decode a message. A
//! backlog of small transactions thus moves at one wake-up per batch, not per message,
//! while a quiet stream still hands each message over as soon as it is read.
//!
//! Every branch's future is cancel-safe (`FrameReader::next`, `write_buf`, `flush`,
//! `Sender::reserve_owned`, `sleep_until`, `Notified`, a oneshot receiver), so whichever branch
//! wins, the others lose nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

use super::Shared;
use super::feedback::Feedback;
use super::wire::{self, CopyMessage, XLogData};
use crate::conn::{Backend, FrameReader, Socket, message_name, server_error};
use crate::error::WalError;

const DURING: &str = "streaming";
/// How long a clean stop waits for the server to finish the CopyBoth exchange.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub(super) struct SocketTask {
    reader: FrameReader<ReadHalf<Socket>>,
    writer: WriteHalf<Socket>,
    out: BytesMut,
    unflushed: bool,
    tx: mpsc::Sender<Vec<XLogData>>,
    held: VecDeque<XLogData>,
    batch_messages: usize,
    held_bytes: usize,
    max_held_bytes: usize,
    feedback: Feedback,
    shared: Arc<Shared>,
    last_notice: Option<String>,
}

/// What a frame from the socket means for the loop.
enum Next {
    Continue,
    /// The server sent CopyDone.
    ServerDone,
}

impl SocketTask {
    pub(super) fn new(
        reader: FrameReader<ReadHalf<Socket>>,
        writer: WriteHalf<Socket>,
        tx: mpsc::Sender<Vec<XLogData>>,
        shared: Arc<Shared>,
        interval: Duration,
        batch_messages: usize,
        max_held_bytes: usize,
    ) -> Self {
        Self {
            reader,
            writer,
            out: BytesMut::with_capacity(256),
            unflushed: false,
            tx,
            held: VecDeque::new(),
            batch_messages: batch_messages.max(1),
            held_bytes: 0,
            max_held_bytes,
            feedback: Feedback::new(interval, Instant::now()),
            shared,
            last_notice: None,
        }
    }

    /// Runs until the server ends the stream, the consumer stops or drops it, or an error.
    /// Runs as its own task; never cancelled except by runtime shutdown.
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<(), WalError> {
        let result = self.run_loop(&mut stop).await;
        if let Err(e) = &result {
            tracing::debug!(target: "pgsync_wal::stream", error = %e, "stream ended with an error");
        }
        result
    }

    async fn run_loop(&mut self, stop: &mut oneshot::Receiver<()>) -> Result<(), WalError> {
        loop {
            let due = self.feedback.due();
            // Always read when nothing is held, so a zero budget still makes progress.
            let can_read = self.held.is_empty() || self.held_bytes < self.max_held_bytes;
            tokio::select! {
                biased;
                // 1. Shutdown: a clean stop, or the consumer dropped the stream.
                asked = &mut *stop => {
                    return match asked {
                        Ok(()) => self.finish().await,
                        Err(_) => {
                            self.last_status().await;
                            Ok(())
                        }
                    };
                }
                // 2. Pending write, then flush (TLS keeps records until flushed).
                sent = send(&mut self.writer, &mut self.out), if self.unflushed => {
                    sent.map_err(|e| self.lost(e))?;
                    self.unflushed = false;
                }
                // 3. Deadline: the status-update timer, or the consumer asking now.
                () = sleep_until(due) => self.queue_status(),
                () = self.shared.poke.notified() => self.queue_status(),
                // 4. WAL to the consumer.
                permit = self.tx.clone().reserve_owned(), if !self.held.is_empty() => match permit {
                    Ok(permit) => {
                        let batch = self.next_batch();
                        permit.send(batch);
                    }
                    Err(_) => return Ok(()),
                },
                // 5. The socket: one frame, then whatever else is already buffered.
                frame = self.reader.next(DURING), if can_read => {
                    let frame = frame.map_err(|e| self.with_notice(e))?;
                    let mut next = self.on_frame(frame)?;
                    while matches!(next, Next::Continue)
                        && self.held.len() < self.batch_messages
                        && self.held_bytes < self.max_held_bytes
                    {
                        match self.reader.try_next().map_err(|e| self.with_notice(e))? {
                            Some(frame) => next = self.on_frame(frame)?,
                            None => break,
                        }
                    }
                    match next {
                        Next::Continue => {}
                        Next::ServerDone => return self.server_done().await,
                    }
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Backend) -> Result<Next, WalError> {
        match frame {
            Backend::CopyData(body) => match wire::parse(body)? {
                CopyMessage::XLogData(x) => {
                    self.feedback.on_xlogdata(x.wal_start);
                    self.shared.received.fetch_max(x.wal_start);
                    // Counted before the consumer can see it.
                    self.shared
                        .handed
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    return Ok(self.forward(x));
                }
                CopyMessage::Keepalive {
                    wal_end,
                    reply_requested,
                } => {
                    use std::sync::atomic::Ordering;
                    // Everything handed over must be finished by the consumer, not only
                    // taken from the channel (see ReplicationStream::mark_done).
                    let pending = !self.held.is_empty()
                        || self.shared.done.load(Ordering::Acquire)
                            != self.shared.handed.load(Ordering::Acquire);
                    let confirmed = self.shared.confirmed.load();
                    if self
                        .feedback
                        .on_keepalive(wal_end, reply_requested, confirmed, pending)
                    {
                        self.queue_status();
                    }
                }
            },
            // CopyDone, or (a walsender finishing for a server shutdown) CommandComplete.
            Backend::Message(Message::CopyDone | Message::CommandComplete(_)) => {
                return Ok(Next::ServerDone);
            }
            Backend::Message(Message::ErrorResponse(body)) => {
                return Err(server_error(&body, "streaming changes"));
            }
            Backend::Message(Message::NoticeResponse(body)) => {
                self.last_notice = Some(notice_text(&body));
                crate::conn::log_notice(&body);
            }
            Backend::Message(Message::ParameterStatus(_)) => {}
            Backend::Message(other) => {
                return Err(WalError::protocol(format!(
                    "unexpected {} while streaming",
                    message_name(&other)
                )));
            }
            Backend::CopyBothResponse => {
                return Err(WalError::protocol(
                    "a second CopyBothResponse while streaming",
                ));
            }
        }
        Ok(Next::Continue)
    }

    /// Held, in order, until the channel takes it (branch 4 of the loop).
    fn forward(&mut self, x: XLogData) -> Next {
        self.held_bytes += held_cost(&x);
        self.held.push_back(x);
        Next::Continue
    }

    /// Takes the next batch off the front of `held`.
    fn next_batch(&mut self) -> Vec<XLogData> {
        let n = self.held.len().min(self.batch_messages);
        let batch: Vec<XLogData> = self.held.drain(..n).collect();
        self.held_bytes -= batch.iter().map(held_cost).sum::<usize>();
        batch
    }

    fn queue_status(&mut self) {
        let status = self
            .feedback
            .status(self.shared.confirmed.load(), Instant::now());
        tracing::trace!(target: "pgsync_wal::stream", ?status, "status update");
        wire::status_update(
            status.write,
            status.flush,
            status.apply,
            SystemTime::now(),
            &mut self.out,
        );
        self.unflushed = true;
    }

    /// The server ended the stream: answer CopyDone, read to ReadyForQuery (or EOF), then
    /// hand the held messages to the consumer. Not cancel-safe (only run to completion).
    async fn server_done(&mut self) -> Result<(), WalError> {
        self.queue_status();
        frontend::copy_done(&mut self.out);
        let _ = timeout(STOP_GRACE, self.drain_to_end()).await;
        while !self.held.is_empty() {
            let batch = self.next_batch();
            if self.tx.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// A clean stop asked by the consumer. Not cancel-safe (only run to completion).
    async fn finish(&mut self) -> Result<(), WalError> {
        self.queue_status();
        frontend::copy_done(&mut self.out);
        match timeout(STOP_GRACE, self.drain_to_end()).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }

    /// Best effort: one last status update when the consumer vanished without `stop`.
    /// Not cancel-safe (only run to completion).
    async fn last_status(&mut self) {
        self.queue_status();
        let _ = timeout(Duration::from_secs(1), self.write_out()).await;
    }

    /// Writes and flushes everything queued. Cancel-safe, like [`send`].
    async fn write_out(&mut self) -> Result<(), WalError> {
        send(&mut self.writer, &mut self.out)
            .await
            .map_err(|e| WalError::io("sending to the server", e))?;
        self.unflushed = false;
        Ok(())
    }

    /// Writes what is queued, then discards frames until the server's CopyDone,
    /// CommandComplete and ReadyForQuery (or EOF), and sends Terminate. Not cancel-safe
    /// (dropped under a timeout, the connection is simply closed).
    async fn drain_to_end(&mut self) -> Result<(), WalError> {
        self.write_out().await?;
        loop {
            match self.reader.next("ending the stream").await {
                Ok(Backend::Message(Message::ReadyForQuery(_))) => break,
                Ok(Backend::Message(Message::ErrorResponse(body))) => {
                    return Err(server_error(&body, "ending the stream"));
                }
                Ok(_) => {}
                Err(WalError::ConnectionLost { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        frontend::terminate(&mut self.out);
        self.write_out().await?;
        let _ = self.writer.shutdown().await;
        Ok(())
    }

    fn lost(&self, e: std::io::Error) -> WalError {
        self.with_notice(WalError::io("sending a status update", e))
    }

    /// Adds the server's last notice (e.g. "terminating connection due to immediate
    /// shutdown command") to a lost-connection error.
    fn with_notice(&self, e: WalError) -> WalError {
        match (e, &self.last_notice) {
            (WalError::ConnectionLost { during, reason }, Some(notice)) => {
                WalError::ConnectionLost {
                    during,
                    reason: format!("{reason} (the server said: {notice})"),
                }
            }
            (e, _) => e,
        }
    }
}

/// What a held message counts against the budget: its payload plus the bookkeeping, so
/// a flood of tiny messages is bounded too.
fn held_cost(x: &XLogData) -> usize {
    x.data.len() + std::mem::size_of::<XLogData>()
}

/// Writes all of `out` and flushes. Cancel-safe: what was written is gone from `out`, the
/// rest stays; calling again continues.
async fn send(writer: &mut WriteHalf<Socket>, out: &mut BytesMut) -> std::io::Result<()> {
    while !out.is_empty() {
        writer.write_buf(out).await?;
    }
    writer.flush().await
}

fn notice_text(body: &postgres_protocol::message::backend::NoticeResponseBody) -> String {
    use fallible_iterator::FallibleIterator;
    let mut fields = body.fields();
    let (mut code, mut message) = (String::new(), String::new());
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    format!("{message} [SQLSTATE {code}]")
}
