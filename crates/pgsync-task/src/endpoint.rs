//! One side of a task: a libpq-style DSN (key/value or URL), with the password taken from
//! the DSN, else `PGPASSWORD`, else the password file (`PGPASSFILE` or `~/.pgpass`), the way
//! libpq does it — tokio-postgres reads neither of the last two.
//!
//! The DSN text is never kept: only the parsed `tokio_postgres::Config`, whose `Debug`
//! redacts the password, and a [`Endpoint::describe`] string without it for logs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use tokio_postgres::config::Host;

/// A connection target, parsed and with its password resolved.
#[derive(Clone)]
pub struct Endpoint {
    config: tokio_postgres::Config,
    /// The DSN as given, for the replication connection's own parser; never printed.
    dsn: String,
}

/// The DSN cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid DSN: {reason} (write e.g. \"host=127.0.0.1 port=5432 user=postgres dbname=shop\" or \"postgres://user@host:5432/db\")"
)]
pub struct DsnError {
    reason: String,
}

impl Endpoint {
    /// Parses `dsn` and resolves the password from the environment and password file.
    pub fn parse(dsn: &str) -> Result<Self, DsnError> {
        Self::parse_with(dsn, |k| std::env::var(k).ok())
    }

    /// Like [`parse`](Self::parse), reading variables through `env` (for tests).
    pub fn parse_with(dsn: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, DsnError> {
        // tokio-postgres' error text never echoes the password back.
        let mut config = tokio_postgres::Config::from_str(dsn).map_err(|e| DsnError {
            reason: e.to_string(),
        })?;
        if config.get_dbname().is_none() {
            return Err(DsnError {
                reason: "no database given (dbname=... or /dbname in a URL)".into(),
            });
        }
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .unwrap_or_else(|| "postgres".into());
            config.user(user);
        }
        if config.get_hosts().is_empty() {
            config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
        }
        if config.get_password().is_none() {
            if let Some(p) = env("PGPASSWORD") {
                config.password(p);
            } else if let Some(p) = password_from_file(&config, &env) {
                config.password(p);
            }
        }
        Ok(Self {
            config,
            dsn: dsn.to_owned(),
        })
    }

    /// The parsed configuration, password included (for connecting).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Settings for a replication connection to this endpoint, with the same password.
    pub fn replication_config(
        &self,
    ) -> Result<pgsync_wal::ReplicationConfig, pgsync_wal::WalError> {
        let config = pgsync_wal::ReplicationConfig::parse(&self.dsn)?;
        Ok(match self.config.get_password() {
            Some(p) => config.password(p),
            None => config,
        })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    /// Names the sessions this endpoint opens (`application_name`), unless the DSN named
    /// them already; `release --force` finds a task's sessions by it.
    pub(crate) fn set_application_name(&mut self, name: &str) {
        if self.config.get_application_name().is_none() {
            self.config.application_name(name);
        }
    }

    /// Opens an ordinary SQL session (its connection runs on a spawned task).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
        let target = self.describe();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%target, error = %e, "connection closed");
            }
        });
        Ok(client)
    }

    /// `user@host:port/db` for logs and messages: never the password.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{}@{host}:{port}/{}", self.user(), self.dbname())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.describe())
            .field(
                "password",
                &self.config.get_password().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            dsn: String,
        }
        let raw = Raw::deserialize(d)?;
        Endpoint::parse(&raw.dsn).map_err(serde::de::Error::custom)
    }
}

/// Looks the endpoint up in the password file. libpq ignores a file that others can read;
/// so do we (with a warning), so that a password never comes from a file it would refuse.
fn password_from_file(
    config: &tokio_postgres::Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let path = env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    let text = read_private_file(&path)?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches socket connections as "localhost".
        _ => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or_default();
    let user = config.get_user().unwrap_or_default();
    lookup(&text, [&host, &port, db, user])
}

fn read_private_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "password file has group or world access; ignored (chmod 0600 it)");
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The first line whose four fields match (`*` matches anything); `\:` and `\\` escape.
fn lookup(text: &str, want: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line)?;
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

fn split_pgpass_line(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next()?),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn key_value_and_url_forms_parse() {
        let a = Endpoint::parse_with("host=127.0.0.1 port=5433 user=app dbname=shop", env(&[]))
            .unwrap();
        assert_eq!(a.describe(), "app@127.0.0.1:5433/shop");
        let b = Endpoint::parse_with("postgres://app@db.example:6543/shop", env(&[])).unwrap();
        assert_eq!(b.describe(), "app@db.example:6543/shop");
    }

    #[test]
    fn a_dsn_without_a_database_is_refused() {
        let err = Endpoint::parse_with("host=localhost user=x", env(&[])).unwrap_err();
        assert!(err.to_string().contains("no database"), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_an_example() {
        let err = Endpoint::parse_with("host=a port=notaport dbname=x", env(&[])).unwrap_err();
        assert!(err.to_string().contains("invalid DSN"), "{err}");
        assert!(err.to_string().contains("dbname=shop"), "{err}");
    }

    #[test]
    fn the_password_comes_from_the_dsn_then_pgpassword() {
        let e = Endpoint::parse_with("dbname=x password=indsn", env(&[("PGPASSWORD", "fromenv")]))
            .unwrap();
        assert_eq!(e.config().get_password(), Some(&b"indsn"[..]));
        let e = Endpoint::parse_with("dbname=x", env(&[("PGPASSWORD", "fromenv")])).unwrap();
        assert_eq!(e.config().get_password(), Some(&b"fromenv"[..]));
    }

    #[test]
    fn the_password_file_is_read_when_private_and_matched_by_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:*:nope\n127.0.0.1:5433:shop:app:se\\:cret\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let vars = [("PGPASSFILE", file.to_str().unwrap())];
        let e = Endpoint::parse_with("host=127.0.0.1 port=5433 user=app dbname=shop", env(&vars))
            .unwrap();
        assert_eq!(e.config().get_password(), Some(&b"se:cret"[..]));
        let e =
            Endpoint::parse_with("host=127.0.0.1 port=9 user=app dbname=shop", env(&vars)).unwrap();
        assert_eq!(e.config().get_password(), Some(&b"fallback"[..]));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Endpoint::parse_with("host=127.0.0.1 port=5433 user=app dbname=shop", env(&vars))
            .unwrap();
        assert_eq!(
            e.config().get_password(),
            None,
            "a readable password file is ignored"
        );
    }

    #[test]
    fn debug_and_describe_never_show_the_password() {
        let e = Endpoint::parse_with("host=h dbname=x password=topsecret", env(&[])).unwrap();
        assert!(!format!("{e:?}").contains("topsecret"));
        assert!(!e.describe().contains("topsecret"));
        let err = Endpoint::parse_with("host=h port=x dbname=x password=topsecret", env(&[]))
            .unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}
