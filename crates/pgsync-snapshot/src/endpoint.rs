//! Connections to the two servers, and the session setup each role needs.
//!
//! ```text
//! source, every reader:   BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY
//!                         SET TRANSACTION SNAPSHOT '<exported>'   -- same point for all
//!                         SET search_path = ''                    -- pg_get_*def qualify names
//! destination, writers:   SET session_replication_role = replica  -- no triggers, no FK checks
//!                         SET synchronous_commit = off            -- data and state commit together
//! ```
//! An empty `search_path` on the source makes `format_type`, `pg_get_expr` and the other
//! `pg_get_*def` functions schema-qualify every object outside `pg_catalog`, so the text
//! they return means the same on the destination whatever its search path, and schema
//! renames can be applied to it token by token (see `sqltext`).
//!
//! A server is named by a [`ConnInfo`] (pgsync-wal's DSN parser, the same for every pgsync
//! connection), and every session is opened with TLS as its `sslmode` asks.

use std::fmt;

use pgsync_names::sql::Literal;
use pgsync_wal::ConnInfo;
use tokio_postgres::Client;

use crate::error::{Result, Side, SnapshotError};

/// How to reach one server. `Debug` never shows the password.
#[derive(Clone)]
pub struct Endpoint {
    info: ConnInfo,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.info.describe())
            .field("sslmode", &self.info.get_ssl_mode())
            .finish_non_exhaustive()
    }
}

impl From<ConnInfo> for Endpoint {
    fn from(info: ConnInfo) -> Self {
        Self::new(info)
    }
}

impl Endpoint {
    /// From parsed connection settings.
    pub fn new(info: ConnInfo) -> Self {
        Self { info }
    }

    /// From a libpq key/value DSN or a `postgres://` URI (with the `PG*` variables and the
    /// password file, as libpq).
    pub fn parse(dsn: &str) -> Result<Self> {
        ConnInfo::parse(dsn)
            .map(Self::new)
            .map_err(|e| SnapshotError::InvalidOptions(e.to_string()))
    }

    /// A new connection; the connection task runs on the current runtime.
    pub(crate) async fn connect(&self, side: Side, role: &str) -> Result<Client> {
        self.info
            .clone()
            .application_name(format!("pgsync {role}"))
            .connect_sql()
            .await
            .map_err(|source| SnapshotError::Connect { side, source })
    }
}

/// Opens a read-only transaction on the exported snapshot. The session's catalog
/// functions then print fully qualified names.
pub(crate) async fn import_snapshot(client: &Client, snapshot: &str) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(SnapshotError::db(
            Side::Source,
            "opening the snapshot transaction",
        ))?;
    client
        .batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", Literal(snapshot)))
        .await
        .map_err(|source| SnapshotError::SnapshotImport {
            name: snapshot.to_owned(),
            source,
        })?;
    client
        .batch_execute(
            "SET LOCAL search_path = ''; SET LOCAL datestyle = 'ISO'; \
             SET LOCAL intervalstyle = 'postgres'; SET LOCAL extra_float_digits = 3; \
             SET LOCAL bytea_output = 'hex'",
        )
        .await
        .map_err(SnapshotError::db(
            Side::Source,
            "setting up the snapshot session",
        ))
}

/// Session settings of a destination writer: triggers and FK checks off, asynchronous
/// commit (a lost commit loses the rows and their copy-state row together), an empty
/// search path (every name pgsync writes is qualified), and optionally a replication
/// origin so that a reverse task recognises the copied rows as pgsync's.
pub(crate) async fn setup_writer(client: &Client, origin: Option<&str>) -> Result<()> {
    client
        .batch_execute(
            "SET session_replication_role = replica; SET synchronous_commit = off; \
             SET search_path = ''; SET check_function_bodies = off; SET datestyle = 'ISO'; \
             SET intervalstyle = 'postgres'",
        )
        .await
        .map_err(SnapshotError::db(
            Side::Destination,
            "setting up the writer session (session_replication_role = replica)",
        ))?;
    if let Some(origin) = origin {
        let sql = format!(
            "SELECT pg_catalog.pg_replication_origin_create({o}) WHERE NOT EXISTS \
             (SELECT FROM pg_catalog.pg_replication_origin WHERE roname = {o}); \
             SELECT pg_catalog.pg_replication_origin_session_setup({o})",
            o = Literal(origin)
        );
        client.batch_execute(&sql).await.map_err(SnapshotError::db(
            Side::Destination,
            format!("setting up replication origin {origin}"),
        ))?;
    }
    Ok(())
}

/// The server's major version (`server_version_num / 10000`).
pub(crate) async fn server_major(client: &Client, side: Side) -> Result<u32> {
    let row = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(SnapshotError::db(side, "reading server_version_num"))?;
    let num: i32 = row.get(0);
    Ok(u32::try_from(num / 10000).unwrap_or(0))
}
