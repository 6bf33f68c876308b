//! One error type for the kit: every failure names what went wrong and how to fix it,
//! because a test that cannot start its server should say why in its first line.

use std::path::PathBuf;

/// Why a cluster could not be set up, started, stopped or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "no PostgreSQL server binaries found (looked in: {searched}). Install them with \
         `apt-get install postgresql-15` (Debian/Ubuntu) or run `scripts/install-pg18.sh`, \
         or set PGSYNC_PG_BIN to the bin/ directory of a PostgreSQL build that contains \
         initdb, pg_ctl and postgres"
    )]
    NoBinaries {
        /// The places that were tried, in order, with the reason each was rejected.
        searched: String,
    },

    /// `PGSYNC_PG_BIN` (or an explicit override) points somewhere unusable.
    #[error(
        "{dir} is not a PostgreSQL bin/ directory: {missing} is missing. Point PGSYNC_PG_BIN \
         at the directory holding initdb, pg_ctl and postgres (e.g. /usr/lib/postgresql/15/bin), \
         or unset it to search the usual places"
    )]
    BadBinDir {
        /// The directory that was given.
        dir: PathBuf,
        /// The first required program not found there.
        missing: &'static str,
    },

    /// The unprivileged OS user that runs servers when we are root could not be made.
    #[error(
        "running as root, and could not create the OS user `{user}` that runs the test servers \
         ({reason}); create it with `useradd --system --no-create-home {user}` or run the \
         tests as a normal user"
    )]
    OsUser {
        /// The user name.
        user: String,
        /// What failed.
        reason: String,
    },

    /// Test certificates could not be made.
    #[error("could not generate test certificates: {0}")]
    Certificates(String),

    /// A server program (`initdb`, `pg_ctl`, `pgbench`, ...) failed.
    #[error("`{program}` failed ({status}): {output}")]
    Command {
        /// The program that ran.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of what it printed.
        output: String,
    },

    /// The server did not come up; the end of its log says why.
    #[error("PostgreSQL did not start on port {port}; end of {log}:\n{log_tail}")]
    Start {
        /// The port it was told to use.
        port: u16,
        /// The server log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// The server did not stop in time.
    #[error("PostgreSQL (pid {pid}) did not stop within {seconds} s")]
    Stop {
        /// The postmaster's pid.
        pid: i32,
        /// How long we waited.
        seconds: u64,
    },

    /// The cluster is not running, but the call needs it to be (or the other way round).
    #[error("the cluster is {state}, but this needs it {wanted}")]
    State {
        /// What it is.
        state: &'static str,
        /// What the call needs.
        wanted: &'static str,
    },

    /// Connecting to, or querying, the server failed.
    #[error("{what}: {source}")]
    Postgres {
        /// What we were doing.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A file-system or process call failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    pub(crate) fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let what = what.into();
        move |source| Self::Postgres { what, source }
    }
}

/// The kit's result type.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
