//! Operating a task: what runs around the replication core so that a person can leave it
//! alone in production (MISSION L2–L6).
//!
//! ```text
//!            ┌──────────── forward::run (retry loop: ops::retry) ────────────┐
//!  CLI ──────┤ initial sync ── throttle (full), progress -> metrics, bars     │
//!  --metrics │ stream ── hooks at group commit: metrics, throttle (incr.)    │
//!  -addr     │        └─ stops at a transaction boundary when paused         │
//!    │       └──────────────────────────────────────────────────────────────┘
//!    │        monitor (1 s): heartbeat + slot probe, pause flag, task_stats, alerts
//!    └──> http: GET /metrics  <- Metrics (atomics, shared)
//! ```
//!
//! | module      | what                                                        |
//! |-------------|-------------------------------------------------------------|
//! | `config`    | `[retry]`, `[throttle]`, `[heartbeat]`, `[alerts]` sections   |
//! | `retry`     | error classes and windows                                   |
//! | `metrics`   | the figures, Prometheus text                                |
//! | `hooks`     | what the streaming loop calls at group commit               |
//! | `heartbeat` | logical-message heartbeat and slot probe on the reading side |
//! | `store`     | `pgsync.task_stats`, `pgsync.task_control` (pause)          |
//! | `monitor`   | the once-a-second background chores                         |
//! | `alerts`    | command / webhook, once per condition per interval          |
//! | `http`      | the metrics endpoint                                        |

pub mod alerts;
pub mod config;
pub(crate) mod heartbeat;
pub(crate) mod hooks;
pub mod http;
pub mod metrics;
pub(crate) mod monitor;
pub mod retry;
pub mod store;

use std::sync::Arc;

use pgsync_snapshot::{Progress, Throttle};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::hooks::Hooks;
use self::metrics::Metrics;
use crate::names::Direction;
use crate::spec::{TaskSpec, ThrottleSpec};

pub use heartbeat::HEARTBEAT_PREFIX;

/// What the caller of [`crate::forward::run_with`] may attach to a run.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Shared figures (e.g. also served by [`http::serve`]); made by the run when absent.
    pub metrics: Option<Arc<Metrics>>,
    /// Progress events of the full copy (progress bars or log lines).
    pub progress: Option<UnboundedSender<Progress>>,
    /// New `[throttle]` limits while the task runs (a reloaded task file).
    pub throttle: Option<watch::Receiver<ThrottleSpec>>,
}

/// The operations side of one run; background tasks end when it is dropped.
#[derive(Debug)]
pub(crate) struct Ops {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) paused: watch::Receiver<bool>,
    pub(crate) full_throttle: Arc<Throttle>,
    incremental: [Arc<Throttle>; 2],
    progress: Option<UnboundedSender<Progress>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Ops {
    /// Starts the monitor for `spec`.
    pub(crate) fn start(spec: &TaskSpec, options: RunOptions) -> Self {
        let metrics = options
            .metrics
            .unwrap_or_else(|| Arc::new(Metrics::new(&spec.name, spec.sync.two_way)));
        let (paused_tx, paused) = watch::channel(false);
        let monitor = tokio::spawn(monitor::run(spec.clone(), Arc::clone(&metrics), paused_tx));
        let incr = spec.throttle.incremental();
        let mut ops = Self {
            metrics,
            paused,
            full_throttle: Arc::new(Throttle::new(spec.throttle.full())),
            incremental: [Arc::new(Throttle::new(incr)), Arc::new(Throttle::new(incr))],
            progress: options.progress,
            tasks: vec![monitor],
        };
        if let Some(mut updates) = options.throttle {
            let full = Arc::clone(&ops.full_throttle);
            let incremental = ops.incremental.clone();
            ops.tasks.push(tokio::spawn(async move {
                while updates.changed().await.is_ok() {
                    let t = updates.borrow_and_update().clone();
                    full.set_limits(t.full());
                    incremental
                        .iter()
                        .for_each(|i| i.set_limits(t.incremental()));
                    tracing::info!(full = ?t.full(), incremental = ?t.incremental(), "new throttle limits");
                }
            }));
        }
        ops
    }

    /// The streaming hooks of `direction`.
    pub(crate) fn hooks(&self, direction: Direction) -> Hooks {
        let t = match direction {
            Direction::Forward => &self.incremental[0],
            Direction::Reverse => &self.incremental[1],
        };
        Hooks::new(Arc::clone(&self.metrics), direction, Arc::clone(t))
    }

    /// A sender for the full copy's progress: events update the metrics and go on to the
    /// caller's receiver, if any.
    pub(crate) fn copy_progress(&mut self) -> UnboundedSender<Progress> {
        let (tx, mut rx) = unbounded_channel::<Progress>();
        let metrics = Arc::clone(&self.metrics);
        let onward = self.progress.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                metrics.copy_progress(&event);
                if let Some(o) = &onward {
                    let _ = o.send(event);
                }
            }
        }));
        tx
    }

    /// Whether `pgsync pause` holds the task now.
    pub(crate) fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Stores the final figures (best effort) before the run returns.
    pub(crate) async fn store_final(&self, spec: &TaskSpec) {
        let write = async {
            let c = spec.destination.connect().await?;
            if store::ensure(&c).await? {
                store::write(&c, &self.metrics).await?;
            }
            Ok::<(), tokio_postgres::Error>(())
        };
        if let Ok(Err(e)) = tokio::time::timeout(std::time::Duration::from_secs(5), write).await {
            tracing::debug!(error = %e, "could not store the final figures");
        }
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}
