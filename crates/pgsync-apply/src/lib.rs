//! The destination writer: decoded source transactions applied to the destination
//! exactly once, fast.
//!
//! * one destination transaction per group of source transactions, origin progress
//!   (`pg_replication_origin_xact_setup`) committed with the rows;
//! * statements prepared once per shape and pipelined on one connection; runs of inserts
//!   through COPY; values passed in the form the source sent them, never re-encoded;
//! * unchanged TOAST columns never written; key-changing UPDATEs found by the old key;
//!   tables without a key matched by the whole old row, one physical row at a time;
//! * `session_replication_role = replica`: user triggers and FK checks stay quiet;
//! * any surprise (a missing row, an existing key) rolls the group back; without conflict
//!   handling it is reported as a conflict, with the table and key; with it
//!   ([`ConflictHandling`]), the group is replayed on the careful path, where each conflict
//!   is detected, decided by the policies (pgsync-conflict), carried out and logged in
//!   `pgsync.conflicts`.

mod applier;
mod carry;
mod conflict_log;
mod conflicts;
mod copy;
mod error;
mod guard;
mod keyed;
mod look;
mod param;
mod pipeline;
mod probe;
mod session;
mod sql;
mod tables;
mod tombstones;

pub use applier::{Applier, ApplierConfig, DdlApply};
pub use conflicts::ConflictHandling;
pub use error::ApplyError;
pub use session::{ensure_origin, origin_progress};
pub use tombstones::install_triggers as install_tombstone_triggers;
