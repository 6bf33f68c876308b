//! Logging through tracing to stderr, for people or as JSON lines. Standard output is kept
//! for command results (reports, status), so they can be piped.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub(crate) fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // The server's notices on SQL sessions come out as tokio-postgres' info lines; the
    // ones pgsync causes ("relation ... already exists, skipping" from its idempotent
    // set-up) say nothing to a user, and its debug lines are every query. A RUST_LOG that
    // names tokio_postgres shows them again.
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("tokio_postgres"));
    if !named && let Ok(quiet) = "tokio_postgres=warn".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
