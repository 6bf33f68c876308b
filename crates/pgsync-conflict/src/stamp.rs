//! Who wrote a version of a row, and when: the facts every last-write-wins comparison uses.
//!
//! PostgreSQL records, per transaction, a commit timestamp and a replication origin
//! (`track_commit_timestamp = on`). pgsync's applier sets both from the *source*
//! transaction (`pg_replication_origin_xact_setup(lsn, commit_ts)` under the task's
//! origin), so a row carries the same [`WriteStamp`] on both databases: the time it was
//! originally committed and the node where that happened. The destination reads it back
//! with `pg_xact_commit_timestamp_origin(xmin)` and maps the origin id to a [`NodeId`]
//! (origin 0 is the local node itself).
//!
//! Stamps are totally ordered: commit time first, then node id, so that two writes
//! committed in the same microsecond on the two nodes are ordered the same way on both
//! ("higher node id wins the tie").
//!
//! When the destination cannot tell ([`LastWriter::Unknown`]: commit timestamps off when the
//! row was written, or the transaction is older than the retained commit-timestamp data,
//! which is truncated with the clog after freezing), the row is *old*: it counts as older
//! than any incoming change, whose stamp always comes from a live stream.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Microseconds between 1970-01-01 and 2000-01-01 (the PostgreSQL epoch).
const PG_EPOCH_FROM_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A commit time as PostgreSQL stores it: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommitTime(i64);

impl CommitTime {
    /// From microseconds since the PostgreSQL epoch (what pgoutput's Begin message and
    /// `timestamptz` on the wire carry).
    pub const fn from_pg_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the PostgreSQL epoch.
    pub const fn pg_micros(self) -> i64 {
        self.0
    }

    /// From a system time; `None` outside the range PostgreSQL can represent in an `i64`.
    pub fn from_system_time(t: SystemTime) -> Option<Self> {
        let unix_micros = match t.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).ok()?,
            Err(before) => i64::try_from(before.duration().as_micros())
                .ok()?
                .checked_neg()?,
        };
        unix_micros.checked_sub(PG_EPOCH_FROM_UNIX_MICROS).map(Self)
    }

    /// As a system time; `None` if the platform cannot represent it.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let unix_micros = self.0.checked_add(PG_EPOCH_FROM_UNIX_MICROS)?;
        let magnitude = Duration::from_micros(unix_micros.unsigned_abs());
        if unix_micros >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// `self - age`, saturating at the smallest representable time.
    pub fn saturating_sub(self, age: Duration) -> Self {
        let micros = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(micros))
    }
}

impl fmt::Debug for CommitTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitTime({}µs)", self.0)
    }
}

impl From<SystemTime> for CommitTime {
    /// Saturates at the ends of the range (far outside any real commit time).
    fn from(t: SystemTime) -> Self {
        Self::from_system_time(t).unwrap_or_else(|| {
            if t >= UNIX_EPOCH {
                Self(i64::MAX)
            } else {
                Self(i64::MIN)
            }
        })
    }
}

/// A stable identifier of one node (database) of a two-way sync, as configured.
///
/// It must be the same string on both sides for the same node: both sides use it to break
/// ties between equal commit times, and a tie must be decided the same way everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// A node id from its configured name.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When and where a version of a row (or a delete) was originally committed.
///
/// Ordered by commit time, then node id: the greater stamp is the later write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriteStamp {
    /// Commit time of the original transaction.
    pub commit_time: CommitTime,
    /// The node where the original transaction committed.
    pub node: NodeId,
}

impl WriteStamp {
    /// A stamp from its parts.
    pub fn new(commit_time: CommitTime, node: NodeId) -> Self {
        Self { commit_time, node }
    }

    /// Whether a write stamped `self`, arriving from its origin, replaces a local version
    /// stamped `local` under last-write-wins.
    ///
    /// * The same origin: always. Each direction delivers in commit order, so an incoming
    ///   change from the node that wrote the local version is the later one in that node's
    ///   own history, whatever the clocks say; the origin itself holds the incoming version.
    /// * Otherwise the greater stamp wins; an equal stamp (same time, same node) is the
    ///   same write seen again and lets the incoming side through.
    pub fn supersedes(&self, local: &WriteStamp) -> bool {
        self.node == local.node || self >= local
    }
}

/// The last writer of a destination row, as far as the destination can tell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastWriter {
    /// Commit time and origin of the row's last writing transaction.
    Known(WriteStamp),
    /// Not recorded (commit timestamps were off, or the data was truncated after freezing):
    /// the row counts as older than any incoming change.
    Unknown,
}

impl LastWriter {
    /// The stamp, when known.
    pub fn stamp(&self) -> Option<&WriteStamp> {
        match self {
            LastWriter::Known(s) => Some(s),
            LastWriter::Unknown => None,
        }
    }

    /// Whether this local version was written by another node than `incoming`'s, after it
    /// (the "newer local row" conflict). Unknown writers are old, so never newer.
    pub fn is_newer_foreign_write_than(&self, incoming: &WriteStamp) -> bool {
        match self {
            LastWriter::Known(local) => !incoming.supersedes(local),
            LastWriter::Unknown => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(t: i64, node: &str) -> WriteStamp {
        WriteStamp::new(CommitTime::from_pg_micros(t), NodeId::new(node))
    }

    #[test]
    fn the_pg_epoch_is_the_first_of_january_2000() {
        let y2k = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(
            CommitTime::from_system_time(y2k),
            Some(CommitTime::from_pg_micros(0))
        );
        let t = CommitTime::from_pg_micros(-5);
        assert_eq!(CommitTime::from(t.to_system_time().unwrap()), t);
        let before_1970 = UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(
            CommitTime::from(before_1970).pg_micros(),
            -PG_EPOCH_FROM_UNIX_MICROS - 1
        );
    }

    #[test]
    fn a_later_stamp_from_another_node_supersedes_and_an_earlier_one_does_not() {
        assert!(stamp(2, "a").supersedes(&stamp(1, "b")));
        assert!(!stamp(1, "a").supersedes(&stamp(2, "b")));
    }

    #[test]
    fn equal_times_are_broken_by_the_higher_node_id_on_both_sides() {
        assert!(stamp(5, "b").supersedes(&stamp(5, "a")));
        assert!(!stamp(5, "a").supersedes(&stamp(5, "b")));
    }

    #[test]
    fn a_change_from_the_local_rows_own_writer_always_supersedes_it() {
        assert!(stamp(1, "b").supersedes(&stamp(9, "b")));
    }

    #[test]
    fn an_unknown_writer_is_never_newer_than_an_incoming_change() {
        assert!(!LastWriter::Unknown.is_newer_foreign_write_than(&stamp(i64::MIN, "a")));
        assert!(LastWriter::Known(stamp(3, "b")).is_newer_foreign_write_than(&stamp(2, "a")));
    }
}
