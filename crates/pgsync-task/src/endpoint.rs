//! One side of a task: a DSN (libpq key/value or `postgres://` URI) parsed by
//! [`pgsync_wal::ConnInfo`], the one parser every pgsync connection goes through: the SQL
//! sessions opened here and the replication connection get the same host, user, password
//! (DSN, else `PGPASSWORD`, else `PGPASSFILE` / `~/.pgpass`) and TLS settings (`sslmode`,
//! `sslrootcert`).
//!
//! The DSN text is never kept; `Debug` and [`Endpoint::describe`] never show the password.

use std::fmt;

use pgsync_wal::ConnInfo;
use serde::{Deserialize, Deserializer};

pub use pgsync_wal::DsnError;

/// A connection target, parsed and with its password resolved.
#[derive(Clone)]
pub struct Endpoint {
    info: ConnInfo,
}

impl Endpoint {
    /// Parses `dsn` and resolves the password from the environment and password file.
    pub fn parse(dsn: &str) -> Result<Self, DsnError> {
        Self::parse_with(dsn, |k| std::env::var(k).ok())
    }

    /// Like [`parse`](Self::parse), reading variables through `env` (for tests).
    pub fn parse_with(dsn: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, DsnError> {
        let info = ConnInfo::parse_with_env(dsn, env)?;
        // A task never guesses which database it replicates.
        if !info.has_dbname() {
            return Err(DsnError::new(
                Some("dbname"),
                "no database given: write dbname=... (or /dbname in a URI, or set PGDATABASE)",
            ));
        }
        Ok(Self { info })
    }

    /// The parsed settings, password included (for connecting).
    pub fn conninfo(&self) -> &ConnInfo {
        &self.info
    }

    /// Settings for a replication connection to this endpoint: the same server, user,
    /// password and TLS settings as the SQL sessions.
    pub fn replication_config(
        &self,
    ) -> Result<pgsync_wal::ReplicationConfig, pgsync_wal::WalError> {
        Ok(self.info.clone())
    }

    /// The user name.
    pub fn user(&self) -> &str {
        self.info.user()
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        self.info.dbname()
    }

    /// Names the sessions this endpoint opens (`application_name`), unless the DSN named
    /// them already; `release --force` finds a task's sessions by it.
    pub(crate) fn set_application_name(&mut self, name: &str) {
        if self.info.get_application_name().is_none() {
            self.info = self.info.clone().application_name(name);
        }
    }

    /// Opens an ordinary SQL session, with TLS as the DSN's `sslmode` asks (its connection
    /// runs on a spawned task).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.info.connect_sql().await
    }

    /// `user@host:port/db` for logs and messages: never the password.
    pub fn describe(&self) -> String {
        self.info.describe()
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.describe())
            .field(
                "password",
                &self.info.has_password().then_some("<redacted>"),
            )
            .field("sslmode", &self.info.get_ssl_mode())
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
        assert_eq!(err.key(), Some("dbname"));
        let e = Endpoint::parse_with("host=localhost", env(&[("PGDATABASE", "shop")])).unwrap();
        assert_eq!(e.dbname(), "shop");
    }

    #[test]
    fn garbage_is_refused_naming_the_key_and_the_fix() {
        let err = Endpoint::parse_with("host=a port=notaport dbname=x", env(&[])).unwrap_err();
        assert!(err.to_string().contains("invalid DSN"), "{err}");
        assert_eq!(err.key(), Some("port"));
        assert!(err.to_string().contains("port=5432"), "{err}");
        let err = Endpoint::parse_with("host=a dbname", env(&[])).unwrap_err();
        assert!(err.to_string().contains("dbname=shop"), "{err}");
    }

    #[test]
    fn verify_full_and_sslrootcert_are_accepted_and_reach_the_replication_connection() {
        let e = Endpoint::parse_with(
            "host=db.example dbname=shop sslmode=verify-full sslrootcert=/etc/pgsync/ca.pem",
            env(&[]),
        )
        .unwrap();
        let r = e.replication_config().unwrap();
        assert_eq!(r.get_ssl_mode(), pgsync_wal::SslMode::VerifyFull);
        assert_eq!(
            r.get_ssl_root_cert(),
            Some(std::path::Path::new("/etc/pgsync/ca.pem"))
        );
        assert_eq!(e.conninfo().get_ssl_mode(), pgsync_wal::SslMode::VerifyFull);
    }

    #[test]
    fn the_password_comes_from_the_dsn_then_pgpassword() {
        let e = Endpoint::parse_with("dbname=x password=indsn", env(&[("PGPASSWORD", "fromenv")]))
            .unwrap();
        assert!(format!("{e:?}").contains("<redacted>"));
        assert!(!format!("{e:?}").contains("indsn"));
        let e = Endpoint::parse_with("dbname=x", env(&[("PGPASSWORD", "fromenv")])).unwrap();
        assert!(e.conninfo().has_password());
        let e = Endpoint::parse_with("dbname=x", env(&[])).unwrap();
        assert!(!e.conninfo().has_password());
    }

    #[test]
    fn the_password_file_is_read_when_private_and_matched_by_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "127.0.0.1:5433:shop:app:se\\:cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let vars = [("PGPASSFILE", file.to_str().unwrap())];
        let dsn = "host=127.0.0.1 port=5433 user=app dbname=shop";
        let e = Endpoint::parse_with(dsn, env(&vars)).unwrap();
        assert!(e.conninfo().has_password());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Endpoint::parse_with(dsn, env(&vars)).unwrap();
        assert!(
            !e.conninfo().has_password(),
            "a readable password file is ignored"
        );
    }

    #[test]
    fn debug_and_describe_never_show_the_password() {
        let e = Endpoint::parse_with("host=h dbname=x password=topsecret", env(&[])).unwrap();
        assert!(!format!("{e:?}").contains("topsecret"));
        assert!(!format!("{:?}", e.conninfo()).contains("topsecret"));
        assert!(!format!("{:?}", e.replication_config().unwrap()).contains("topsecret"));
        assert!(!e.describe().contains("topsecret"));
        let err = Endpoint::parse_with("host=h port=x dbname=x password=topsecret", env(&[]))
            .unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}
