//! The conflict log: one [`ConflictRecord`] per detected conflict, and counters per kind.
//!
//! The applier writes each record as a row of `pgsync.conflicts` on the destination (in
//! the applying transaction; for a `fail` decision in a transaction of its own, since the
//! applying one is rolled back), and adds it to the task's [`ConflictCounters`], which
//! `pgsync status` and the metrics show. Everything is serde-serialisable; JSON field
//! names are the table's column names.

use pgsync_names::QualifiedName;
use pgsync_wal::Lsn;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decide::{Decision, Resolution, Subject};
use crate::policy::{ConflictKind, Policy};
use crate::situation::{LocalRow, Situation, Slot};
use crate::stamp::{CommitTime, NodeId};

/// One row of the conflict log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The kind of conflict.
    pub kind: ConflictKind,
    /// Destination table.
    pub table: QualifiedName,
    /// Identity key of the local row concerned (else of the incoming change), as JSON.
    pub key: Option<Value>,
    /// The local row concerned, as JSON (`None` when there is no row).
    pub local_row: Option<Value>,
    /// The incoming row (new image; old image for a delete), as JSON.
    pub remote_row: Option<Value>,
    /// Commit time of the local row's last writer, or of the local delete (tombstone).
    pub local_commit_time: Option<CommitTime>,
    /// Node of the local row's last writer, or of the local delete.
    pub local_origin: Option<NodeId>,
    /// Whether the local side is a tombstone rather than a row.
    pub local_deleted: bool,
    /// Commit time of the incoming change at its origin.
    pub remote_commit_time: CommitTime,
    /// Node where the incoming change was committed.
    pub remote_origin: NodeId,
    /// What was done with the change.
    pub decision: Decision,
    /// The policy that decided; `None` when a custom resolver did.
    pub policy: Option<Policy>,
    /// Whether last-write-wins judged the incoming change the later write here.
    pub remote_is_later: bool,
    /// Commit LSN of the source transaction.
    pub source_lsn: Lsn,
}

impl Resolution {
    /// The conflict-log records of this resolution (empty when nothing conflicted).
    pub fn records(&self, s: &Situation) -> Vec<ConflictRecord> {
        self.conflicts
            .iter()
            .map(|c| {
                let row: Option<&LocalRow> = match c.subject {
                    Subject::OldKey => s.old_key().and_then(Slot::row),
                    Subject::NewKey => s.new_key().and_then(Slot::row),
                    Subject::Collision(i) => s.collisions().get(i).map(|col| &col.row),
                };
                let local = c.local_stamp(s);
                ConflictRecord {
                    kind: c.kind,
                    table: s.change.table.clone(),
                    key: row
                        .and_then(|r| r.key.clone())
                        .or_else(|| s.change.key.clone()),
                    local_row: row.and_then(|r| r.image.clone()),
                    remote_row: s.change.image.clone(),
                    local_commit_time: local.map(|l| l.commit_time),
                    local_origin: local.map(|l| l.node.clone()),
                    local_deleted: row.is_none() && local.is_some(),
                    remote_commit_time: s.change.stamp.commit_time,
                    remote_origin: s.change.stamp.node.clone(),
                    decision: self.decision.clone(),
                    policy: c.policy,
                    remote_is_later: c.incoming_is_later,
                    source_lsn: s.change.source_lsn,
                }
            })
            .collect()
    }
}

/// Conflicts counted per kind (for `pgsync status` and the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConflictCounters {
    counts: [u64; ConflictKind::ALL.len()],
}

impl ConflictCounters {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one conflict of `kind`.
    pub fn add(&mut self, kind: ConflictKind) {
        let slot = &mut self.counts[kind.index()];
        *slot = slot.saturating_add(1);
    }

    /// Counts every conflict of a resolution.
    pub fn add_resolution(&mut self, resolution: &Resolution) {
        for c in &resolution.conflicts {
            self.add(c.kind);
        }
    }

    /// Adds another set of counters (e.g. the forward and the reverse task's).
    pub fn merge(&mut self, other: &ConflictCounters) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// The count of one kind.
    pub fn get(&self, kind: ConflictKind) -> u64 {
        self.counts[kind.index()]
    }

    /// The sum over all kinds.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |a, c| a.saturating_add(*c))
    }

    /// Every kind with its count, in [`ConflictKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (ConflictKind, u64)> + '_ {
        ConflictKind::ALL.iter().map(|k| (*k, self.get(*k)))
    }
}

impl Serialize for ConflictCounters {
    /// A map from kind name to count, every kind present.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ConflictCounters {
    /// A map from kind name to count; absent kinds count zero.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<ConflictKind, u64>::deserialize(d)?;
        let mut counters = ConflictCounters::new();
        for (kind, n) in map {
            counters.counts[kind.index()] = n;
        }
        Ok(counters)
    }
}
