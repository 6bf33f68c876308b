//! `pgsync status`, `release`, `pause` and `resume`: thin wrappers that print what the
//! library returns.

use std::io::Write as _;

use anyhow::Context as _;
use pgsync_task::{TaskSpec, release, status};

use crate::Exit;
use crate::cli::{PauseArgs, ReleaseArgs, StatusArgs};

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
    let st = status::read(&spec).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&st)? + "\n"
    } else {
        st.to_string()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the status")?;
    Ok(Exit::Ok)
}

pub(crate) async fn release(args: ReleaseArgs) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
    let done = release::release(&spec, args.force).await?;
    let mut out = std::io::stdout().lock();
    if done.removed.is_empty() {
        writeln!(out, "nothing to release for task {}", spec.name)?;
    }
    for line in &done.removed {
        writeln!(out, "removed {line}")?;
    }
    Ok(Exit::Ok)
}

/// Sets (`pause`) or clears the task's pause flag on the destination; the runner stops
/// at the next transaction boundary within a second or two, and resumes likewise.
pub(crate) async fn pause(args: PauseArgs, pause: bool) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
    let b = spec.destination.connect().await.with_context(|| {
        format!(
            "connecting to the destination {}",
            spec.destination.describe()
        )
    })?;
    let done = pgsync_task::ops::store::set_paused(&b, &spec.name, pause)
        .await
        .context("setting the pause flag")?;
    let mut out = std::io::stdout().lock();
    if !done {
        writeln!(
            out,
            "task {} has not been started on the destination; nothing to do",
            spec.name
        )?;
        return Ok(Exit::Failed);
    }
    let what = if pause {
        "paused (it stops at the next transaction boundary)"
    } else {
        "resumed"
    };
    writeln!(out, "task {} {what}", spec.name)?;
    Ok(Exit::Ok)
}
