//! How the applier handles conflicts: the policies, an optional custom resolver, who the
//! two nodes are, and which columns are applied as deltas.
//!
//! Without a [`ConflictHandling`] in the [`ApplierConfig`](crate::ApplierConfig), every
//! surprise on the fast path stops the task with [`ApplyError::Conflict`](crate::ApplyError)
//! (the one-way default of the library). With one, the group that hit the surprise is
//! rolled back and replayed on the careful path (see `careful.rs`), where each conflict is
//! detected, decided by [`pgsync_conflict::decide`] (or the [`Resolver`]), carried out and
//! logged in `pgsync.conflicts`.
//!
//! Node ids: a row's last writer is read from `pg_xact_commit_timestamp_origin(xmin)`.
//! Origin 0 (written by an application on the destination) is [`ConflictHandling::local_node`];
//! any replication origin (pgsync's applier, its copy workers) is the node the changes come
//! from, [`ConflictHandling::remote_node`]. Both sides of a two-way pair must use the same
//! two ids, so that a tie in commit time is broken the same way on both.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use pgsync_conflict::{ConflictKind, ConflictPolicies, NodeId, Policy, Resolver};
use pgsync_names::QualifiedName;

/// Conflict handling of one applier.
#[derive(Clone)]
pub struct ConflictHandling {
    /// The policy per conflict kind.
    pub policies: ConflictPolicies,
    /// A custom rule consulted for every conflict (after the policies proposed theirs).
    pub resolver: Option<Arc<dyn Resolver>>,
    /// The node the destination is (rows written there by applications).
    pub local_node: NodeId,
    /// The node the source is (the changes the applier receives).
    pub remote_node: NodeId,
    /// Whether rows carry last writers worth comparing (`update_newer_local`,
    /// `delete_newer_local`): true in a two-way pair, where applications write on both
    /// nodes. Needs `track_commit_timestamp = on` on the destination; when it is off, every
    /// local row counts as older than the incoming change.
    pub compare_writers: bool,
    /// Per destination table, numeric columns applied as `col = col + (new - old)` (the
    /// source table needs `REPLICA IDENTITY FULL` so that updates carry the old value).
    pub delta_columns: HashMap<QualifiedName, Vec<String>>,
    /// Whether local deletes leave tombstones (`pgsync.tombstones`) that incoming writes
    /// older than the delete lose against (last-write-wins convergence of delete races).
    pub tombstones: bool,
}

impl ConflictHandling {
    /// `policies` for changes from `remote_node` applied on `local_node`; no writer
    /// comparison, no delta columns, no tombstones.
    pub fn new(policies: ConflictPolicies, local_node: NodeId, remote_node: NodeId) -> Self {
        Self {
            policies,
            resolver: None,
            local_node,
            remote_node,
            compare_writers: false,
            delta_columns: HashMap::new(),
            tombstones: false,
        }
    }

    /// Whether a local row written later than an incoming update or delete must be
    /// detected (some policy for those kinds keeps or refuses instead of overwriting).
    pub(crate) fn detects_newer_local(&self) -> bool {
        self.compare_writers
            && [
                ConflictKind::UpdateNewerLocal,
                ConflictKind::DeleteNewerLocal,
            ]
            .iter()
            .any(|k| self.policies.for_kind(*k) != Policy::Overwrite)
    }

    /// Whether ties in commit time go to the local row (the higher node id wins a tie).
    pub(crate) fn local_wins_ties(&self) -> bool {
        self.local_node > self.remote_node
    }
}

impl fmt::Debug for ConflictHandling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConflictHandling")
            .field("policies", &self.policies)
            .field("resolver", &self.resolver.as_ref().map(|_| "custom"))
            .field("local_node", &self.local_node)
            .field("remote_node", &self.remote_node)
            .field("compare_writers", &self.compare_writers)
            .field("delta_columns", &self.delta_columns)
            .field("tombstones", &self.tombstones)
            .finish()
    }
}
