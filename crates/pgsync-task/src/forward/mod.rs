//! The forward task, A -> B: precheck, slot and publication, schema and full copy under
//! the slot's exported snapshot, then changes from the slot's consistent point on.
//!
//! ```text
//!  precheck ─ lock ─ phase? ── none/created/schema/full ──> initial sync ──┐
//!                        └──── incremental ─────────────────────────────────┴─> stream
//! ```
//! Restart rule for the initial sync: an exported snapshot dies with its session, so an
//! initial sync interrupted by a crash is started again from a new slot; tables and
//! chunks already complete in `pgsync.copy_state` belong to the old snapshot and are
//! recopied (the copy state of the task is cleared with the old slot).

mod ahead;
mod catchup;
mod early;
mod filters;
mod initial;
mod link;
mod source;
mod stream;

use std::time::Duration;

use tokio::sync::watch;

pub(crate) use self::filters::all_operation_publications;
use self::link::Link;
use crate::error::TaskError;
use crate::names::{Direction, TaskNames};
use crate::ops::alerts::Alerts;
use crate::ops::metrics::RunState;
use crate::ops::retry::{self, Decision, ErrorClass, Retrier, RetryPolicy};
use crate::ops::{Ops, RunOptions};
use crate::precheck;
use crate::sequences::SequenceSync;
use crate::spec::TaskSpec;
use crate::state::{self, Phase, RunnerLock};

/// Tells a running task to stop (at a transaction boundary).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Asks every [`Shutdown`] to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A new pair.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when a stop is asked for. Cancel-safe.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// Runs the forward task until `shutdown` (Ok) or a definite error. Transient errors
/// (a server restarting, a dropped connection) are retried with backoff within the
/// `[retry]` windows.
pub async fn run(spec: &TaskSpec, shutdown: Shutdown) -> Result<(), TaskError> {
    run_with(spec, shutdown, RunOptions::default()).await
}

/// [`run`], with shared metrics and the copy's progress events (see [`RunOptions`]).
/// Failures are stored for `pgsync status` and alerted (`[alerts]`).
pub async fn run_with(
    spec: &TaskSpec,
    mut shutdown: Shutdown,
    options: RunOptions,
) -> Result<(), TaskError> {
    let mut ops = Ops::start(spec, options);
    let result = run_task(spec, &mut shutdown, &mut ops).await;
    match &result {
        Ok(()) => ops.metrics.set_state(RunState::Stopped),
        Err(e) => {
            ops.metrics.set_state(RunState::Failed);
            ops.metrics
                .active()
                .for_each(|d| d.set_last_error(e.to_string()));
            Alerts::new(spec.alerts.clone(), &spec.name)
                .failure(&e.to_string())
                .await;
        }
    }
    ops.store_final(spec).await;
    result
}

async fn run_task(
    spec: &TaskSpec,
    shutdown: &mut Shutdown,
    ops: &mut Ops,
) -> Result<(), TaskError> {
    // Another runner of the task is a definite error, told before the precheck (whose
    // slot check would otherwise wait for that runner's slot). The lock is taken here and
    // kept for the whole run.
    // (When the destination cannot be reached, the precheck says why.)
    let mut lock = match spec.destination.connect().await {
        Ok(session) => {
            Some(RunnerLock::try_acquire_within(session, &spec.name, LOCK_PATIENCE).await?)
        }
        Err(_) => None,
    };
    let report = precheck_waiting_for_slot(spec, shutdown).await;
    if !report.ok() {
        return Err(TaskError::Precheck(report));
    }
    let names = TaskNames::new(&spec.name, Direction::Forward);
    let mut started = false;
    let mut retrier = Retrier::new(RetryPolicy {
        connection: spec.retry.connection_window(),
        other: spec.retry.other_window(),
    });
    let (mut backoff, mut backoff_rev) = (Backoff::default(), Backoff::default());
    loop {
        retrier.attempt();
        let result = async {
            let admin = spec
                .destination
                .connect()
                .await
                .map_err(TaskError::sql("connecting to the destination"))?;
            if !started {
                state::ensure_schema(&admin)
                    .await
                    .map_err(TaskError::sql("creating schema pgsync on the destination"))?;
            } else if !state::exists(&admin).await? {
                // `release --force` removed the task under us: do not start it over.
                return Err(TaskError::Released);
            }
            // The lock lives in its own session; a destination restart ends it, so it is
            // taken again (or the task stops if another runner got it meanwhile).
            if !lock.as_ref().is_some_and(RunnerLock::is_held) {
                let session = spec
                    .destination
                    .connect()
                    .await
                    .map_err(TaskError::sql("connecting to the destination"))?;
                lock =
                    Some(RunnerLock::try_acquire_within(session, &spec.name, LOCK_PATIENCE).await?);
            }
            let phase = state::phase(&admin, &spec.name, Direction::Forward).await?;
            if started && phase.is_none() {
                // `release --force` removed the task under us: do not start it over.
                return Err(TaskError::Released);
            }
            started = true;
            if phase != Some(Phase::Incremental) {
                ops.metrics.set_state(RunState::Copying);
                let copy = initial::CopyOps {
                    throttle: std::sync::Arc::clone(&ops.full_throttle),
                    progress: ops.copy_progress(),
                };
                initial::run(spec, &names, &admin, shutdown, copy).await?;
                if shutdown.requested() {
                    return Ok(());
                }
            }
            // The streams stop at a transaction boundary on shutdown or on pause.
            let (trigger, mut stop) = Shutdown::new();
            let _relay = AbortOnDrop(relay(shutdown.clone(), ops.paused.clone(), trigger));
            let mut forward = Link::forward(spec);
            forward.hooks = ops.hooks(Direction::Forward);
            if !spec.sync.two_way {
                ops.metrics.set_state(RunState::Streaming);
                let sequences = SequenceSync::start(spec);
                let streamed = stream::run(&forward, &mut stop, &mut backoff).await;
                if let (Ok(()), Some(s)) = (&streamed, sequences) {
                    s.finish().await;
                }
                return streamed;
            }
            // Two-way: the reverse direction streams once the forward one does.
            let source = spec
                .source
                .connect()
                .await
                .map_err(TaskError::sql("connecting to the source"))?;
            let mut reverse = Link::reverse(spec, &source).await?;
            reverse.hooks = ops.hooks(Direction::Reverse);
            state::set_phase(&admin, &spec.name, Direction::Reverse, Phase::Incremental).await?;
            ops.metrics.set_state(RunState::Streaming);
            let mut stop_rev = stop.clone();
            tokio::try_join!(
                stream::run(&forward, &mut stop, &mut backoff),
                stream::run(&reverse, &mut stop_rev, &mut backoff_rev)
            )
            .map(drop)
        }
        .await;
        if backoff.take_progress() | backoff_rev.take_progress() {
            retrier.progressed();
        }
        let e = match result {
            Ok(()) if shutdown.requested() => return Ok(()),
            Ok(()) => {
                wait_while_paused(ops, shutdown).await;
                if shutdown.requested() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => e,
        };
        let class = retry::classify(&e);
        let decision = if shutdown.requested() {
            Decision::GiveUp {
                class: ErrorClass::Definite,
                failing_for: Duration::ZERO,
            }
        } else {
            retrier.decide(class)
        };
        match decision {
            Decision::RetryAfter(wait) => {
                ops.metrics.set_state(RunState::Retrying);
                ops.metrics.active().for_each(|d| {
                    d.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    d.set_last_error(e.to_string());
                });
                tracing::warn!(
                    class = class.as_str(),
                    retry = retrier.retries,
                    retry_in = ?wait,
                    cause = %e,
                    "transient error; the task resumes after a pause"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.wait() => return Ok(()),
                }
            }
            Decision::GiveUp { class, failing_for } => {
                let e = if class == ErrorClass::Definite {
                    e
                } else {
                    TaskError::RetriesExhausted {
                        class,
                        failing_for,
                        window: match class {
                            ErrorClass::Connection => spec.retry.connection_window(),
                            _ => spec.retry.other_window(),
                        },
                        source: Box::new(e),
                    }
                };
                // Best effort: the error goes to the user either way.
                if let Ok(c) = spec.destination.connect().await {
                    let _ =
                        state::set_error(&c, &spec.name, Direction::Forward, &e.to_string()).await;
                }
                return Err(e);
            }
        }
    }
}

/// Triggers `stop` when `shutdown` is asked for or the task is paused.
fn relay(
    mut shutdown: Shutdown,
    mut paused: watch::Receiver<bool>,
    stop: ShutdownTrigger,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.wait() => {}
            Ok(_) = paused.wait_for(|p| *p) => {}
        }
        stop.trigger();
    })
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The streams stopped for a pause: waits for `pgsync resume` (or a shutdown).
async fn wait_while_paused(ops: &mut Ops, shutdown: &mut Shutdown) {
    if !ops.is_paused() {
        return;
    }
    ops.metrics.set_state(RunState::Paused);
    tracing::info!("paused at a transaction boundary; waiting for pgsync resume");
    let mut paused = ops.paused.clone();
    tokio::select! {
        _ = paused.wait_for(|p| !*p) => {}
        () = shutdown.wait() => return,
    }
    tracing::info!("resumed");
}

/// How long `run` keeps trying for the runner lock before refusing: a killed runner's
/// session ends shortly after its process.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// How long `run` waits for the task's slot to be let go by a previous runner.
const SLOT_WAIT: Duration = Duration::from_secs(60);

/// The precheck, except that a slot still held by a walsender is waited for: after a
/// runner was killed, its walsender lets go of the slot only when it notices the dead
/// connection. Other failures are returned at once.
async fn precheck_waiting_for_slot(spec: &TaskSpec, shutdown: &mut Shutdown) -> precheck::Report {
    let deadline = tokio::time::Instant::now() + SLOT_WAIT;
    loop {
        let report = precheck::run(spec).await;
        let only_slot = report.failures().all(|c| c.id == "slot");
        if report.ok()
            || !only_slot
            || tokio::time::Instant::now() >= deadline
            || shutdown.requested()
        {
            return report;
        }
        tracing::info!(
            "the task's slot is still in use (a previous runner's session?); waiting for it"
        );
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.wait() => {}
        }
    }
}

/// Progress seen by a streaming loop (a group applied): the retry windows start over.
/// (The pauses between attempts are [`Retrier`]'s.)
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    progressed: bool,
}

impl Backoff {
    /// Something was applied.
    pub(crate) fn reset(&mut self) {
        self.progressed = true;
    }

    fn take_progress(&mut self) -> bool {
        std::mem::take(&mut self.progressed)
    }
}
