//! `pgsync precheck`: load the task file, run every check, print the report.

use std::io::Write as _;

use anyhow::Context as _;
use pgsync_task::TaskSpec;
use pgsync_task::precheck;

use crate::Exit;
use crate::cli::PrecheckArgs;

pub(crate) async fn run(args: PrecheckArgs) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
    let report = precheck::run(&spec).await;
    let text = if args.json {
        serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
    } else {
        report.to_string()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the report")?;
    Ok(if report.ok() {
        Exit::Ok
    } else {
        Exit::PrecheckFailed
    })
}
