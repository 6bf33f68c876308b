//! Waiting for the lag to pass: after reading the source at WAL position `L`, wait until
//! the destination has applied every source transaction that committed at or before `L`.
//! Only then is a difference between what was read on the source and what is read on the
//! destination a real one, not a change still in flight.
//!
//! ```text
//!  origin progress on the writer >= L ─────────────────────────────> applied
//!  slot's walsender decoded past L (sent_lsn >= L), the task's
//!    writer sessions idle and the origin's progress unchanged
//!    over three polls (nothing in flight: the source was quiet) ───> applied
//!  no slot (no task streams here) ─────────────────────────────────> no task
//!  slot not streaming, or the deadline passed ─────────────────────> not applied
//! ```
//! The origin's progress is the end of the last source transaction applied, so under
//! load it soon passes `L`; on a quiet source it stays below, which is why the second rule
//! looks at the walsender and at the writer's sessions instead.

use std::time::Duration;

use pgsync_wal::Lsn;
use serde::Serialize;

use super::error::ValidateError;
use super::session::Side;
use crate::names::TaskNames;

/// How often the positions are polled.
const POLL: Duration = Duration::from_millis(100);
/// Consecutive quiet polls that count as "nothing in flight".
const QUIET_POLLS: u32 = 3;

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// The writer applied everything up to the position.
    Applied,
    /// The task has no slot on the reading side: there is nothing to wait for.
    NoTask,
    /// The slot is not streaming (the task is stopped) and is behind the position.
    NotStreaming,
    /// The deadline passed first.
    TimedOut,
}

/// One direction of a task: the side its slot is on and the side it writes to.
#[derive(Debug)]
pub(super) struct Direction<'a> {
    pub(super) reader: &'a Side,
    pub(super) writer: &'a Side,
    pub(super) names: TaskNames,
    /// `application_name` of the task's own sessions on the writer.
    pub(super) app_name: String,
}

impl Direction<'_> {
    /// The reader's current WAL position.
    pub(super) async fn mark(&self) -> Result<Lsn, ValidateError> {
        let text: String = self
            .reader
            .client(0)
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(self.reader.err("reading the WAL position"))?
            .get(0);
        Ok(text.parse().unwrap_or(Lsn::INVALID))
    }

    /// Waits (at most `timeout`) until the writer has applied what the reader committed
    /// up to `lsn`. Cancel-safe: it only reads.
    pub(super) async fn wait(&self, lsn: Lsn, timeout: Duration) -> Result<Settled, ValidateError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut quiet = 0u32;
        let mut last_progress = None;
        loop {
            let progress = self.progress().await?;
            if progress >= lsn {
                tracing::debug!(%lsn, %progress, "lag passed: applied");
                return Ok(Settled::Applied);
            }
            let Some(slot) = self.slot().await? else {
                return Ok(Settled::NoTask);
            };
            if slot.confirmed >= lsn {
                tracing::debug!(%lsn, confirmed = %slot.confirmed, "lag passed: confirmed");
                return Ok(Settled::Applied);
            }
            let Some(sent) = slot.sent else {
                return Ok(Settled::NotStreaming);
            };
            let idle = sent >= lsn && last_progress == Some(progress) && !self.writing().await?;
            quiet = if idle { quiet + 1 } else { 0 };
            if quiet >= QUIET_POLLS {
                tracing::debug!(%lsn, %progress, %sent, "lag passed: nothing in flight");
                return Ok(Settled::Applied);
            }
            last_progress = Some(progress);
            if tokio::time::Instant::now() + POLL > deadline {
                return Ok(Settled::TimedOut);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The origin's progress on the writer (`0/0` before anything was applied).
    async fn progress(&self) -> Result<Lsn, ValidateError> {
        let row = self
            .writer
            .client(0)
            .query_opt(
                "SELECT pg_replication_origin_progress(roname, false)::text
                 FROM pg_replication_origin WHERE roname = $1",
                &[&self.names.origin],
            )
            .await
            .map_err(self.writer.err("reading the origin's progress"))?;
        Ok(row
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|t| t.parse().ok())
            .unwrap_or(Lsn::INVALID))
    }

    async fn slot(&self) -> Result<Option<Slot>, ValidateError> {
        let row = self
            .reader
            .client(0)
            .query_opt(
                "SELECT s.confirmed_flush_lsn::text, r.sent_lsn::text
                 FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
                 WHERE s.slot_name = $1",
                &[&self.names.slot],
            )
            .await
            .map_err(self.reader.err("reading the task's slot"))?;
        Ok(row.map(|r| {
            let lsn = |i: usize| r.get::<_, Option<String>>(i).and_then(|t| t.parse().ok());
            Slot {
                confirmed: lsn(0).unwrap_or(Lsn::INVALID),
                sent: lsn(1),
            }
        }))
    }

    /// Whether one of the task's sessions on the writer is inside a transaction.
    async fn writing(&self) -> Result<bool, ValidateError> {
        self.writer
            .client(0)
            .query_one(
                "SELECT count(*) > 0 FROM pg_stat_activity
                 WHERE application_name = $1 AND datname = current_database()
                   AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
                &[&self.app_name],
            )
            .await
            .map(|r| r.get(0))
            .map_err(self.writer.err("looking at the task's sessions"))
    }
}

#[derive(Debug)]
struct Slot {
    confirmed: Lsn,
    sent: Option<Lsn>,
}
