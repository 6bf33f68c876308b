//! `pgsync validate`: compares the task's tables on both servers while they run, prints
//! the report (text or JSON), and with `--repair` rewrites the destination's differing rows
//! from the source. Exit 0 when equal, 4 when differences remain.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use pgsync_names::QualifiedName;
use pgsync_task::TaskSpec;
use pgsync_task::validate::{self, ValidateOptions};

use crate::Exit;
use crate::cli::ValidateArgs;

pub(crate) async fn validate(args: ValidateArgs) -> anyhow::Result<Exit> {
    let spec = TaskSpec::from_file(&args.task.config)?;
    let mut options = ValidateOptions {
        repair: args.repair,
        lag_timeout: Duration::from_secs(args.lag_timeout),
        sessions: usize::from(args.jobs),
        ..ValidateOptions::default()
    };
    if let Some(rows) = args.chunk_rows {
        options.chunk_rows = rows;
    }
    for t in &args.table {
        match QualifiedName::parse(t) {
            Ok(name) => options.tables.push(name),
            Err(e) => {
                tracing::error!("--table {t:?}: {e} (write schema.table)");
                return Ok(Exit::BadInput);
            }
        }
    }
    let report = match validate::validate(&spec, &options).await {
        Ok(r) => r,
        Err(e) if e.is_bad_input() => {
            tracing::error!("{e}");
            return Ok(Exit::BadInput);
        }
        Err(e) => return Err(e.into()),
    };
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_string()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the report")?;
    Ok(if report.has_differences() {
        Exit::Differences
    } else {
        Exit::Ok
    })
}
