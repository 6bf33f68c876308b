//! The runner's once-a-second chores, in one background task beside the replication:
//!
//! ```text
//! every 1 s:  rates <- counters
//!             per direction: heartbeat (when due) + slot probe on the reading side
//!             destination:   pause flag -> watch channel;  every 2 s: figures -> task_stats
//!             alerts:        lag held above the threshold, retained WAL
//! ```
//! Each step has its own deadline and failures only postpone it: a server being down is
//! the replication loop's business (it retries), never the monitor's.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::timeout;
use tokio_postgres::Client;

use super::alerts::Alerts;
use super::heartbeat::Beat;
use super::metrics::Metrics;
use super::store;
use crate::names::{Direction, TaskNames};
use crate::spec::TaskSpec;

const TICK: Duration = Duration::from_secs(1);
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until dropped (the caller aborts it).
pub(crate) async fn run(spec: TaskSpec, metrics: Arc<Metrics>, paused: watch::Sender<bool>) {
    let interval = spec.heartbeat.enabled.then(|| spec.heartbeat.interval());
    let mut beats: Vec<(Direction, Beat)> = metrics
        .active()
        .map(|d| {
            let dir = d.direction();
            let reader = match dir {
                Direction::Forward => spec.source.clone(),
                Direction::Reverse => spec.destination.clone(),
            };
            let slot = TaskNames::new(&spec.name, dir).slot;
            (dir, Beat::new(&spec.name, d, reader, slot, interval))
        })
        .collect();
    let mut alerts = Alerts::new(spec.alerts.clone(), &spec.name);
    let mut dest: Option<Client> = None;
    let mut ready = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        metrics.active().for_each(|d| d.sample_rates());
        for (dir, beat) in &mut beats {
            beat.tick(metrics.direction(*dir)).await;
        }
        let step = timeout(
            STEP_TIMEOUT,
            destination_step(&spec, &metrics, &paused, &mut dest, &mut ready, n % 2 == 0),
        )
        .await;
        if !matches!(step, Ok(Ok(()))) {
            if let Ok(Err(e)) = step {
                tracing::debug!(error = %e, "monitor: destination step failed");
            }
            dest = None;
            ready = false;
        }
        alerts.evaluate(&metrics);
    }
}

async fn destination_step(
    spec: &TaskSpec,
    metrics: &Metrics,
    paused: &watch::Sender<bool>,
    dest: &mut Option<Client>,
    ready: &mut bool,
    write: bool,
) -> Result<(), tokio_postgres::Error> {
    let c = match dest {
        Some(c) if !c.is_closed() => c,
        slot => slot.insert(spec.destination.connect().await?),
    };
    if !*ready {
        *ready = store::ensure(c).await?;
        if !*ready {
            return Ok(());
        }
    }
    let p = store::paused(c, &spec.name).await?;
    metrics.set_paused(p);
    paused.send_if_modified(|old| std::mem::replace(old, p) != p);
    // Only while the runner holds the task: after `release --force` ended its sessions,
    // a late write would bring the released task's state back.
    if write && crate::state::holder(c, &spec.name).await?.is_some() {
        store::write(c, metrics).await?;
    }
    Ok(())
}
