//! One error type for the whole crate, classified in one place.
//!
//! A replication reader runs for days; what it must decide on every failure is "reconnect
//! and carry on, or stop and tell a person". [`WalError::retry`] answers that from a single
//! table ([`classify`]): lost connections and server shutdowns are worth retrying at once,
//! a slot held by another consumer after a wait, and a wrong password, a missing slot or a
//! server without `wal_level = logical` never (a person has to change something first).
//! The decoder's [`DecodeError`] and the assembler's [`TxnError`] convert into it with `?`.
//! Server errors keep their SQLSTATE and the server's own text, and add a sentence that
//! says how to fix the usual causes.

use std::fmt;
use std::io;

pub use tokio_postgres::error::SqlState;

use crate::pgoutput::DecodeError;
use crate::txn::TxnError;

/// Whether repeating the failed operation can succeed without a person changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient: reconnect (with the usual backoff) and carry on.
    Now,
    /// Something else holds what we need (e.g. another consumer has the slot); retrying
    /// works once it lets go, so wait longer between attempts.
    AfterWait,
    /// Definite: configuration, credentials or server setup must change first.
    Never,
}

/// Everything that can go wrong while talking replication protocol to PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The connection string or options cannot work.
    #[error("invalid replication connection settings: {0}")]
    Config(String),

    /// The DSN cannot be parsed or names a value that cannot work.
    #[error(transparent)]
    Dsn(#[from] crate::dsn::DsnError),

    /// The TCP connection or Unix socket could not be opened.
    #[error("could not connect to {target}: {source}")]
    Connect {
        /// Where we tried (`host:port` or the socket path).
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// TLS could not be set up: the server refused it while the sslmode requires it, the
    /// certificate did not verify, or the handshake failed.
    #[error("TLS with {target} failed: {reason}")]
    Tls {
        /// Where we tried.
        target: String,
        /// What went wrong and how to fix it.
        reason: String,
    },

    /// The client cannot authenticate the way the server asks (before any password check).
    #[error("cannot authenticate to {target}: {reason}")]
    Auth {
        /// Where we tried.
        target: String,
        /// What the server asked for and what is missing.
        reason: String,
    },

    /// PostgreSQL answered with an error.
    #[error("{0}")]
    Server(Box<ServerError>),

    /// The server closed the connection or it was reset (server shutdown, crash, network).
    #[error("the connection to the server was lost {during}: {reason}")]
    ConnectionLost {
        /// What we were doing.
        during: String,
        /// EOF, reset, or the last notice the server sent before it went away.
        reason: String,
    },

    /// Reading from or writing to the socket failed for another reason.
    #[error("I/O error {during}: {source}")]
    Io {
        /// What we were doing.
        during: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The server sent something the replication protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// The server is too old for what was asked (e.g. `origin 'none'` before 16).
    #[error("PostgreSQL {server_major} cannot {what}: it needs PostgreSQL {needs}+")]
    Unsupported {
        /// The feature.
        what: String,
        /// The server's major version.
        server_major: u32,
        /// The first major version that has it.
        needs: u32,
    },

    /// The stream has already ended; nothing more will come.
    #[error("the replication stream has already ended")]
    Ended,

    /// A pgoutput message did not decode.
    #[error("cannot decode a pgoutput message: {0}")]
    Decode(#[from] DecodeError),

    /// Decoded messages did not assemble into transactions (or a spill file failed).
    #[error("cannot assemble transactions: {0}")]
    Txn(#[from] TxnError),
}

impl WalError {
    /// Whether and when retrying can help; see [`Retry`].
    pub fn retry(&self) -> Retry {
        match self {
            Self::Config(_)
            | Self::Dsn(_)
            | Self::Auth { .. }
            | Self::Unsupported { .. }
            | Self::Ended => Retry::Never,
            Self::Tls { .. } => Retry::Never,
            Self::Connect { .. } | Self::ConnectionLost { .. } | Self::Io { .. } => Retry::Now,
            // A garbled stream is worth one fresh connection; a bug would show up again.
            Self::Protocol(_) => Retry::Now,
            Self::Server(e) => classify(&e.code).0,
            // The same bytes would come again: a bug or an unsupported server, not a glitch.
            Self::Decode(_) => Retry::Never,
            // A full or failing spill disk may recover; malformed input will not.
            Self::Txn(TxnError::Spill { .. }) => Retry::AfterWait,
            Self::Txn(_) => Retry::Never,
        }
    }

    /// `true` unless retrying cannot help ([`Retry::Never`]).
    pub fn is_retryable(&self) -> bool {
        self.retry() != Retry::Never
    }

    /// The SQLSTATE, when the server reported the error.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            Self::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The server's error, when it reported one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Self::Server(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn io(during: impl Into<String>, source: io::Error) -> Self {
        let during = during.into();
        if is_connection_loss(&source) {
            Self::ConnectionLost {
                during,
                reason: source.to_string(),
            }
        } else {
            Self::Io { during, source }
        }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }
}

fn is_connection_loss(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
    )
}

/// An `ErrorResponse` from the server, with what we were doing and how to fix it.
#[derive(Debug, Clone)]
pub struct ServerError {
    /// The SQLSTATE.
    pub code: SqlState,
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The primary message.
    pub message: String,
    /// The server's DETAIL, if any.
    pub detail: Option<String>,
    /// The server's HINT, if any.
    pub hint: Option<String>,
    /// What pgsync was doing (e.g. `starting replication from slot "s"`).
    pub during: String,
}

impl ServerError {
    /// How to fix it, for the usual causes of this SQLSTATE.
    pub fn advice(&self) -> Option<String> {
        advice(self)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} (SQLSTATE {})",
            self.during,
            self.severity.to_lowercase(),
            self.message,
            self.code.code()
        )?;
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        if let Some(a) = self.advice() {
            write!(f, ". {a}")?;
        }
        Ok(())
    }
}

/// The one classification table: SQLSTATE -> retry, with the usual fix.
fn classify(code: &SqlState) -> (Retry, Option<&'static str>) {
    let c = code.code();
    match c {
        // Connection exceptions, admin/crash shutdown, cannot connect now (starting up),
        // serialization and deadlock, out of resources.
        _ if c.starts_with("08") => (Retry::Now, None),
        "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53000" | "53100" | "53200" => {
            (Retry::Now, None)
        }
        // Too many connections or no free slot / wal sender: someone must let go.
        "53300" => (
            Retry::AfterWait,
            Some(
                "the server has no free connection or WAL sender: raise max_connections / max_wal_senders, or end idle sessions",
            ),
        ),
        "53400" => (
            Retry::AfterWait,
            Some(
                "a server limit was reached: raise max_replication_slots / max_wal_senders (restart needed), or drop unused slots",
            ),
        ),
        "55006" => (Retry::AfterWait, None),
        "28P01" => (
            Retry::Never,
            Some("check the password in the connection string, PGPASSWORD or ~/.pgpass"),
        ),
        "28000" => (
            Retry::Never,
            Some(
                "check the user name, and that pg_hba.conf has a `host replication` (or `hostssl replication`) line that lets this user in from this address",
            ),
        ),
        "42704" => (Retry::Never, None),
        "42710" => (
            Retry::Never,
            Some(
                "a slot with this name exists already: reuse it, or drop it with DROP_REPLICATION_SLOT / pg_drop_replication_slot()",
            ),
        ),
        "55000" => (Retry::Never, None),
        "42501" => (
            Retry::Never,
            Some("the role needs the REPLICATION attribute: ALTER ROLE <name> REPLICATION"),
        ),
        "3D000" => (
            Retry::Never,
            Some("check the database name (dbname) in the connection string"),
        ),
        _ => (Retry::Never, None),
    }
}

fn advice(e: &ServerError) -> Option<String> {
    let c = e.code.code();
    if c == "55000" && e.message.contains("wal_level") {
        return Some(
            "run ALTER SYSTEM SET wal_level = logical on the server and restart it".to_owned(),
        );
    }
    if c == "55006" && e.message.contains("replication slot") {
        return Some(format!(
            "another consumer is streaming from this slot ({}); stop it, or wait until it \
             disconnects (its pid is active_pid in pg_replication_slots)",
            e.message
        ));
    }
    if c == "42704" && e.message.contains("replication slot") {
        return Some(
            "check the slot name, or create the slot first (CREATE_REPLICATION_SLOT ... \
             LOGICAL pgoutput, or the --create-slot option)"
                .to_owned(),
        );
    }
    if c == "42704" && e.message.contains("publication") {
        return Some("create the publication on the source (CREATE PUBLICATION ...)".to_owned());
    }
    classify(&e.code).1.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, message: &str) -> WalError {
        WalError::Server(Box::new(ServerError {
            code: SqlState::from_code(code),
            severity: "ERROR".into(),
            message: message.into(),
            detail: None,
            hint: None,
            during: "starting replication".into(),
        }))
    }

    #[test]
    fn slot_in_use_is_retryable_after_a_wait_and_says_who_holds_it() {
        let e = server("55006", r#"replication slot "s" is active for PID 42"#);
        assert_eq!(e.retry(), Retry::AfterWait);
        assert!(e.is_retryable());
        assert!(e.to_string().contains("another consumer"), "{e}");
        assert!(e.to_string().contains("PID 42"), "{e}");
    }

    #[test]
    fn wrong_password_missing_slot_and_wal_level_are_definite() {
        for (code, msg, fix) in [
            ("28P01", "password authentication failed", "PGPASSWORD"),
            (
                "42704",
                r#"replication slot "x" does not exist"#,
                "create the slot",
            ),
            (
                "55000",
                "logical decoding requires wal_level >= logical",
                "wal_level = logical",
            ),
        ] {
            let e = server(code, msg);
            assert_eq!(e.retry(), Retry::Never, "{code}");
            assert!(e.to_string().contains(fix), "{e}");
            assert_eq!(e.sqlstate().map(SqlState::code), Some(code));
        }
    }

    #[test]
    fn lost_connections_and_shutdowns_are_retryable_now() {
        let lost = WalError::io("reading", io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(matches!(lost, WalError::ConnectionLost { .. }));
        assert_eq!(lost.retry(), Retry::Now);
        assert_eq!(server("57P01", "terminating").retry(), Retry::Now);
        assert_eq!(server("08006", "connection failure").retry(), Retry::Now);
    }
}
