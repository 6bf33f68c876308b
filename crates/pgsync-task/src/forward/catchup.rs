//! Catching up a slot that is far behind through the SQL decoding functions.
//!
//! Streaming, the walsender writes each pgoutput message with a `send()` of its own; on a
//! backlog of small transactions that socket work, not decoding, is most of its time (see
//! `pgsync_wal::peek`). So when the slot is `sync.catch_up_min_wal_mb` or more behind and
//! its transactions are small (at most [`SMALL_TXN_WAL`] of WAL each on average), the
//! backlog is read with `pg_logical_slot_peek_binary_changes` in an ordinary session, in
//! reads of at most [`CHUNK`] of WAL, and applied by the same loop as the stream:
//!
//! ```text
//! loop: behind >= min, small txns? ── no ──> START_REPLICATION from the writer's progress
//!         │ yes
//!         peek up to min(end of WAL, from + CHUNK) ─> drain (groups, loop filter, DDL)
//!         ─> pg_replication_slot_advance(what the writer made durable)
//! ```
//!
//! Exactly once as with the stream: the writer commits its progress with the rows and
//! skips what is at or below it; the slot is moved only to what is durable there, after
//! the read; a crash in between reads the same changes again. A read that completes no
//! transaction (one transaction longer than the read) leaves the rest to the stream, which
//! can apply it while it is still being decoded.

use std::time::Duration;

use pgsync_apply::Applier;
use pgsync_wal::Lsn;
use pgsync_wal::peek::{SlotPeek, advance_slot};
use tokio_postgres::Client;

use super::link::Link;
use super::stream::{drain, start_options};
use super::{Backoff, Shutdown};
use crate::error::TaskError;

/// WAL read by one catch-up read at most: its output is kept on the source (a tuplestore,
/// in temporary files beyond `work_mem`) until the read ends.
const CHUNK: u64 = 512 << 20;
/// WAL per transaction, on average over what the slot keeps, at most, for a catch-up:
/// small transactions are where the walsender's socket work is most of the cost. Larger
/// ones are better streamed: the stream overlaps decoding with applying (a catch-up read
/// decodes its whole chunk before the first row leaves the server), and streams a large
/// transaction while it is still being decoded.
const SMALL_TXN_WAL: u64 = 1024;
/// How long the end of a catch-up waits for the writer to make its last commits durable.
const DURABLE_WAIT: Duration = Duration::from_secs(2);

/// Catches up while the slot is far enough behind; `true` when a shutdown came meanwhile
/// (everything applied is committed, the task should stop).
pub(super) async fn run(
    link: &Link,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
    applier: &mut Applier,
) -> Result<bool, TaskError> {
    let Some(min) = link.catch_up_min_wal else {
        return Ok(false);
    };
    let during = "connecting to the source (catch-up)";
    let client = link
        .reader
        .connect()
        .await
        .map_err(TaskError::sql(during))?;
    // The reads are long by design: a role's statement_timeout must not cut them.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(TaskError::sql(during))?;
    let major = server_major(&client).await?;
    loop {
        // No slot, or in use: START_REPLICATION says so, and waits, as it does.
        let Some(slot) = slot_state(&client, &link.names.slot).await? else {
            return Ok(false);
        };
        let from = slot.confirmed.max(applier.progress());
        let behind = slot.wal_end.0.saturating_sub(from.0);
        let per_txn = slot.wal_end.0.saturating_sub(slot.restart.0) / slot.xacts.max(1);
        if slot.active || behind < min || per_txn > SMALL_TXN_WAL {
            if behind >= min {
                tracing::debug!(
                    direction = ?link.direction, behind_mb = behind >> 20, wal_per_txn = per_txn,
                    active = slot.active, "streaming the backlog"
                );
            }
            return Ok(false);
        }
        let upto = if behind > CHUNK {
            Lsn(from.0 + CHUNK)
        } else {
            slot.wal_end
        };
        tracing::info!(
            direction = ?link.direction, slot = %link.names.slot, from = %from, upto = %upto,
            behind_mb = behind >> 20,
            "catching up through pg_logical_slot_peek_binary_changes"
        );
        let before = applier.progress();
        let options = start_options(link, applier, major);
        let peek = SlotPeek::start(&client, &options, major, Some(upto)).await?;
        match drain(link, shutdown, backoff, applier, peek, false).await {
            Ok(()) => return Ok(true),
            Err(TaskError::StreamEnded) => {}
            Err(e) => return Err(e),
        }
        let durable = durable(applier).await?;
        if durable > slot.confirmed {
            advance_slot(&client, &link.names.slot, durable).await?;
        }
        tracing::info!(
            direction = ?link.direction, applied = %applier.progress(), confirmed = %durable,
            "catch-up read applied"
        );
        if applier.progress() == before {
            return Ok(false);
        }
    }
}

/// The reading side's slot as the catch-up needs it.
struct SlotState {
    /// The server's end of WAL (its replay position on a standby).
    wal_end: Lsn,
    confirmed: Lsn,
    /// Where decoding of the slot starts, and how many transaction ids were assigned
    /// since the oldest transaction it keeps: the average WAL of a transaction.
    restart: Lsn,
    xacts: u64,
    active: bool,
}

async fn slot_state(client: &Client, slot: &str) -> Result<Option<SlotState>, TaskError> {
    let row = client
        .query_opt(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
                     ELSE pg_catalog.pg_current_wal_lsn() END)::text, \
                    confirmed_flush_lsn::text, restart_lsn::text, \
                    coalesce(pg_catalog.age(catalog_xmin), 0)::int8, active \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(TaskError::sql("reading the slot's position"))?;
    let Some(row) = row else { return Ok(None) };
    let lsn = |i: usize| -> Lsn {
        row.get::<_, Option<&str>>(i)
            .and_then(|t| t.parse().ok())
            .unwrap_or_default()
    };
    Ok(Some(SlotState {
        wal_end: lsn(0),
        confirmed: lsn(1),
        restart: lsn(2),
        xacts: u64::try_from(row.get::<_, i64>(3)).unwrap_or_default(),
        active: row.get(4),
    }))
}

async fn server_major(client: &Client) -> Result<u32, TaskError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .map_err(TaskError::sql("reading the source's version"))?;
    Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or_default())
}

/// What may be confirmed: the writer's progress once it is durable there (its sessions
/// commit without waiting for the flush), or as far as the flush got within
/// [`DURABLE_WAIT`]; the stream confirms the rest later.
async fn durable(applier: &mut Applier) -> Result<Lsn, TaskError> {
    let until = tokio::time::Instant::now() + DURABLE_WAIT;
    loop {
        let durable = applier.durable().await?;
        if durable >= applier.progress() || tokio::time::Instant::now() >= until {
            return Ok(durable);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
