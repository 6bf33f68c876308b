//! Throwaway PostgreSQL clusters for pgsync's tests, benches, examples and demo.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgsync_testkit::TestkitError> {
//! use pgsync_testkit::Cluster;
//! let cluster = Cluster::builder().database("shop").start().await?;
//! let client = cluster.client().await?;
//! client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
//! println!("connect with: {}", cluster.dsn());
//! # Ok(()) }
//! ```
//!
//! Each cluster is a fresh `initdb` in a temp dir on a free loopback port, configured for
//! logical replication (`wal_level = logical`, `track_commit_timestamp = on`, 32 slots,
//! senders and origins, `fsync = off` unless asked). The server binaries come from
//! `PGSYNC_PG_BIN`, `pg_config --bindir` or the newest `/usr/lib/postgresql/*/bin`; as root,
//! servers run as an unprivileged user the kit creates. Dropping a [`Cluster`] kills its
//! server; clusters of test processes that died are reaped by the next one.

mod binaries;
mod cluster;
mod error;
mod os_user;
mod pgbench;
mod process;
mod tls;

pub use binaries::{PG_BIN_ENV, PgBinaries};
pub use cluster::{Cluster, ClusterBuilder, HostAuth, SUPERUSER};
pub use error::{Result, TestkitError};
pub use os_user::OS_USER_ENV;
pub use pgbench::{Pgbench, PgbenchLoad, PgbenchReport, RunningPgbench};
pub use tls::TestCertificates;
