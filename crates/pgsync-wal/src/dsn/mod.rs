//! Connection strings, parsed once for every connection pgsync opens.
//!
//! Both the replication connection (this crate's own client) and the ordinary SQL sessions
//! (tokio-postgres: precheck, schema sync, copy, apply, status, ...) start from a
//! [`ConnInfo`], so a DSN means the same thing everywhere, TLS settings included:
//!
//! ```text
//!  "host=db sslmode=verify-full ..."  ─┐
//!  "postgres://u@db/shop?sslmode=..." ─┴─ lex ─▶ (key, value)* ─▶ ConnInfo ─┬─▶ ReplicationConnection
//!   PGHOST PGPORT PGUSER PGPASSWORD ...  (defaults for keys not given) ───┘   └─▶ connect_sql(): tokio-postgres
//!   PGPASSFILE / ~/.pgpass (last, for the password)                               over rustls
//! ```
//!
//! Precedence, as in libpq: a key in the DSN, else its environment variable, else the
//! built-in default; the password from `password=`, else `PGPASSWORD`, else the password
//! file. Unknown keys and bad values are refused with the key named and a sentence on the
//! fix. Several hosts are refused: each side of a task is exactly one server. The password
//! never appears in `Debug` output or in an error.

mod lex;
mod pgpass;
mod sql;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use sql::{MakeRustls, RustlsConnect, RustlsStream, SqlConnection, SqlTlsError};

/// The DSN cannot be used as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DSN: {reason}")]
pub struct DsnError {
    key: Option<String>,
    reason: String,
}

impl DsnError {
    /// An error about `key` (None: about the string's syntax); `reason` says what is wrong
    /// and how to write it instead, and must not contain a password.
    pub fn new(key: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            key: key.map(str::to_owned),
            reason: reason.into(),
        }
    }

    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// How much TLS to insist on (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Clear text first; TLS only if the server refuses a connection without it.
    Allow,
    /// TLS when the server offers it, without verifying the certificate (libpq's default).
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not verified (encryption only, as in libpq).
    Require,
    /// TLS, and the certificate chain must lead to a trusted root (`sslrootcert`).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host we connect to.
    VerifyFull,
}

impl SslMode {
    /// Whether the certificate chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }

    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = DsnError;

    fn from_str(s: &str) -> Result<Self, DsnError> {
        Ok(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(DsnError::new(
                    Some("sslmode"),
                    format!(
                        "sslmode=\"{other}\" is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full (verify-full with sslrootcert=<CA file> \
                         checks the server)"
                    ),
                ));
            }
        })
    }
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or IP address; `hostaddr`, when given, is where we actually connect
    /// while the name is what the certificate must show.
    Tcp {
        /// Host name or address.
        host: String,
        /// libpq's `hostaddr`.
        hostaddr: Option<IpAddr>,
    },
    /// The directory holding the server's Unix socket.
    Unix(PathBuf),
}

/// TCP keepalive settings for SQL sessions (libpq's `keepalives*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Keepalives {
    pub(crate) on: Option<bool>,
    pub(crate) idle: Option<Duration>,
    pub(crate) interval: Option<Duration>,
    pub(crate) retries: Option<u32>,
}

/// One server to connect to, from a DSN: where, who, which database, and how much TLS.
#[derive(Clone)]
pub struct ConnInfo {
    pub(crate) endpoint: Endpoint,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<Vec<u8>>,
    pub(crate) dbname: Option<String>,
    pub(crate) application_name: Option<String>,
    pub(crate) options: Option<String>,
    pub(crate) ssl_mode: SslMode,
    pub(crate) ssl_root_cert: Option<PathBuf>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) keepalives: Keepalives,
    pub(crate) read_write: bool,
    pub(crate) channel_binding_off: bool,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname())
            .field("application_name", &self.application_name)
            .field("options", &self.options)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl FromStr for ConnInfo {
    type Err = DsnError;

    fn from_str(dsn: &str) -> Result<Self, DsnError> {
        Self::parse(dsn)
    }
}

/// The keys pgsync understands, for the unknown-key message.
const KNOWN: &str = "host, hostaddr, port, dbname, user, password, passfile, application_name, \
                     fallback_application_name, options, sslmode, sslrootcert, connect_timeout, \
                     keepalives, keepalives_idle, keepalives_interval, keepalives_count, \
                     target_session_attrs, channel_binding, gssencmode, replication";

impl ConnInfo {
    /// Parses a libpq key/value string (`host=... port=... sslmode=verify-full`) or a
    /// `postgres://` URI. Keys not given come from `PGHOST`, `PGHOSTADDR`, `PGPORT`,
    /// `PGUSER`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`,
    /// `PGCONNECT_TIMEOUT`; the password from `PGPASSWORD`, then the password file
    /// (`passfile=`, `PGPASSFILE` or `~/.pgpass`).
    pub fn parse(dsn: &str) -> Result<Self, DsnError> {
        Self::parse_with_env(dsn, |k| std::env::var(k).ok())
    }

    /// [`parse`](Self::parse) reading the environment through `env` (for tests).
    pub fn parse_with_env(
        dsn: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, DsnError> {
        let mut given = Given::default();
        for (key, value) in lex::pairs(dsn)? {
            given.set(&key, value)?;
        }
        given.resolve(&env)
    }

    /// Sets the password (overrides the DSN and the environment).
    pub fn password(mut self, password: impl Into<Vec<u8>>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets the sslmode.
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = mode;
        self
    }

    /// The PEM file of trusted root certificates (`sslrootcert`); `system` means the
    /// bundled Mozilla roots.
    pub fn ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_root_cert = Some(path.into());
        self
    }

    /// Sets `application_name` (shown in `pg_stat_activity` and `pg_stat_replication`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The server endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The database (the user name when none was given, as in libpq).
    pub fn dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.user)
    }

    /// Whether a database was named (`dbname=`, the URI path or `PGDATABASE`).
    pub fn has_dbname(&self) -> bool {
        self.dbname.is_some()
    }

    /// Whether a password is known (from the DSN, `PGPASSWORD` or the password file).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// `application_name`, when one was given.
    pub fn get_application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// The sslmode.
    pub fn get_ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// `sslrootcert`, when given.
    pub fn get_ssl_root_cert(&self) -> Option<&Path> {
        self.ssl_root_cert.as_deref()
    }

    /// Whether the server is reached over the network rather than on this machine
    /// (a host other than a Unix socket, `localhost` or a loopback address).
    pub fn is_remote(&self) -> bool {
        match &self.endpoint {
            Endpoint::Unix(_) => false,
            Endpoint::Tcp { host, hostaddr } => {
                let loopback = |a: &IpAddr| a.is_loopback();
                match hostaddr {
                    Some(a) => !loopback(a),
                    None => {
                        host != "localhost" && !host.parse::<IpAddr>().is_ok_and(|a| loopback(&a))
                    }
                }
            }
        }
    }

    /// `host:port` or the socket path, for messages.
    pub fn target(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { host, .. } if host.contains(':') => format!("[{host}]:{}", self.port),
            Endpoint::Tcp { host, .. } => format!("{host}:{}", self.port),
            Endpoint::Unix(dir) => dir
                .join(format!(".s.PGSQL.{}", self.port))
                .display()
                .to_string(),
        }
    }

    /// `user@host:port/db` for logs and messages: never the password.
    pub fn describe(&self) -> String {
        let host = match &self.endpoint {
            Endpoint::Tcp { host, .. } => host.clone(),
            Endpoint::Unix(dir) => dir.display().to_string(),
        };
        format!("{}@{host}:{}/{}", self.user, self.port, self.dbname())
    }
}

/// The keys as given, before defaults.
#[derive(Default)]
struct Given {
    host: Option<String>,
    hostaddr: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    passfile: Option<String>,
    dbname: Option<String>,
    application_name: Option<String>,
    fallback_application_name: Option<String>,
    options: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    connect_timeout: Option<String>,
    keepalives: Keepalives,
    read_write: bool,
    channel_binding_off: bool,
}

fn bad(key: &str, reason: impl Into<String>) -> DsnError {
    DsnError::new(Some(key), reason)
}

fn seconds(key: &str, value: &str) -> Result<Option<Duration>, DsnError> {
    match value.trim().parse::<i64>() {
        Ok(n) if n <= 0 => Ok(None),
        Ok(n) => Ok(Some(Duration::from_secs(n.unsigned_abs()))),
        Err(_) => Err(bad(
            key,
            format!("{key}=\"{value}\" is not a whole number of seconds (write e.g. {key}=10)"),
        )),
    }
}

impl Given {
    fn set(&mut self, key: &str, value: String) -> Result<(), DsnError> {
        let slot = match key {
            "host" => &mut self.host,
            "hostaddr" => &mut self.hostaddr,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "passfile" => &mut self.passfile,
            "dbname" => &mut self.dbname,
            "application_name" => &mut self.application_name,
            "fallback_application_name" => &mut self.fallback_application_name,
            "options" => &mut self.options,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "connect_timeout" => &mut self.connect_timeout,
            _ => return self.set_other(key, &value),
        };
        *slot = Some(value);
        Ok(())
    }

    fn set_other(&mut self, key: &str, value: &str) -> Result<(), DsnError> {
        match (key, value) {
            ("keepalives", "0" | "1") => self.keepalives.on = Some(value == "1"),
            ("keepalives", _) => {
                return Err(bad(key, format!("keepalives=\"{value}\": write 0 or 1")));
            }
            ("keepalives_idle", _) => self.keepalives.idle = seconds(key, value)?,
            ("keepalives_interval", _) => self.keepalives.interval = seconds(key, value)?,
            ("keepalives_count", _) => {
                self.keepalives.retries = Some(value.parse().map_err(|_| {
                    bad(key, format!("keepalives_count=\"{value}\" is not a count"))
                })?);
            }
            ("target_session_attrs", "any") => self.read_write = false,
            ("target_session_attrs", "read-write") => self.read_write = true,
            ("target_session_attrs", _) => {
                return Err(bad(
                    key,
                    format!("target_session_attrs=\"{value}\": write any or read-write"),
                ));
            }
            ("channel_binding", "disable") => self.channel_binding_off = true,
            ("channel_binding", "prefer") => self.channel_binding_off = false,
            ("channel_binding", _) => {
                return Err(bad(
                    key,
                    format!(
                        "channel_binding=\"{value}\" is not supported: write prefer or disable \
                         (use sslmode=verify-full to authenticate the server)"
                    ),
                ));
            }
            ("gssencmode", "disable" | "prefer") => {}
            ("gssencmode", _) => {
                return Err(bad(
                    key,
                    "GSSAPI encryption is not supported: write gssencmode=disable and use \
                     sslmode for encryption",
                ));
            }
            // The replication connection always asks for `replication=database`; SQL
            // sessions never do. Anything else would be a physical replication connection.
            ("replication", "database") => {}
            ("replication", _) => {
                return Err(bad(
                    key,
                    format!(
                        "replication=\"{value}\": pgsync opens its replication connections \
                         itself; leave replication out of the DSN"
                    ),
                ));
            }
            ("sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir", _) => {
                return Err(bad(
                    key,
                    format!(
                        "{key} is not supported (no client certificates or CRLs): authenticate \
                         with a password (scram-sha-256) and check the server with \
                         sslmode=verify-full sslrootcert=<CA file>"
                    ),
                ));
            }
            _ => {
                return Err(bad(
                    key,
                    format!("unknown key \"{key}\"; the keys pgsync understands are {KNOWN}"),
                ));
            }
        }
        Ok(())
    }

    fn resolve(self, env: &impl Fn(&str) -> Option<String>) -> Result<ConnInfo, DsnError> {
        let from = |given: Option<String>, var: &str| given.or_else(|| env(var));
        let host = from(self.host, "PGHOST").filter(|h| !h.is_empty());
        let hostaddr = match from(self.hostaddr, "PGHOSTADDR").filter(|h| !h.is_empty()) {
            None => None,
            Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
                bad(
                    "hostaddr",
                    format!("hostaddr=\"{a}\" is not an IP address (a host name goes in host=)"),
                )
            })?),
        };
        if host.as_deref().is_some_and(|h| h.contains(',')) {
            return Err(bad(
                "host",
                format!(
                    "several hosts are given (host={}); pgsync connects each side to exactly \
                     one server: name the primary",
                    host.unwrap_or_default()
                ),
            ));
        }
        let endpoint = match (host, hostaddr) {
            (Some(h), _) if h.starts_with('/') => Endpoint::Unix(h.into()),
            (Some(h), hostaddr) => Endpoint::Tcp { host: h, hostaddr },
            (None, Some(a)) => Endpoint::Tcp {
                host: a.to_string(),
                hostaddr: Some(a),
            },
            (None, None) => Endpoint::Tcp {
                host: "localhost".into(),
                hostaddr: None,
            },
        };
        let in_env = self.port.is_none();
        let port = match from(self.port, "PGPORT").filter(|p| !p.is_empty()) {
            None => 5432,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                let fix = if p.contains(',') {
                    "one port per side"
                } else {
                    "a number from 1 to 65535, e.g. port=5432"
                };
                let name = if in_env { "PGPORT" } else { "port" };
                bad("port", format!("{name}=\"{p}\" is not a port: write {fix}"))
            })?,
        };
        let user = from(self.user, "PGUSER")
            .filter(|u| !u.is_empty())
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let dbname = from(self.dbname, "PGDATABASE").filter(|d| !d.is_empty());
        let ssl_mode = match self.sslmode {
            Some(m) => m.parse()?,
            None => match env("PGSSLMODE") {
                Some(m) => m.parse().map_err(|e: DsnError| {
                    bad(
                        "sslmode",
                        format!("in the environment variable PGSSLMODE: {}", e.reason),
                    )
                })?,
                None => SslMode::default(),
            },
        };
        let connect_timeout = match from(self.connect_timeout, "PGCONNECT_TIMEOUT") {
            Some(t) => seconds("connect_timeout", &t)?,
            None => None,
        };
        let mut info = ConnInfo {
            endpoint,
            port,
            user,
            password: None,
            dbname,
            application_name: from(self.application_name, "PGAPPNAME")
                .or(self.fallback_application_name),
            options: self.options,
            ssl_mode,
            ssl_root_cert: from(self.sslrootcert, "PGSSLROOTCERT").map(PathBuf::from),
            connect_timeout,
            keepalives: self.keepalives,
            read_write: self.read_write,
            channel_binding_off: self.channel_binding_off,
        };
        info.password = match self.password.or_else(|| env("PGPASSWORD")) {
            Some(p) => Some(p.into_bytes()),
            None => from(self.passfile, "PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))
                .and_then(|file| {
                    let [host, port, db, user] = info.pgpass_fields();
                    pgpass::lookup(&file, [&host, &port, &db, &user])
                })
                .map(String::into_bytes),
        };
        Ok(info)
    }
}

impl ConnInfo {
    /// The fields a password file line is matched against: host (`localhost` for a Unix
    /// socket, as libpq), port, database, user.
    fn pgpass_fields(&self) -> [String; 4] {
        let host = match &self.endpoint {
            Endpoint::Tcp { host, .. } => host.clone(),
            Endpoint::Unix(_) => "localhost".to_owned(),
        };
        [
            host,
            self.port.to_string(),
            self.dbname().to_owned(),
            self.user.clone(),
        ]
    }
}
