//! Arguments, as clap sees them. Every subcommand takes the task file with `--config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keep two PostgreSQL databases in sync in both directions.
#[derive(Debug, Parser)]
#[command(name = "pgsync", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub(crate) log_format: LogFormat,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the task: precheck, schema, full copy, then stream changes until Ctrl-C.
    Run(RunArgs),
    /// Check both servers before anything is written; exit 3 if an item fails.
    Precheck(PrecheckArgs),
    /// Show the task's phase, runner, slot lag and last error.
    Status(StatusArgs),
    /// Compare the tables on both servers while they run; exit 4 if they differ.
    Validate(ValidateArgs),
    /// Remove everything the task made on both servers (slots, publications, origins, state).
    Release(ReleaseArgs),
    /// Pause the running task at the next transaction boundary (the slot keeps the changes).
    Pause(PauseArgs),
    /// Resume a paused task where it stopped.
    Resume(PauseArgs),
    /// Start two throwaway local clusters and sync them, with a live view.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) task: TaskFile,
    /// Print JSON (for automation).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub(crate) task: TaskFile,
    /// Print the report as JSON (for automation).
    #[arg(long)]
    pub(crate) json: bool,
    /// Rewrite the destination's differing rows from the source (the source wins).
    #[arg(long)]
    pub(crate) repair: bool,
    /// Only this source table (schema.table); repeat for more. Default: all the task's.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub(crate) table: Vec<String>,
    /// Rows per key-range chunk (default 50000).
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) chunk_rows: Option<u64>,
    /// Longest wait for the task's lag to pass before a difference is believed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub(crate) lag_timeout: u64,
    /// Sessions per server: chunks checksummed at once on each side.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub(crate) jobs: u16,
}

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    #[command(flatten)]
    pub(crate) task: TaskFile,
    /// Also when a runner holds the task: its sessions are ended first.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) duration: Option<u64>,
    /// Orders written per second on A by the demo's load.
    #[arg(long, default_value_t = 50)]
    pub(crate) rate: u32,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) task: TaskFile,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PauseArgs {
    #[command(flatten)]
    pub(crate) task: TaskFile,
}

#[derive(Debug, Args)]
pub(crate) struct TaskFile {
    /// The task file (TOML).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct PrecheckArgs {
    #[command(flatten)]
    pub(crate) task: TaskFile,
    /// Print the report as JSON (for automation).
    #[arg(long)]
    pub(crate) json: bool,
    /// Fix what pgsync may fix itself, then check: sets REPLICA IDENTITY FULL on selected
    /// source tables that have neither a primary key nor a replica identity.
    #[arg(long)]
    pub(crate) fix: bool,
}
