//! `pgsync run`: the task until Ctrl-C (SIGINT) or SIGTERM, which stop it at a transaction
//! boundary with the durable position reported to the source. SIGHUP re-reads the task
//! file for new `[throttle]` limits.

use anyhow::Context as _;
use std::io::IsTerminal as _;
use std::sync::Arc;

use pgsync_task::forward::{self, Shutdown};
use pgsync_task::ops::{RunOptions, http, metrics::Metrics};
use pgsync_task::{TaskError, TaskSpec};
use tokio::signal::unix::{SignalKind, signal};

use crate::Exit;
use crate::cli::RunArgs;

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
    let metrics = Arc::new(Metrics::new(&spec.name, spec.sync.two_way));
    // Bound before anything starts, so that a busy address is told at once.
    let _server = match &args.metrics_addr {
        Some(addr) => {
            let listener = http::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
            Some(AbortOnDrop(tokio::spawn(http::serve(
                listener,
                Arc::clone(&metrics),
            ))))
        }
        None => None,
    };
    let (progress, events) = tokio::sync::mpsc::unbounded_channel();
    let _bars = AbortOnDrop(tokio::spawn(crate::progress::show(
        events,
        std::io::stderr().is_terminal(),
    )));
    // SIGHUP re-reads the task file; the [throttle] limits take effect at once.
    let (throttle_tx, throttle) = tokio::sync::watch::channel(spec.throttle.clone());
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let path = args.task.config.clone();
    let _reload = AbortOnDrop(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match TaskSpec::from_file(&path) {
                Ok(new) => {
                    throttle_tx.send_replace(new.throttle);
                    tracing::info!(
                        "task file reloaded: [throttle] applies now, other keys at the next start"
                    );
                }
                Err(e) => tracing::warn!("task file not reloaded: {e}"),
            }
        }
    }));
    let options = RunOptions {
        metrics: Some(metrics),
        progress: Some(progress),
        throttle: Some(throttle),
    };
    let (trigger, shutdown) = Shutdown::new();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping at the next transaction boundary");
        trigger.trigger();
    });
    tracing::info!(task = %spec.name, source = %spec.source.describe(), destination = %spec.destination.describe(), "starting");
    match forward::run_with(&spec, shutdown, options).await {
        Ok(()) => Ok(Exit::Ok),
        Err(TaskError::Precheck(report)) => {
            tracing::error!("precheck failed; nothing was written:\n{report}");
            Ok(Exit::PrecheckFailed)
        }
        Err(e) => Err(e.into()),
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
