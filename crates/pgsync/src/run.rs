//! `pgsync run`: the task until Ctrl-C (SIGINT) or SIGTERM, which stop it at a transaction
//! boundary with the durable position reported to the source.

use anyhow::Context as _;
use pgsync_task::forward::{self, Shutdown};
use pgsync_task::{TaskError, TaskSpec};
use tokio::signal::unix::{SignalKind, signal};

use crate::Exit;
use crate::cli::RunArgs;

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
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
    match forward::run(&spec, shutdown).await {
        Ok(()) => Ok(Exit::Ok),
        Err(TaskError::Precheck(report)) => {
            tracing::error!("precheck failed; nothing was written:\n{report}");
            Ok(Exit::PrecheckFailed)
        }
        Err(e) => Err(e.into()),
    }
}
