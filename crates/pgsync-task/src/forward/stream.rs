//! The incremental phase of one direction: changes from the reader's slot, applied
//! exactly once on the writer.
//!
//! ```text
//! select! (biased)
//!   1. shutdown       -> report the durable position, end the stream cleanly
//!   2. feedback tick  -> confirm what the writer has flushed
//!   3. next message   -> assemble; each complete transaction, plus whatever else is
//!      (or what was      already waiting, is applied as one writer transaction;
//!      read ahead)       transactions pgsync wrote itself (two-way) are skipped in order
//!   while a group is applied, what arrives is assembled for the next one (ahead.rs)
//! ```
//! The stream's socket task answers keepalives on its own, so a slow apply never gets the
//! connection dropped; the slot only advances to what the writer has made durable.

use std::time::Duration;

use futures_util::FutureExt as _;
use pgsync_apply::{Applier, ApplierConfig};
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{ReplicationConnection, StartOptions, Transaction};

use super::ahead::{Ahead, Pending};
use super::early::Early;
use super::link::Link;
use super::source::Source;
use super::{Backoff, Shutdown, initial};
use crate::error::TaskError;
use crate::names::Direction;
use crate::ops::hooks::Hooks;

/// Source transactions applied together at most (when they are already waiting: a
/// backlog drains in few, large destination transactions, each one commit round trip).
pub(super) const MAX_GROUP_TXNS: usize = 5000;
/// Changes applied together at most.
const MAX_GROUP_CHANGES: usize = 50_000;
/// Bytes of changes held in memory by a group at most.
pub(super) const MAX_GROUP_BYTES: usize = 32 << 20;
/// Source transactions a group waits for while the stream works through a backlog...
const BACKLOG_GROUP_TXNS: usize = 2000;
/// ... for this long at most.
const LINGER: Duration = Duration::from_millis(20);
/// How often the applier's durable position is handed to the stream.
const FEEDBACK_EVERY: Duration = Duration::from_millis(200);
/// How often the stream sends its status update to the source.
const FEEDBACK_TO_SOURCE: Duration = Duration::from_secs(1);

pub(super) async fn run(
    link: &Link,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
) -> Result<(), TaskError> {
    let what = match link.direction {
        Direction::Forward => "connecting to the destination",
        Direction::Reverse => "connecting to the source (reverse apply)",
    };
    let dest = link.writer.connect().await.map_err(TaskError::sql(what))?;
    let mut config = ApplierConfig::new(&link.names.origin);
    config.mapping = link.mapping.clone();
    config.only_tables = link.only_tables.clone();
    config.ddl = link.ddl.clone();
    if matches!(link.ddl, pgsync_apply::DdlApply::Follow { .. }) {
        // The DDL follower translates B's names into A's current ones itself.
        config.mapping = pgsync_names::Mapping::identity();
        config.only_tables = None;
    }
    config.conflicts = link.conflicts.clone();
    config.loop_marker = link
        .loop_filter
        .as_ref()
        .and_then(|f| f.marker_statement(&link.task));
    link.prepare(&dest).await?;
    if link.direction == Direction::Forward {
        let admin = link.writer.connect().await.map_err(TaskError::sql(what))?;
        let source = link
            .reader
            .connect()
            .await
            .map_err(TaskError::sql("connecting to the source"))?;
        config.copied_at = initial::copied_at(&admin, &source, &link.task).await?;
    }
    let mut applier = Applier::new(dest, config).await?;

    if super::catchup::run(link, shutdown, backoff, &mut applier).await? {
        return Ok(());
    }

    let conn = ReplicationConnection::connect(&link.reader.replication_config()?).await?;
    let options = start_options(link, &applier, conn.server_major());
    let stream = conn.start_replication(&options).await?;
    tracing::info!(direction = ?link.direction, slot = %link.names.slot, from = %applier.progress(), "streaming changes");
    // Streamed transactions go to the applier as they arrive when loop prevention does
    // not need them whole (no pgsync origins to drop, or the server drops them).
    let early = link.loop_filter.is_none() || options.origin_none;
    drain(link, shutdown, backoff, &mut applier, stream, early).await
}

/// What START_REPLICATION (and a catch-up read) asks of pgoutput, from the writer's
/// progress on.
pub(super) fn start_options(link: &Link, applier: &Applier, server_major: u32) -> StartOptions {
    let mut options = StartOptions::new(&link.names.slot, &link.publications);
    options.start = applier.progress();
    // The source (pg_stat_replication, slot lag) learns the applied position within a
    // second, not only every third of wal_sender_timeout.
    options.status_interval = Some(FEEDBACK_TO_SOURCE);
    // With origins, 16+ servers drop pgsync's (and any replicated) transactions themselves.
    options.origin_none = link
        .loop_filter
        .as_ref()
        .is_some_and(|f| f.mode() == pgsync_loop::LoopPrevention::Origins)
        && server_major >= 16;
    options
}

/// Reads `source` and applies what it sends until a shutdown (`Ok`) or an error; the
/// source ending is [`TaskError::StreamEnded`], after everything before it was applied.
pub(super) async fn drain(
    link: &Link,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
    applier: &mut Applier,
    mut stream: impl Source,
    early: bool,
) -> Result<(), TaskError> {
    let mut assembler = Assembler::new(AssemblerConfig {
        emit_streamed: early,
        ..AssemblerConfig::default()
    });
    let mut tick = tokio::time::interval(FEEDBACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut group = Group {
        hooks: link.hooks.clone(),
        early: Early::new(early),
        ..Group::default()
    };
    let mut ahead = Ahead::default();
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => {
                stream.confirm(applier.durable().await?);
                stream.stop().await?;
                tracing::info!(direction = ?link.direction, applied = %applier.progress(), "stopped");
                return Ok(());
            }
            _ = tick.tick() => {
                stream.confirm(applier.durable().await?);
                continue;
            }
            // Read ahead during the last apply: that is the next group.
            () = std::future::ready(()), if !ahead.is_empty() => {}
            msg = stream.recv(), if ahead.is_empty() => ahead.received(&mut assembler, msg),
        }
        // Whatever else is already here joins the group (recv is cancel-safe).
        loop {
            group.take_ahead(link, &mut ahead, applier).await?;
            if group.full() || !ahead.has_room() {
                break;
            }
            match stream.recv().now_or_never() {
                Some(msg) => ahead.received(&mut assembler, msg),
                None => break,
            }
        }
        // A backlog (the source sends transactions committed a while ago) goes in large
        // groups: the destination pays far less per transaction in a few large
        // transactions than in many small ones, and only the backlog waits meanwhile.
        if group.behind {
            let until = tokio::time::Instant::now() + LINGER;
            while group.behind && !group.full() && group.txns.len() < BACKLOG_GROUP_TXNS {
                let msg = tokio::select! {
                    biased;
                    () = shutdown.wait() => break,
                    () = tokio::time::sleep_until(until) => break,
                    msg = stream.recv() => msg,
                };
                ahead.received(&mut assembler, msg);
                group.take_ahead(link, &mut ahead, applier).await?;
            }
        }
        let flush = group.flush(applier);
        tokio::pin!(flush);
        let applied = loop {
            tokio::select! {
                biased;
                r = &mut flush => break r?,
                msg = stream.recv(), if ahead.has_room() => ahead.received(&mut assembler, msg),
            }
        };
        if applied {
            backoff.reset();
        }
        // Nothing half-assembled, queued or unapplied: an idle slot may advance.
        if ahead.is_empty() && assembler.is_idle() {
            stream.mark_done();
        }
    }
}

/// Transactions waiting to be applied together.
#[derive(Default)]
struct Group {
    txns: Vec<Transaction>,
    changes: usize,
    bytes: usize,
    /// Metrics and throttle (crate::ops).
    hooks: Hooks,
    /// Streamed transactions applied as they arrive (see early.rs).
    early: Early,
    /// The last transaction taken came from a backlog (see ahead.rs).
    behind: bool,
}

impl Group {
    fn full(&self) -> bool {
        self.txns.len() >= MAX_GROUP_TXNS
            || self.changes >= MAX_GROUP_CHANGES
            || self.bytes >= MAX_GROUP_BYTES
    }

    /// Takes what was read ahead, while the group has room.
    async fn take_ahead(
        &mut self,
        link: &Link,
        ahead: &mut Ahead,
        applier: &mut Applier,
    ) -> Result<(), TaskError> {
        while !self.full() {
            let Some(p) = ahead.pop() else { break };
            self.take(link, p, applier).await?;
        }
        Ok(())
    }

    /// Takes one assembled item: a completed transaction joins the group, or, when
    /// pgsync wrote it (two-way), is skipped after what is before it was applied.
    async fn take(
        &mut self,
        link: &Link,
        pending: Result<Pending, TaskError>,
        applier: &mut Applier,
    ) -> Result<(), TaskError> {
        let Pending {
            assembled,
            wal_start,
            open_streams,
            behind,
        } = match pending {
            Ok(p) => p,
            Err(e) => {
                // What came before the failure is applied first.
                self.flush(applier).await?;
                return Err(e);
            }
        };
        match assembled {
            Assembled::StreamedChange { xid, change, .. } => {
                let alone = self.txns.is_empty() && open_streams == 1;
                self.early
                    .change(applier, xid, change, wal_start, alone)
                    .await;
            }
            Assembled::StreamAborted { xid, subxid } => {
                self.early.aborted(applier, xid, subxid).await;
            }
            Assembled::Transaction(txn) => {
                let waiting = !self.txns.is_empty();
                if self.early.completed(applier, &txn, waiting).await? {
                    self.hooks
                        .applied(std::slice::from_ref(&txn), txn.len(), txn.memory_bytes())
                        .await;
                    return Ok(());
                }
                let echo = match &link.loop_filter {
                    Some(f) => f.is_echo(&txn)?,
                    None => false,
                };
                if echo {
                    self.flush(applier).await?;
                    applier.skip(&txn);
                } else {
                    self.changes += txn.len();
                    self.bytes += txn.memory_bytes();
                    self.behind = behind;
                    self.txns.push(txn);
                }
            }
            other => tracing::debug!(?other, "ignored"),
        }
        Ok(())
    }

    /// Applies the group; true when something was applied.
    async fn flush(&mut self, applier: &mut Applier) -> Result<bool, TaskError> {
        if self.txns.is_empty() {
            return Ok(false);
        }
        applier.apply(&self.txns).await.map_err(|e| {
            if applier.schema_may_have_moved(&e) {
                TaskError::SchemaMoved(e)
            } else {
                e.into()
            }
        })?;
        self.hooks
            .applied(&self.txns, self.changes, self.bytes)
            .await;
        self.txns.clear();
        self.changes = 0;
        self.bytes = 0;
        self.behind = false;
        Ok(true)
    }
}
