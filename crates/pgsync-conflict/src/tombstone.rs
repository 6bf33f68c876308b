//! Bounded tombstones: how a missing row tells "deleted here later" from "never here".
//!
//! Under last-write-wins, an update (or insert) that arrives for a key with no row is
//! ambiguous: either this node deleted the row *after* the incoming change was committed
//! (the delete must win), or *before* it (the incoming write must win and the row comes
//! back). Only the time of the local delete can tell, so every node keeps a tombstone for
//! each **local** delete — deletes by applications, and the old key of a local key-changing
//! update — holding the delete's [`WriteStamp`]. Deletes applied from the other node need
//! none: that node's later changes arrive after them in commit order.
//!
//! ```text
//!   A: delete k @10  ── tombstone(k, 10, A)
//!   B: update k @5   ───────────────▶ A: k missing, tombstone 10 > 5  -> skip (delete wins)
//!   B: k deleted by A's delete @10 (10 > 5)                           -> both without k
//! ```
//!
//! **Retention.** Tombstones live in `pgsync.tombstones` on each destination (table and
//! key; the delete's commit time is that of the tombstone row's own transaction, read with
//! `pg_xact_commit_timestamp(xmin)`, see pgsync-apply's `tombstones.rs`). A tombstone
//! matters only to an incoming change committed *before* the delete, and the other node's
//! changes arrive in commit order: once this node has applied a change from the other
//! node committed after `delete + margin`, no later change from it can be older than the
//! delete, and the tombstone is dead weight.
//! So [`TombstoneRetention`] prunes by the **applied watermark** (the commit time of the
//! last transaction applied from the other node), not by wall-clock age: a paused task
//! keeps every tombstone it will still need, and the other node's heartbeat keeps the
//! watermark moving when it is idle. `margin` (default 1 s) covers commit timestamps that
//! are not quite in commit order across a node's concurrent transactions.
//!
//! A hard bound, `max_count` per table (oldest first), caps the table when the watermark
//! stalls (the other node gone for good). Each prune raises the table's **horizon**: the
//! newest commit time among pruned tombstones. A missing key without a tombstone is then
//! [`Absence::NoTrace`] with that horizon:
//!
//! * incoming commit time **after** the horizon: any pruned tombstone for the key was
//!   older, so the incoming write wins, exactly as if the tombstone were still there
//!   (always the case for tombstones pruned by the watermark);
//! * **at or before** the horizon (only after the count bound pruned a tombstone the
//!   watermark had not released): the answer was pruned. pgsync then lets the delete win;
//!   the incoming write is skipped and logged as a conflict.
//!
//! Beyond the bound convergence degrades to **delete-wins** rather than insert-wins: the
//! change concerned is older than deletes this node made and the other node has not yet
//! seen; bringing a deleted row back from it would revive data someone removed, from an
//! image that may lack unchanged TOAST columns, whereas a skipped write is visible in the
//! conflict log and repairable by validation. The model in `tests/convergence.rs` checks
//! that the nodes then differ only by missing rows, never by different rows at a key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgsync_names::QualifiedName;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stamp::{CommitTime, WriteStamp};

/// What the destination knows about a key that has no row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Absence {
    /// This node deleted the key; the delete was committed as stamped.
    Tombstone(WriteStamp),
    /// No tombstone. Tombstones with commit times up to `pruned_through` may have been
    /// pruned for this table (`None`: none ever were, or tombstones are not kept).
    NoTrace {
        /// The table's prune horizon.
        pruned_through: Option<CommitTime>,
    },
}

impl Absence {
    /// A key that never had a tombstone pruned: an incoming write always lands.
    pub const NEVER_DELETED: Absence = Absence::NoTrace {
        pruned_through: None,
    };

    /// How a write stamped `incoming` fares at this empty key under last-write-wins.
    pub fn admits(&self, incoming: &WriteStamp) -> Admission {
        match self {
            Absence::Tombstone(deleted) if incoming.supersedes(deleted) => Admission::Admitted,
            Absence::Tombstone(_) => Admission::DeletedLater,
            Absence::NoTrace {
                pruned_through: Some(horizon),
            } if incoming.commit_time <= *horizon => Admission::TombstoneExpired,
            Absence::NoTrace { .. } => Admission::Admitted,
        }
    }
}

/// The outcome of [`Absence::admits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Admission {
    /// The incoming write is newer than any delete of the key: it lands.
    Admitted,
    /// A local delete newer than the incoming write: the delete wins.
    DeletedLater,
    /// The incoming write is older than the prune horizon: it cannot be told apart from a
    /// pruned newer delete, and the delete wins.
    TombstoneExpired,
}

impl Admission {
    /// Whether the write lands.
    pub fn is_admitted(self) -> bool {
        self == Admission::Admitted
    }
}

/// One tombstone as stored in `pgsync.tombstones`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The table the row was deleted from.
    pub table: QualifiedName,
    /// Its identity key.
    pub key: Value,
    /// When and where the delete was committed.
    pub deleted: WriteStamp,
}

/// When tombstones may go.
///
/// A tombstone is pruned once the applied watermark (commit time of the last transaction
/// applied here from the other node) is more than `margin` past its delete: no change
/// still to come from that node can be older. Beyond `max_count` per table the oldest go
/// regardless, raising the horizon ([`TombstoneSet::pruned_through`]) past which stale
/// writes at empty keys lose ([`Admission::TombstoneExpired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TombstoneRetention {
    /// How far out of commit order one node's commit timestamps may be (in seconds in the
    /// config).
    #[serde(with = "seconds")]
    pub margin: Duration,
    /// At most this many tombstones per table; the oldest go first.
    pub max_count: usize,
}

impl Default for TombstoneRetention {
    fn default() -> Self {
        Self {
            margin: Duration::from_secs(1),
            max_count: 1_000_000,
        }
    }
}

impl TombstoneRetention {
    /// Tombstones with a delete commit time before this may go, given the applied
    /// watermark.
    pub fn cutoff(&self, applied_through: CommitTime) -> CommitTime {
        applied_through.saturating_sub(self.margin)
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// The tombstones of one table, in memory: the reference implementation of the store's
/// rules (the applier keeps the same data in `pgsync.tombstones`), used by the models.
#[derive(Debug, Clone)]
pub struct TombstoneSet<K> {
    by_key: BTreeMap<K, WriteStamp>,
    by_age: BTreeSet<(WriteStamp, K)>,
    pruned_through: Option<CommitTime>,
}

impl<K> Default for TombstoneSet<K> {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
            by_age: BTreeSet::new(),
            pruned_through: None,
        }
    }
}

impl<K: Ord + Clone> TombstoneSet<K> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a local delete of `key`; an older tombstone for it is replaced, a newer one
    /// kept.
    pub fn record(&mut self, key: K, deleted: WriteStamp) {
        if let Some(previous) = self.by_key.get(&key) {
            if *previous >= deleted {
                return;
            }
            self.by_age.remove(&(previous.clone(), key.clone()));
        }
        self.by_age.insert((deleted.clone(), key.clone()));
        self.by_key.insert(key, deleted);
    }

    /// What an incoming change finds at `key` when no row is there.
    pub fn absence(&self, key: &K) -> Absence {
        match self.by_key.get(key) {
            Some(stamp) => Absence::Tombstone(stamp.clone()),
            None => Absence::NoTrace {
                pruned_through: self.pruned_through,
            },
        }
    }

    /// Number of tombstones kept.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The prune horizon.
    pub fn pruned_through(&self) -> Option<CommitTime> {
        self.pruned_through
    }

    /// Applies `retention`, given the applied watermark (`None`: nothing applied from the
    /// other node yet); returns how many tombstones were pruned.
    pub fn prune(
        &mut self,
        retention: &TombstoneRetention,
        applied_through: Option<CommitTime>,
    ) -> usize {
        let cutoff = applied_through.map(|t| retention.cutoff(t));
        let mut pruned = 0;
        while let Some((stamp, _)) = self.by_age.first() {
            let released = cutoff.is_some_and(|c| stamp.commit_time < c);
            if !released && self.by_age.len() <= retention.max_count {
                break;
            }
            if let Some((stamp, key)) = self.by_age.pop_first() {
                self.by_key.remove(&key);
                self.pruned_through = self.pruned_through.max(Some(stamp.commit_time));
                pruned += 1;
            }
        }
        pruned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::NodeId;

    fn stamp(t: i64, node: &str) -> WriteStamp {
        WriteStamp::new(CommitTime::from_pg_micros(t), NodeId::new(node))
    }

    #[test]
    fn a_newer_tombstone_beats_an_incoming_write_and_an_older_one_does_not() {
        let t = Absence::Tombstone(stamp(10, "a"));
        assert_eq!(t.admits(&stamp(5, "b")), Admission::DeletedLater);
        assert_eq!(t.admits(&stamp(15, "b")), Admission::Admitted);
        assert_eq!(t.admits(&stamp(10, "b")), Admission::Admitted);
        assert_eq!(
            Absence::Tombstone(stamp(10, "c")).admits(&stamp(10, "b")),
            Admission::DeletedLater
        );
    }

    #[test]
    fn without_a_tombstone_only_writes_older_than_the_horizon_are_refused() {
        assert!(
            Absence::NEVER_DELETED
                .admits(&stamp(i64::MIN, "b"))
                .is_admitted()
        );
        let pruned = Absence::NoTrace {
            pruned_through: Some(CommitTime::from_pg_micros(100)),
        };
        assert_eq!(pruned.admits(&stamp(100, "b")), Admission::TombstoneExpired);
        assert_eq!(pruned.admits(&stamp(101, "b")), Admission::Admitted);
    }

    #[test]
    fn recording_keeps_the_newest_delete_of_a_key() {
        let mut set = TombstoneSet::new();
        set.record(1, stamp(5, "a"));
        set.record(1, stamp(3, "a"));
        assert_eq!(set.absence(&1), Absence::Tombstone(stamp(5, "a")));
        set.record(1, stamp(8, "a"));
        assert_eq!(set.absence(&1), Absence::Tombstone(stamp(8, "a")));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn pruning_by_the_applied_watermark_raises_the_horizon_to_the_newest_pruned_delete() {
        let mut set = TombstoneSet::new();
        set.record(1, stamp(10, "a"));
        set.record(2, stamp(20, "a"));
        set.record(3, stamp(90, "a"));
        let retention = TombstoneRetention {
            margin: Duration::from_micros(50),
            max_count: 10,
        };
        assert_eq!(set.prune(&retention, None), 0);
        assert_eq!(
            set.prune(&retention, Some(CommitTime::from_pg_micros(100))),
            2
        );
        assert_eq!(set.pruned_through(), Some(CommitTime::from_pg_micros(20)));
        assert_eq!(
            set.absence(&1),
            Absence::NoTrace {
                pruned_through: Some(CommitTime::from_pg_micros(20))
            }
        );
        assert_eq!(set.absence(&3), Absence::Tombstone(stamp(90, "a")));
    }

    #[test]
    fn pruning_by_count_drops_the_oldest_first() {
        let mut set = TombstoneSet::new();
        for k in 0..5 {
            set.record(k, stamp(i64::from(k) * 10, "a"));
        }
        let retention = TombstoneRetention {
            margin: Duration::from_secs(1),
            max_count: 2,
        };
        assert_eq!(set.prune(&retention, None), 3);
        assert_eq!(set.len(), 2);
        assert_eq!(set.pruned_through(), Some(CommitTime::from_pg_micros(20)));
        assert!(matches!(set.absence(&3), Absence::Tombstone(_)));
    }

    #[test]
    fn retention_reads_the_margin_in_seconds() {
        let r: TombstoneRetention = serde_json::from_str(r#"{"margin": 2}"#).unwrap();
        assert_eq!(r.margin, Duration::from_secs(2));
        assert_eq!(r.max_count, TombstoneRetention::default().max_count);
    }
}
