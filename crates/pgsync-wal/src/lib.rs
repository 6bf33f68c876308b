//! Reading changes out of PostgreSQL: LSNs, the logical replication protocol, pgoutput.
//!
//! tokio-postgres cannot speak the replication sub-protocol (no CopyBoth), so this crate
//! has its own small client for it, built on `postgres-protocol`; ordinary SQL stays on
//! tokio-postgres. The pgoutput decoder is sans-IO and zero-copy over `bytes::Bytes`.

mod lsn;
pub mod pgoutput;
pub mod txn;

pub use lsn::{AtomicLsn, Lsn, ParseLsnError};
pub use pgoutput::{PgTimestamp, Relation, RelationColumn, ReplicaIdentity, Tuple};
pub use txn::{Change, Transaction};
