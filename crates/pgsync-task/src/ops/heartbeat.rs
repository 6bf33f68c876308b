//! Heartbeat and slot probe on the reading side of one direction (MISSION L5).
//!
//! Every `heartbeat.interval_seconds` the runner writes a transactional logical message
//! on the reading side:
//!
//! ```text
//! SELECT pg_logical_emit_message(true, 'pgsync.heartbeat', '{"task":..,"direction":..}')
//!   -> a one-message transaction in the WAL of that database
//!   -> decoded by the task's slot like any transaction (publications do not filter messages)
//!   -> applied as an empty writer transaction that records progress
//! ```
//!
//! So the newest applied source commit is never older than the interval while the task
//! keeps up, which makes `now − commit time` a lag that is known when the source is idle,
//! and a quiet slot's confirmed position keeps moving. No table is needed on the source.
//! Other consumers of the same database see the messages too and ignore them (pgoutput
//! sends messages only to consumers that ask, and pgsync's applier writes nothing for
//! them). In the same round trip the probe reads the slot: bytes of WAL not yet
//! confirmed (lag in bytes) and bytes retained.

use std::time::Duration;

use tokio::time::{Instant, timeout};
use tokio_postgres::Client;

use super::metrics::{DirectionMetrics, RunState, direction_str};
use crate::endpoint::Endpoint;

/// The message prefix of heartbeats.
pub const HEARTBEAT_PREFIX: &str = "pgsync.heartbeat";

/// How long one probe may take before it is abandoned (the server may be down).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The heartbeat writer and slot probe of one direction.
#[derive(Debug)]
pub(crate) struct Beat {
    reader: Endpoint,
    slot: String,
    payload: String,
    interval: Option<Duration>,
    client: Option<Client>,
    next_beat: Instant,
    emit_refused: bool,
}

impl Beat {
    /// `interval` `None`: probe only.
    pub(crate) fn new(
        task: &str,
        metrics: &DirectionMetrics,
        reader: Endpoint,
        slot: String,
        interval: Option<Duration>,
    ) -> Self {
        let payload = serde_json::json!({
            "task": task,
            "direction": direction_str(metrics.direction()),
        })
        .to_string();
        Self {
            reader,
            slot,
            payload,
            interval,
            client: None,
            next_beat: Instant::now(),
            emit_refused: false,
        }
    }

    /// Writes a heartbeat when one is due and the direction streams, then probes the slot.
    /// Failures (a server down) are logged at debug level and tried again next time.
    pub(crate) async fn tick(&mut self, m: &DirectionMetrics) {
        match timeout(PROBE_TIMEOUT, self.tick_inner(m)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(direction = direction_str(m.direction()), error = %e, "heartbeat or slot probe failed");
                self.client = None;
            }
            Err(_) => {
                tracing::debug!(
                    direction = direction_str(m.direction()),
                    "heartbeat or slot probe timed out"
                );
                self.client = None;
            }
        }
    }

    async fn tick_inner(&mut self, m: &DirectionMetrics) -> Result<(), tokio_postgres::Error> {
        let client = match &mut self.client {
            Some(c) if !c.is_closed() => c,
            slot => slot.insert(self.reader.connect().await?),
        };
        let streaming = matches!(
            m.state(),
            RunState::Streaming | RunState::Paused | RunState::Retrying
        );
        if let Some(interval) = self.interval
            && streaming
            && !self.emit_refused
            && Instant::now() >= self.next_beat
        {
            self.next_beat = Instant::now() + interval;
            match client
                .execute(
                    "SELECT pg_logical_emit_message(true, $1, $2)",
                    &[&HEARTBEAT_PREFIX, &self.payload],
                )
                .await
            {
                Ok(_) => {
                    m.heartbeats
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
                {
                    tracing::warn!(error = %e, "heartbeats are off: the task's user may not call pg_logical_emit_message (GRANT EXECUTE on it, or set heartbeat.enabled = false)");
                    self.emit_refused = true;
                }
                Err(e) => return Err(e),
            }
        }
        let row = client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint,
                        (pg_current_wal_lsn() - restart_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await?;
        if let Some(r) = row {
            let lag: Option<i64> = r.get(0);
            let retained: Option<i64> = r.get(1);
            use std::sync::atomic::Ordering::Relaxed;
            m.lag_bytes.store(lag.unwrap_or(-1).max(-1), Relaxed);
            m.retained_bytes
                .store(retained.unwrap_or(-1).max(-1), Relaxed);
        }
        Ok(())
    }
}
