//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, a free loopback port, the Unix
//! socket inside the cluster dir, settings for logical replication, stopped (fast) on
//! [`Cluster::stop`] and killed (immediate) on drop.
//!
//! ```text
//! <tmp>/pgsync-cluster-XXXX/
//!     owner.pid      pid of the process that owns the cluster (orphan reaping)
//!     data/          PGDATA
//!     run/           unix_socket_directories
//!     server.log     the server's log
//! ```

use std::fmt;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgsync_names::sql::{quote_ident, quote_literal};
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

use crate::binaries::PgBinaries;
use crate::error::{Result, TestkitError};
use crate::os_user::RunAs;
use crate::pgbench::Pgbench;
use crate::process::{self, DIR_PREFIX, OWNER_FILE, Shutdown};

/// The superuser every cluster is created with.
pub const SUPERUSER: &str = "postgres";

/// How TCP connections authenticate (Unix-socket connections are always `trust`, which is
/// how the kit itself administers the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HostAuth {
    /// No password asked.
    #[default]
    Trust,
    /// Cleartext password.
    Password,
    /// MD5 challenge; the password is stored as an MD5 hash.
    Md5,
    /// SCRAM-SHA-256; the password is stored as a SCRAM secret.
    ScramSha256,
}

impl HostAuth {
    fn hba_method(self) -> &'static str {
        match self {
            Self::Trust => "trust",
            Self::Password => "password",
            Self::Md5 => "md5",
            Self::ScramSha256 => "scram-sha-256",
        }
    }
}

/// Settings for a cluster; [`start`](Self::start) creates and starts it.
#[derive(Clone)]
pub struct ClusterBuilder {
    bins: Option<PgBinaries>,
    settings: Vec<(String, String)>,
    fsync: bool,
    auth: HostAuth,
    password: Option<String>,
    data_checksums: Option<bool>,
    database: Option<String>,
}

impl fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("bins", &self.bins)
            .field("settings", &self.settings)
            .field("fsync", &self.fsync)
            .field("auth", &self.auth)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("data_checksums", &self.data_checksums)
            .field("database", &self.database)
            .finish()
    }
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            bins: None,
            settings: Vec::new(),
            fsync: false,
            auth: HostAuth::Trust,
            password: None,
            data_checksums: None,
            database: None,
        }
    }
}

impl ClusterBuilder {
    /// Uses these server binaries instead of discovering them.
    pub fn binaries(mut self, bins: PgBinaries) -> Self {
        self.bins = Some(bins);
        self
    }

    /// Adds a `postgresql.conf` setting (later ones win), e.g. `("wal_level", "replica")`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// `fsync` on or off (off by default: throwaway data, faster tests).
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// Requires a password over TCP with `auth`, and sets the superuser's password.
    pub fn password(mut self, auth: HostAuth, password: impl Into<String>) -> Self {
        self.auth = auth;
        self.password = Some(password.into());
        self
    }

    /// Forces data checksums on or off (default: the server version's own default, which
    /// is off before PostgreSQL 18 and on from 18).
    pub fn data_checksums(mut self, on: bool) -> Self {
        self.data_checksums = Some(on);
        self
    }

    /// Creates this database after start and makes it the default of [`Cluster::dsn`] and
    /// [`Cluster::client`].
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// Creates the cluster and starts it.
    pub async fn start(self) -> Result<Cluster> {
        process::reap_orphans_once();
        let bins = match self.bins.clone() {
            Some(b) => b,
            None => tokio::task::spawn_blocking(PgBinaries::discover)
                .await
                .expect("binary discovery panicked")?,
        };
        let run_as = RunAs::get()?;
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(TestkitError::io("creating the cluster directory"))?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .map_err(TestkitError::io("writing owner.pid"))?;
        std::fs::create_dir(dir.path().join("run"))
            .map_err(TestkitError::io("creating the socket directory"))?;
        for p in [dir.path(), &dir.path().join("run")] {
            run_as.own(p)?;
        }

        let mut cluster = Cluster {
            bins,
            run_as,
            dir,
            port: 0,
            auth: self.auth,
            password: self.password.clone(),
            database: self
                .database
                .clone()
                .unwrap_or_else(|| "postgres".to_owned()),
            running: false,
        };
        cluster.initdb(self.data_checksums).await?;
        cluster.write_config(&self)?;
        cluster.start_on_free_port().await?;
        cluster.post_start(&self).await?;
        Ok(cluster)
    }
}

/// A running (or stopped) throwaway cluster. Dropping it kills the server and deletes it.
pub struct Cluster {
    bins: PgBinaries,
    run_as: RunAs,
    dir: TempDir,
    port: u16,
    auth: HostAuth,
    password: Option<String>,
    database: String,
    running: bool,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("version", &self.bins.version())
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("auth", &self.auth)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Settings for a new cluster.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Starts a cluster with the default settings.
    pub async fn start_default() -> Result<Self> {
        Self::builder().start().await
    }

    async fn initdb(&self, checksums: Option<bool>) -> Result<()> {
        let mut cmd = self.run_as.command(self.bins.program("initdb"));
        cmd.arg("-D").arg(self.data_dir()).args([
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "-A",
            "trust",
            "--no-sync",
        ]);
        match checksums {
            Some(true) => {
                cmd.arg("--data-checksums");
            }
            Some(false) if self.bins.major() >= 18 => {
                cmd.arg("--no-data-checksums");
            }
            _ => {}
        }
        run(cmd, "initdb").await.map(drop)
    }

    fn write_config(&self, b: &ClusterBuilder) -> Result<()> {
        let socket_dir = self.dir.path().join("run");
        let mut conf: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            (
                "unix_socket_directories".into(),
                socket_dir.display().to_string(),
            ),
            ("wal_level".into(), "logical".into()),
            ("track_commit_timestamp".into(), "on".into()),
            ("max_replication_slots".into(), "32".into()),
            ("max_wal_senders".into(), "32".into()),
            ("max_connections".into(), "200".into()),
            ("shared_buffers".into(), "128MB".into()),
            ("fsync".into(), if b.fsync { "on" } else { "off" }.into()),
            ("log_min_messages".into(), "warning".into()),
            ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
        ];
        if self.bins.major() >= 18 {
            // Replication origins got their own limit in 18 (before: max_replication_slots).
            conf.push(("max_active_replication_origins".into(), "32".into()));
        }
        conf.extend(b.settings.iter().cloned());
        let mut text = String::from("\n# pgsync-testkit\n");
        for (name, value) in &conf {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        append(&self.data_dir().join("postgresql.conf"), &text)?;

        let method = if b.password.is_some() {
            b.auth.hba_method()
        } else {
            "trust"
        };
        let mut hba = String::from("local all all trust\nlocal replication all trust\n");
        for addr in ["127.0.0.1/32", "::1/128"] {
            hba.push_str(&format!(
                "host all all {addr} {method}\nhost replication all {addr} {method}\n"
            ));
        }
        std::fs::write(self.data_dir().join("pg_hba.conf"), hba)
            .map_err(TestkitError::io("writing pg_hba.conf"))
    }

    /// Picks a free port and starts; when another process grabbed it in between (the log
    /// says the address is in use), picks another.
    async fn start_on_free_port(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..20 {
            self.port = free_port()?;
            match self.pg_ctl_start().await {
                Ok(()) => return Ok(()),
                Err(e @ TestkitError::Start { .. }) if port_clash(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn pg_ctl_start(&mut self) -> Result<()> {
        let mut cmd = self.run_as.command(self.bins.program("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "120", "-s", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start");
        match run(cmd, "pg_ctl start").await {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(_) => {
                // pg_ctl may have given up while the postmaster lingers; make sure it is gone.
                let _ = process::shutdown(
                    &self.data_dir(),
                    Shutdown::Immediate,
                    Duration::from_secs(10),
                );
                Err(TestkitError::Start {
                    port: self.port,
                    log: self.log_file(),
                    log_tail: self.log_tail(30),
                })
            }
        }
    }

    async fn post_start(&self, b: &ClusterBuilder) -> Result<()> {
        let admin = self.connect_socket("postgres").await?;
        if let Some(password) = &b.password {
            let encryption = if b.auth == HostAuth::Md5 {
                "md5"
            } else {
                "scram-sha-256"
            };
            admin
                .batch_execute(&format!(
                    "SET password_encryption = '{encryption}'; ALTER ROLE {SUPERUSER} PASSWORD {}",
                    quote_literal(password)
                ))
                .await
                .map_err(TestkitError::pg("setting the superuser password"))?;
        }
        if let Some(db) = b.database.as_deref().filter(|db| *db != "postgres") {
            self.create_database(db).await?;
        }
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop) or [`crash`](Self::crash), on the
    /// same port with the same data.
    pub async fn start(&mut self) -> Result<()> {
        if self.running {
            return Err(TestkitError::State {
                state: "running",
                wanted: "stopped",
            });
        }
        self.pg_ctl_start().await
    }

    /// Fast shutdown: sessions are rolled back, a checkpoint is written. Data is kept, so
    /// [`start`](Self::start) can bring it back.
    pub async fn stop(&mut self) -> Result<()> {
        self.signal(Shutdown::Fast).await
    }

    /// Immediate shutdown, like a power cut for the server: the next start runs crash
    /// recovery.
    pub async fn crash(&mut self) -> Result<()> {
        self.signal(Shutdown::Immediate).await
    }

    /// Stops (fast) and starts again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    async fn signal(&mut self, how: Shutdown) -> Result<()> {
        let data = self.data_dir();
        tokio::task::spawn_blocking(move || process::shutdown(&data, how, Duration::from_secs(60)))
            .await
            .expect("shutdown panicked")?;
        self.running = false;
        Ok(())
    }

    /// Appends settings to `postgresql.conf`; they take effect at the next (re)start, or at
    /// once for reloadable ones after `SELECT pg_reload_conf()`.
    pub fn append_settings(&self, settings: &[(&str, &str)]) -> Result<()> {
        let mut text = String::new();
        for (name, value) in settings {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        append(&self.data_dir().join("postgresql.conf"), &text)
    }

    /// Writes `contents` to `name` in the data directory, owned by the server's OS user with
    /// mode 0600 (as the server demands of e.g. `ssl_key_file`), and returns its path.
    pub fn write_server_file(&self, name: &str, contents: &[u8]) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.data_dir().join(name);
        std::fs::write(&path, contents)
            .map_err(TestkitError::io(format!("writing {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(TestkitError::io(format!("chmod {}", path.display())))?;
        self.run_as.own(&path)?;
        Ok(path)
    }

    /// Whether the server is up (as far as the kit knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The server binaries this cluster runs.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The server's major version.
    pub fn major(&self) -> u32 {
        self.bins.major()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password, when TCP needs one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The default database (see [`ClusterBuilder::database`]).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last `lines` lines of the server log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A libpq key/value DSN for the default database over TCP, with the password if any.
    pub fn dsn(&self) -> String {
        self.dsn_for(&self.database)
    }

    /// A libpq key/value DSN for `database` over TCP, with the password if any.
    pub fn dsn_for(&self, database: &str) -> String {
        let mut dsn = format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={}",
            self.port,
            quote_dsn_value(database)
        );
        if let Some(p) = &self.password {
            dsn.push_str(&format!(" password={}", quote_dsn_value(p)));
        }
        dsn
    }

    /// A `postgres://` URL for `database` over TCP, without the password.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A connected client for the default database (over the Unix socket, as superuser).
    pub async fn client(&self) -> Result<Client> {
        self.connect_socket(&self.database).await
    }

    /// A connected client for `database` (over the Unix socket, as superuser).
    pub async fn connect(&self, database: &str) -> Result<Client> {
        self.connect_socket(database).await
    }

    async fn connect_socket(&self, database: &str) -> Result<Client> {
        let (client, conn) = tokio_postgres::Config::new()
            .host_path(self.socket_dir())
            .port(self.port)
            .user(SUPERUSER)
            .dbname(database)
            .application_name("pgsync-testkit")
            .connect(NoTls)
            .await
            .map_err(TestkitError::pg(format!(
                "connecting to {database} on port {}",
                self.port
            )))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "testkit connection ended");
            }
        });
        Ok(client)
    }

    /// Creates a database (UTF8, C locale like the cluster).
    pub async fn create_database(&self, name: &str) -> Result<()> {
        self.connect_socket("postgres")
            .await?
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .map_err(TestkitError::pg(format!("creating database {name}")))
    }

    /// pgbench against the default database.
    pub fn pgbench(&self) -> Pgbench<'_> {
        Pgbench::new(self, &self.database)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let stopped = process::shutdown(
            &self.data_dir(),
            Shutdown::Immediate,
            Duration::from_secs(20),
        );
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "could not stop a test cluster");
        }
    }
}

/// A value for a libpq key/value connection string, quoted when needed.
fn quote_dsn_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\', '=']) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(TestkitError::io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(TestkitError::io("finding a free port"))?
        .port())
}

fn port_clash(e: &TestkitError) -> bool {
    matches!(e, TestkitError::Start { log_tail, .. }
        if log_tail.contains("could not bind") || log_tail.contains("already in use")
            || log_tail.contains("could not create any TCP/IP sockets"))
}

fn append(path: &Path, text: &str) -> Result<()> {
    let what = || format!("appending to {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(TestkitError::io(what()))?;
    f.write_all(text.as_bytes())
        .map_err(TestkitError::io(what()))
}

/// Runs a server program to completion off the async runtime; its output ends up in the
/// error when it fails.
pub(crate) async fn run(mut cmd: std::process::Command, program: &str) -> Result<String> {
    let program = program.to_owned();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("spawn_blocking panicked")
        .map_err(TestkitError::io(format!("running {program}")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        Err(TestkitError::Command {
            program,
            status: out.status.to_string(),
            output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_values_are_quoted_when_libpq_needs_it() {
        assert_eq!(quote_dsn_value("shop"), "shop");
        assert_eq!(quote_dsn_value("my db"), "'my db'");
        assert_eq!(quote_dsn_value("it's"), r"'it\'s'");
        assert_eq!(quote_dsn_value(""), "''");
    }
}
