//! The incremental phase: changes from the slot, applied exactly once.
//!
//! ```text
//! select! (biased)
//!   1. shutdown       -> report the durable position, end the stream cleanly
//!   2. feedback tick  -> confirm what the destination has flushed
//!   3. next message   -> assemble; each complete transaction, plus whatever else is
//!                        already waiting, is applied as one destination transaction
//! ```
//! The stream's socket task answers keepalives on its own, so a slow apply never gets the
//! connection dropped; the slot only advances to what the destination has made durable.

use std::time::Duration;

use futures_util::FutureExt as _;
use pgsync_apply::{Applier, ApplierConfig};
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{ReplicationConnection, StartOptions, Transaction};

use super::{Backoff, Shutdown, initial};
use crate::error::TaskError;
use crate::names::TaskNames;
use crate::spec::TaskSpec;

/// Source transactions applied together at most (when they are already waiting).
const MAX_GROUP_TXNS: usize = 500;
/// Changes applied together at most.
const MAX_GROUP_CHANGES: usize = 5000;
/// How often the durable position is reported to the source.
const FEEDBACK_EVERY: Duration = Duration::from_millis(200);

pub(super) async fn run(
    spec: &TaskSpec,
    names: &TaskNames,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
) -> Result<(), TaskError> {
    let dest = spec
        .destination
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the destination"))?;
    let admin = spec
        .destination
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the destination"))?;
    let mut config = ApplierConfig::new(&names.origin);
    config.mapping = spec.mapping.clone();
    config.copied_at = initial::copied_at(&admin, &spec.name).await?;
    drop(admin);
    let mut applier = Applier::new(dest, config).await?;

    let conn = ReplicationConnection::connect(&initial::replication_config(spec)?).await?;
    let mut options = StartOptions::new(&names.slot, [&names.publication]);
    options.start = applier.progress();
    let mut stream = conn.start_replication(&options).await?;
    tracing::info!(slot = %names.slot, from = %applier.progress(), "streaming changes");

    let mut assembler = Assembler::new(AssemblerConfig::default());
    let mut tick = tokio::time::interval(FEEDBACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut group: Vec<Transaction> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => {
                stream.confirm(applier.durable().await?);
                stream.stop().await?;
                tracing::info!(applied = %applier.progress(), "stopped");
                return Ok(());
            }
            _ = tick.tick() => {
                stream.confirm(applier.durable().await?);
            }
            msg = stream.recv() => {
                let Some(data) = msg? else { return Err(TaskError::StreamEnded) };
                collect(&mut assembler, &data.data, &mut group)?;
                // Whatever else is already here joins the group (recv is cancel-safe).
                let mut changes: usize = group.iter().map(Transaction::len).sum();
                while group.len() < MAX_GROUP_TXNS && changes < MAX_GROUP_CHANGES {
                    match stream.recv().now_or_never() {
                        Some(Ok(Some(more))) => {
                            collect(&mut assembler, &more.data, &mut group)?;
                            changes = group.iter().map(Transaction::len).sum();
                        }
                        Some(Ok(None)) | None => break,
                        Some(Err(e)) => return Err(e.into()),
                    }
                }
                if !group.is_empty() {
                    applier.apply(&group).await?;
                    group.clear();
                    backoff.reset();
                }
            }
        }
    }
}

/// Feeds one payload to the assembler; a completed transaction joins `group`.
fn collect(
    assembler: &mut Assembler,
    payload: &bytes::Bytes,
    group: &mut Vec<Transaction>,
) -> Result<(), TaskError> {
    match assembler.push_payload(payload)? {
        Some(Assembled::Transaction(txn)) => group.push(txn),
        Some(other) => tracing::debug!(?other, "ignored"),
        None => {}
    }
    Ok(())
}
