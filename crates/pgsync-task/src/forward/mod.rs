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

mod initial;
mod link;
mod stream;

use std::time::Duration;

use tokio::sync::watch;

use self::link::Link;
use crate::error::TaskError;
use crate::names::{Direction, TaskNames};
use crate::precheck;
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
/// (a server restarting, a dropped connection) are retried with backoff.
pub async fn run(spec: &TaskSpec, mut shutdown: Shutdown) -> Result<(), TaskError> {
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
    let report = precheck_waiting_for_slot(spec, &mut shutdown).await;
    if !report.ok() {
        return Err(TaskError::Precheck(report));
    }
    let names = TaskNames::new(&spec.name, Direction::Forward);
    let mut started = false;
    let mut backoff = Backoff::default();
    loop {
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
                initial::run(spec, &names, &admin, &mut shutdown).await?;
                if shutdown.requested() {
                    return Ok(());
                }
            }
            let forward = Link::forward(spec);
            if !spec.sync.two_way {
                return stream::run(&forward, &mut shutdown, &mut backoff).await;
            }
            // Two-way: the reverse direction streams once the forward one does.
            let source = spec
                .source
                .connect()
                .await
                .map_err(TaskError::sql("connecting to the source"))?;
            let reverse = Link::reverse(spec, &source).await?;
            state::set_phase(&admin, &spec.name, Direction::Reverse, Phase::Incremental).await?;
            let (mut shutdown_rev, mut backoff_rev) = (shutdown.clone(), Backoff::default());
            tokio::try_join!(
                stream::run(&forward, &mut shutdown, &mut backoff),
                stream::run(&reverse, &mut shutdown_rev, &mut backoff_rev)
            )
            .map(drop)
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && !shutdown.requested() => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in = ?wait, "transient error; the task resumes after a pause");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.wait() => return Ok(()),
                }
            }
            Err(e) => {
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

/// Exponential backoff between reconnects: 0.5 s doubling to 30 s; reset by progress.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        now
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}
