//! What the streaming loop calls at each group commit: the incremental throttle and the
//! figures behind lag and rates. Kept here so that the loop itself stays a few lines
//! longer, not a module longer; without operations attached the hooks do nothing.
//!
//! ```text
//! group ready -> apply (one writer transaction) -> hooks.applied(group)
//!                                                    |- metrics: lag, counters
//!                                                    `- throttle: wait while in debt
//! ```

use std::sync::Arc;

use pgsync_snapshot::Throttle;
use pgsync_wal::Transaction;

use super::metrics::Metrics;
use crate::names::Direction;

/// The hooks of one direction; `Default` is "none".
#[derive(Debug, Clone, Default)]
pub(crate) struct Hooks(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    metrics: Arc<Metrics>,
    direction: Direction,
    throttle: Arc<Throttle>,
}

impl Hooks {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        direction: Direction,
        throttle: Arc<Throttle>,
    ) -> Self {
        Self(Some(Arc::new(Inner {
            metrics,
            direction,
            throttle,
        })))
    }

    /// `txns` (with `changes` changes, `bytes` bytes) were committed on the writer; waits
    /// as long as the incremental throttle asks.
    pub(crate) async fn applied(&self, txns: &[Transaction], changes: usize, bytes: usize) {
        let (Some(h), Some(last)) = (&self.0, txns.last()) else {
            return;
        };
        h.metrics.direction(h.direction).applied(
            txns.len(),
            changes,
            bytes,
            last.commit_time.unix_micros(),
            last.end_lsn.into(),
        );
        h.throttle.acquire(changes as u64, bytes as u64).await;
    }
}
