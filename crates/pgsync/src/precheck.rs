//! `pgsync precheck`: load the task file, run every check, print the report. With
//! `--fix`, first set REPLICA IDENTITY FULL where a selected table has no key.

use std::io::Write as _;

use anyhow::Context as _;
use pgsync_task::TaskSpec;
use pgsync_task::precheck;

use crate::Exit;
use crate::cli::PrecheckArgs;

pub(crate) async fn run(args: PrecheckArgs) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
    if args.fix {
        let fixed = precheck::fix_replica_identity(&spec).await?;
        if !fixed.is_empty() && !args.json {
            let names: Vec<String> = fixed.iter().map(ToString::to_string).collect();
            let line = format!("fixed: REPLICA IDENTITY FULL on {}\n", names.join(", "));
            std::io::stdout()
                .write_all(line.as_bytes())
                .context("writing the report")?;
        }
    }
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
