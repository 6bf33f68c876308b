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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
