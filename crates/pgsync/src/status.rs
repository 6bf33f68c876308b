//! `pgsync status` and `pgsync release`: thin wrappers that print what the library returns.

use std::io::Write as _;

use anyhow::Context as _;
use pgsync_task::{TaskSpec, release, status};

use crate::Exit;
use crate::cli::{ReleaseArgs, StatusArgs};

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
