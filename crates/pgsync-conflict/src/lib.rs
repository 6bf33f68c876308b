//! Conflict detection and resolution for two-way sync, as pure functions.
//!
//! The applier (pgsync-apply) looks at the destination — the rows at the keys a change
//! touches, their last writers (`pg_xact_commit_timestamp_origin(xmin)`), tombstones,
//! UNIQUE collisions — and describes it as a [`Situation`]. This crate turns that into a
//! [`Resolution`]: a [`Decision`], the rows to evict, the delta columns, and the
//! [`ConflictRecord`]s to log. Nothing here does I/O, so every case is tested exhaustively,
//! and a model of two nodes (`tests/convergence.rs`) checks that both databases end equal.
//!
//! ```text
//!   incoming change ─┐
//!   destination rows ├─▶ Situation ─▶ detect ─▶ [DetectedConflict] ─▶ decide (policies)
//!   tombstones ──────┘                                                   │
//!                                       Resolver (optional, async) ◀─────┤
//!                                                                        ▼
//!             applier ◀── Resolution { decision, evict, delta_columns, keep_writer } ─▶ records
//! ```
//!
//! # Last-write-wins, and why it converges
//!
//! Every row version and every local delete carries a [`WriteStamp`]: the commit time and
//! node of its *original* transaction (the applier commits applied rows with the source's
//! commit time and origin, so both databases hold the same stamp for the same version).
//! Stamps are ordered by commit time, then node id — a tie is broken the same way on both
//! sides. **The rule: at every key, the write with the greatest stamp wins, where a delete
//! is a write of "no row" remembered by a tombstone; an update that changes its key is a
//! delete at the old key plus a write at the new key, each decided on its own key.**
//!
//! Each key then behaves as a last-writer-wins register: a node's state at a key is the
//! greatest write it has seen there, both nodes eventually see the same writes, so both
//! end with the same greatest one. The model in `tests/convergence.rs` checks this over
//! random interleavings, with delivery delayed arbitrarily but in commit order per
//! direction, as logical replication delivers.
//!
//! ## Worked example: the crossing that native replication cannot settle
//!
//! ```text
//!   A: UPDATE k SET v = 1   commit @100 (A)        B: UPDATE k SET v = 2   commit @105 (B)
//!   A applies B's @105: row k last written @100 by A, 105 > 100  -> apply_remote   v = 2
//!   B applies A's @100: row k last written @105 by B, 105 > 100  -> keep_local     v = 2
//!                       (update_newer_local, logged)
//! ```
//!
//! With a delete instead, the tombstone answers the question a missing row cannot:
//!
//! ```text
//!   A: DELETE k  @110 (tombstone k@110)            B: UPDATE k SET v = 3  @108
//!   A applies B's @108: no row k, tombstone 110 > 108  -> skip            (update_missing)
//!   B applies A's @110: row k @108 by B, 110 > 108     -> apply_remote    both without k
//!   (had B's update been @112: A converts it to an insert, B keeps its row: both v = 3)
//! ```
//!
//! ## Every case (I incoming stamp, L local row's last writer, D local tombstone, H horizon)
//!
//! | incoming      | destination                          | kind                 | decision            |
//! |---------------|--------------------------------------|----------------------|---------------------|
//! | insert k      | no row; no tombstone, or D < I       | —                    | `apply_remote`      |
//! | insert k      | no row; D > I (or I ≤ H, pruned)     | `insert_deleted`     | `skip`              |
//! | insert k      | row, L < I                           | `insert_exists`      | `convert_to_update` |
//! | insert k      | row, L > I                           | `insert_exists`      | `keep_local`        |
//! | update k      | row, L < I or L from I's node        | —                    | `apply_remote`      |
//! | update k      | row, L > I from the other node       | `update_newer_local` | `keep_local`        |
//! | update k      | no row; no tombstone, or D < I       | `update_missing`     | `convert_to_insert` |
//! | update k      | no row; D > I (or I ≤ H, pruned)     | `update_missing`     | `skip`              |
//! | update k1→k2  | old half wins, new half wins         | (per half)           | `apply_remote`      |
//! | update k1→k2  | old half wins, new half loses        | (per half)           | `convert_to_delete` |
//! | update k1→k2  | old half loses/missing, new wins     | (per half)           | `convert_to_insert` / `convert_to_update` |
//! | update k1→k2  | both halves lose                     | (per half)           | `keep_local`        |
//! | delete k      | row, L < I or L from I's node        | —                    | `apply_remote`      |
//! | delete k      | row, L > I from the other node       | `delete_newer_local` | `keep_local`        |
//! | delete k      | no row                               | `delete_missing`     | `skip` (any policy) |
//!
//! An unknown last writer (commit timestamps off, or truncated after freezing) counts as
//! older than anything incoming. A change from the node that wrote the local row always
//! supersedes it: that node's changes arrive in its commit order.
//!
//! ## What the rule assumes
//!
//! * **Tombstones for every local delete** (and for the old key of a local key-changing
//!   update), kept until the other node's applied changes have passed the delete's commit
//!   time ([`TombstoneRetention`]); a count bound caps them, and beyond it the delete wins.
//!   The model checks exact convergence with watermark pruning, and that with tombstones
//!   pruned at once the nodes only ever differ by a missing row, never by different rows
//!   at a key.
//! * **Synchronised clocks.** A local write replacing a row must commit later than the
//!   version it replaces. A node whose clock lags by more than the time between applying
//!   a remote write and overwriting it locally can lose that overwrite on the other node.
//! * **One unique key per table** for the convergence guarantee. Extra UNIQUE constraints
//!   are decided deterministically (the incoming row must be later than every row it
//!   collides with, which are then evicted), but evicting a row is not a write at its key,
//!   so a crossing of writes on different unique keys may leave the nodes different; the
//!   conflict log shows each such decision.
//!
//! ## Delta columns
//!
//! A table may declare numeric *delta columns*: for an update that meets its row, they
//! are written as `col = col + (new - old)` whatever is decided for the other columns
//! ([`Resolution::delta_columns`]), so concurrent increments on both nodes all survive
//! (the model checks the sum over thousands of interleavings). When the rest of the row is
//! kept, the write must not change the row's last writer ([`Resolution::keep_writer`]):
//! the applier records the kept stamp next to the row, or the other columns diverge (the
//! model finds such a case when it is ignored). Deltas need the old value, so the source
//! table needs `REPLICA IDENTITY FULL`. The sum is guaranteed over updates of rows both
//! nodes hold. An insert or delete of the same key racing with increments is decided for
//! the whole row by last-write-wins, and that row's delta columns can then end different
//! on the two nodes (an increment applied on one node to a version the other discarded);
//! such rows show in the conflict log, and validation finds them.

mod decide;
mod policy;
mod record;
mod resolver;
mod situation;
mod stamp;
mod tombstone;

pub use decide::{
    Decision, DetectedConflict, Eviction, InvalidDecision, Resolution, Subject, decide, detect,
};
pub use policy::{ConflictKind, ConflictPolicies, Policy, PolicyError};
pub use record::{ConflictCounters, ConflictRecord};
pub use resolver::{ResolveError, Resolver, resolve};
pub use situation::{Collision, IncomingChange, LocalRow, Operation, Situation, Slot};
pub use stamp::{CommitTime, LastWriter, NodeId, WriteStamp};
pub use tombstone::{Absence, Admission, Tombstone, TombstoneRetention, TombstoneSet};
