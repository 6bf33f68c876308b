//! Connection settings for a replication connection, parsed like libpq parses them.
//!
//! The parsing itself is tokio-postgres' (`Config::from_str`: key/value strings and
//! `postgres://` URLs). It does not know `sslmode=verify-ca|verify-full`, `sslrootcert`
//! or `replication`, so those few keys are taken out of the string first ([`split_extras`])
//! and the rest is handed over unchanged. Like libpq, a missing password falls back to
//! `PGPASSWORD`, then to the password file (`PGPASSFILE` or `~/.pgpass`).
//!
//! The password never appears in `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode as PgSslMode};

use crate::error::WalError;

/// How much TLS to insist on (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
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
        hostaddr: Option<std::net::IpAddr>,
    },
    /// The directory holding the server's Unix socket.
    Unix(PathBuf),
}

/// Settings of one replication connection (`replication=database`).
#[derive(Clone)]
pub struct ReplicationConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<Vec<u8>>,
    pub(crate) dbname: String,
    pub(crate) application_name: String,
    pub(crate) options: Option<String>,
    pub(crate) ssl_mode: SslMode,
    pub(crate) ssl_root_cert: Option<PathBuf>,
    pub(crate) connect_timeout: Option<Duration>,
}

impl fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("options", &self.options)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl FromStr for ReplicationConfig {
    type Err = WalError;

    fn from_str(dsn: &str) -> Result<Self, WalError> {
        Self::parse(dsn)
    }
}

impl ReplicationConfig {
    /// Parses a libpq key/value string (`host=... port=... sslmode=verify-full`) or a
    /// `postgres://` URL. Missing values come from `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGPASSWORD` and the password file, as in libpq.
    pub fn parse(dsn: &str) -> Result<Self, WalError> {
        Self::parse_with_env(dsn, |k| std::env::var(k).ok())
    }

    /// [`parse`](Self::parse) with the environment given as a function (for tests).
    pub fn parse_with_env(
        dsn: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, WalError> {
        let (rest, extras) = split_extras(dsn)?;
        let pg = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| WalError::Config(format!("{e} (in the connection string)")))?;

        let hosts = pg.get_hosts();
        if hosts.len() > 1 {
            return Err(WalError::Config(
                "several hosts are given; a replication connection needs exactly one".into(),
            ));
        }
        let hostaddr = pg.get_hostaddrs().first().copied();
        let endpoint = match hosts.first() {
            Some(Host::Tcp(h)) => Endpoint::Tcp {
                host: h.clone(),
                hostaddr,
            },
            Some(Host::Unix(p)) => Endpoint::Unix(p.clone()),
            None => match (env("PGHOST"), hostaddr) {
                (_, Some(addr)) => Endpoint::Tcp {
                    host: addr.to_string(),
                    hostaddr: Some(addr),
                },
                (Some(h), None) if h.starts_with('/') => Endpoint::Unix(h.into()),
                (Some(h), None) => Endpoint::Tcp {
                    host: h,
                    hostaddr: None,
                },
                (None, None) => Endpoint::Unix("/var/run/postgresql".into()),
            },
        };
        let port = match pg.get_ports().first() {
            Some(p) => *p,
            None => match env("PGPORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| WalError::Config(format!("PGPORT={p:?} is not a port")))?,
                None => 5432,
            },
        };
        let user = pg
            .get_user()
            .map(str::to_owned)
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .ok_or_else(|| WalError::Config("no user given (user=... or PGUSER)".into()))?;
        let dbname = pg
            .get_dbname()
            .map(str::to_owned)
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let ssl_mode = match extras.ssl_mode {
            Some(m) => m,
            None => match pg.get_ssl_mode() {
                PgSslMode::Disable => SslMode::Disable,
                PgSslMode::Require => SslMode::Require,
                _ => SslMode::Prefer,
            },
        };
        let mut config = Self {
            endpoint,
            port,
            user,
            password: pg.get_password().map(<[u8]>::to_vec),
            dbname,
            application_name: pg.get_application_name().unwrap_or("pgsync").to_owned(),
            options: pg.get_options().map(str::to_owned),
            ssl_mode,
            ssl_root_cert: extras.ssl_root_cert,
            connect_timeout: pg.get_connect_timeout().copied(),
        };
        if config.password.is_none() {
            config.password = env("PGPASSWORD").map(String::into_bytes);
        }
        if config.password.is_none() {
            let file = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(file) = file {
                config.password = passfile_lookup(&file, &config).map(String::into_bytes);
            }
        }
        Ok(config)
    }

    /// Sets the password (overrides the DSN).
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

    /// Sets `application_name` (shown in `pg_stat_replication`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
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

    /// The database.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The sslmode.
    pub fn get_ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// `host:port` or the socket path, for messages.
    pub fn target(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { host, .. } => format!("{host}:{}", self.port),
            Endpoint::Unix(dir) => dir
                .join(format!(".s.PGSQL.{}", self.port))
                .display()
                .to_string(),
        }
    }
}

/// The keys tokio-postgres does not understand.
#[derive(Debug, Default)]
struct Extras {
    ssl_mode: Option<SslMode>,
    ssl_root_cert: Option<PathBuf>,
}

/// Takes `sslmode=verify-*`, `sslrootcert` and `replication` out of the DSN; returns the
/// rest in the same syntax.
fn split_extras(dsn: &str) -> Result<(String, Extras), WalError> {
    let mut extras = Extras::default();
    let mut take = |key: &str, value: &str| -> Result<bool, WalError> {
        match key {
            "sslmode" => {
                extras.ssl_mode = Some(match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(WalError::Config(format!(
                            "sslmode={other:?} is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        )));
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                extras.ssl_root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            // This is always a `replication=database` connection.
            "replication" => Ok(true),
            _ => Ok(false),
        }
    };
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(&percent_decode(k)?, &percent_decode(v)?)? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, extras));
    }
    let mut rest = String::new();
    for (k, v) in key_values(dsn)? {
        if !take(&k, &v)? {
            rest.push_str(&format!(
                "{k}='{}' ",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((rest, extras))
}

/// libpq key/value syntax: `key = value`, values optionally in single quotes, `\` escapes.
fn key_values(s: &str) -> Result<Vec<(String, String)>, WalError> {
    let bad = |why: &str| WalError::Config(format!("connection string: {why}"));
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("missing \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String, WalError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| WalError::Config(format!("bad percent-escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| WalError::Config(format!("{s:?} is not UTF-8")))
}

/// The password for `config` from a libpq password file (`host:port:db:user:password`,
/// `*` matches anything, `\` escapes `:` and `\`).
fn passfile_lookup(file: &Path, config: &ReplicationConfig) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let host = match &config.endpoint {
        Endpoint::Tcp { host, .. } => host.clone(),
        Endpoint::Unix(_) => "localhost".to_owned(),
    };
    let port = config.port.to_string();
    let want = [
        host.as_str(),
        port.as_str(),
        config.dbname.as_str(),
        config.user.as_str(),
    ];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = passfile_fields(line);
            (fields.len() == 5
                && fields[..4]
                    .iter()
                    .zip(want)
                    .all(|(f, w)| f == "*" || f == w))
            .then(|| fields[4].clone())
        })
}

fn passfile_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().expect("non-empty").extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn key_value_strings_keep_quoting_and_take_verify_modes() {
        let c = ReplicationConfig::parse_with_env(
            r"host=db.example port=6543 user=rep password='p w\'x' dbname=shop sslmode=verify-full sslrootcert=/etc/ca.pem replication=database",
            no_env,
        )
        .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Tcp {
                host: "db.example".into(),
                hostaddr: None
            }
        );
        assert_eq!(c.port, 6543);
        assert_eq!(c.password.as_deref(), Some(&b"p w'x"[..]));
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.ssl_root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(c.dbname, "shop");
    }

    #[test]
    fn urls_take_verify_modes_from_the_query() {
        let c = ReplicationConfig::parse_with_env(
            "postgresql://rep:secret@localhost:5433/shop?sslmode=verify-ca&sslrootcert=%2Ftmp%2Fca.pem&application_name=x",
            no_env,
        )
        .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyCa);
        assert_eq!(c.ssl_root_cert.as_deref(), Some(Path::new("/tmp/ca.pem")));
        assert_eq!(c.application_name, "x");
        assert_eq!(c.user, "rep");
        assert_eq!(c.port, 5433);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c =
            ReplicationConfig::parse_with_env("host=h user=u password=hunter2", no_env).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_missing_password_comes_from_pgpassword_then_the_password_file() {
        let dir = tempfile_dir();
        let file = dir.join("pgpass");
        std::fs::write(&file, "# comment\nother:*:*:*:no\nh:5432:*:u:from\\:file\n").unwrap();
        let env = |k: &str| match k {
            "PGPASSFILE" => Some(file.display().to_string()),
            _ => None,
        };
        let c = ReplicationConfig::parse_with_env("host=h user=u", env).unwrap();
        assert_eq!(c.password.as_deref(), Some(&b"from:file"[..]));
        let env2 = |k: &str| (k == "PGPASSWORD").then(|| "envpw".to_owned());
        let c = ReplicationConfig::parse_with_env("host=h user=u", env2).unwrap();
        assert_eq!(c.password.as_deref(), Some(&b"envpw"[..]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_sslmode_and_several_hosts_are_config_errors() {
        for dsn in [
            "host=h user=u sslmode=sometimes",
            "host=a,b user=u",
            "host=h user",
        ] {
            let e = ReplicationConfig::parse_with_env(dsn, no_env).unwrap_err();
            assert!(matches!(e, WalError::Config(_)), "{dsn}: {e}");
        }
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgsync-wal-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
