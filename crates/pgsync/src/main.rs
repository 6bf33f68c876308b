//! `pgsync`: the command line. Thin by design: it parses arguments and the task file,
//! sets up logging, calls into the libraries and maps the outcome to an exit code.
//!
//! Exit codes (stable, for scripts):
//! | code | meaning                                                        |
//! |------|----------------------------------------------------------------|
//! | 0    | success                                                        |
//! | 1    | the task failed at run time (the message says why)             |
//! | 2    | bad usage or a bad task file: nothing was connected or written |
//! | 3    | precheck found failures: nothing was written                   |
//! | 4    | `validate`: the two sides differ (after `--repair`, if given)  |

mod cli;
mod demo;
mod logging;
mod precheck;
mod progress;
mod run;
mod status;
mod validate;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Process exit codes; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Ok = 0,
    Failed = 1,
    BadInput = 2,
    PrecheckFailed = 3,
    Differences = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    // One thread runs every task. pgsync's own work per change is small next to the
    // servers' (decoding on the source, executing on the destination), and those servers
    // want the cores; what would cost is tasks on different threads waking each other for
    // every message and statement result (the socket task, the applier, each tokio-postgres
    // connection). On one thread a wake-up is a queue push.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Precheck(args) => precheck::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Status(args) => status::status(args).await,
            Command::Validate(args) => validate::validate(args).await,
            Command::Release(args) => status::release(args).await,
            Command::Pause(args) => status::pause(args, true).await,
            Command::Resume(args) => status::pause(args, false).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            let code = if e.downcast_ref::<pgsync_task::SpecError>().is_some() {
                Exit::BadInput
            } else {
                Exit::Failed
            };
            tracing::error!("{}", error_text(&e));
            code.into()
        }
    }
}

/// The error and those of its causes whose text it does not already contain.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}
