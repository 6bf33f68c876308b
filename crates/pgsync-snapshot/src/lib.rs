//! Schema sync and consistent parallel full copy (MISSION S1, S2, S5, S6, L4).
//!
//! What a forward task does before streaming: recreate the selected schema on the
//! destination and copy every selected row, as of the exact point where the replication
//! slot begins, as fast as the two servers allow.
//!
//! ```text
//!   source (exported snapshot)                         destination
//!   catalog ──> Plan: pre-data ─────────────────────>  schemas, types, tables, views ..
//!   N sessions ── COPY TO (binary, ctid ranges) ──>    N sessions COPY FROM
//!                                                      + pgsync.copy_state per chunk
//!                                     post-data ──>    indexes ‖, PK/UNIQUE, FKs ‖,
//!                                                      triggers, rules, comments, setval
//! ```
//!
//! * [`catalog`]: the source schema read inside the snapshot with the server's own
//!   `format_type` / `pg_get_*def` functions.
//! * [`ddl`]: the plan — statements in dependency order, names through the
//!   [`pgsync_names::Mapping`].
//! * [`copy`]: workers, ctid chunks, the binary COPY pipe, resumable copy state.
//! * [`FullSync`]: runs it all; [`SyncHandle::snapshot_imported`] tells the caller when
//!   the exporting session may be released.
//! * [`Throttle`]: a rows/s and bytes/s token bucket shared by workers.
//!
//! Mapping limits (no SQL parser here): view bodies, rules and trigger `WHEN` /
//! `UPDATE OF` clauses that mention a renamed table or renamed columns are refused with
//! [`SnapshotError::UnsupportedMapping`]; schema renames are applied everywhere; routine
//! bodies are copied verbatim (only their qualified header is renamed).

mod apply;
pub mod catalog;
pub mod copy;
pub mod ddl;
mod endpoint;
mod error;
mod progress;
mod sqltext;
mod sync;
mod throttle;

pub use catalog::Catalog;
pub use copy::CopyReport;
pub use copy::state::CopyState;
pub use ddl::{ExistingTables, Plan};
pub use endpoint::Endpoint;
pub use error::{Result, Side, SnapshotError};
pub use progress::{Phase, Progress};
pub use sync::{FullSync, SyncHandle, SyncOptions, SyncReport};
pub use throttle::{Limits, Throttle};
