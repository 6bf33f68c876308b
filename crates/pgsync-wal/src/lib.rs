//! Reading changes out of PostgreSQL: LSNs, the logical replication protocol, pgoutput.
//!
//! tokio-postgres cannot speak the replication sub-protocol (no CopyBoth), so this crate
//! has its own small client for it, built on `postgres-protocol`; ordinary SQL stays on
//! tokio-postgres. The pgoutput decoder is sans-IO and zero-copy over `bytes::Bytes`.

pub mod conn;
pub mod dsn;
mod error;
mod lsn;
pub mod peek;
pub mod pgoutput;
pub mod stream;
pub mod txn;

pub use conn::{
    CreateSlot, CreatedSlot, ReplicationConfig, ReplicationConnection, SlotSnapshot, SslMode,
    StartOptions, Streaming, SystemIdentity,
};
pub use dsn::{ConnInfo, DsnError};
pub use error::{Retry, ServerError, SqlState, WalError};
pub use lsn::{AtomicLsn, Lsn, ParseLsnError};
pub use pgoutput::{PgTimestamp, Relation, RelationColumn, ReplicaIdentity, Tuple};
pub use stream::{FeedbackHandle, ReplicationStream, XLogData};
pub use txn::{Change, Transaction};
