//! Conflict kinds and the policies that resolve them, as users write them in the task file:
//!
//! ```toml
//! [sync]
//! conflict_policy = "last_write_wins"      # fail | ignore | overwrite | last_write_wins
//!
//! [sync.conflict_policy_per_kind]          # optional, per kind
//! insert_exists = "ignore"
//! update_missing = "fail"
//! ```
//!
//! [`ConflictPolicies`] deserialises exactly those two keys, so the task spec can
//! `#[serde(flatten)]` it into its `[sync]` table. `delete_missing` only accepts `ignore`:
//! a delete of a row that is not there has nothing left to overwrite or to wait for.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What the applier found wrong with an incoming change. Names are the config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConflictKind {
    /// An insert (or an update turned into one) meets existing rows: on the primary key
    /// and/or on any UNIQUE constraint, possibly several rows at once.
    InsertExists,
    /// The new image would land on a key this node deleted *after* the incoming change was
    /// committed (a tombstone newer than the change), or whose tombstone was already
    /// pruned while the change is older than the prune horizon.
    InsertDeleted,
    /// An update whose row is not here; it may become an insert.
    UpdateMissing,
    /// An update whose new key or new UNIQUE values collide with another row.
    UpdateKeyExists,
    /// An update of a row last written by the other node after the incoming change.
    UpdateNewerLocal,
    /// A delete of a row that is not here; always ignored.
    DeleteMissing,
    /// A delete of a row last written by the other node after the incoming change.
    DeleteNewerLocal,
}

impl ConflictKind {
    /// Every kind, in a fixed order (the order of [`ConflictCounters`](crate::ConflictCounters)).
    pub const ALL: [ConflictKind; 7] = [
        ConflictKind::InsertExists,
        ConflictKind::InsertDeleted,
        ConflictKind::UpdateMissing,
        ConflictKind::UpdateKeyExists,
        ConflictKind::UpdateNewerLocal,
        ConflictKind::DeleteMissing,
        ConflictKind::DeleteNewerLocal,
    ];

    /// The config / log name, e.g. `insert_exists`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConflictKind::InsertExists => "insert_exists",
            ConflictKind::InsertDeleted => "insert_deleted",
            ConflictKind::UpdateMissing => "update_missing",
            ConflictKind::UpdateKeyExists => "update_key_exists",
            ConflictKind::UpdateNewerLocal => "update_newer_local",
            ConflictKind::DeleteMissing => "delete_missing",
            ConflictKind::DeleteNewerLocal => "delete_newer_local",
        }
    }

    /// Position in [`ConflictKind::ALL`].
    pub(crate) const fn index(self) -> usize {
        match self {
            ConflictKind::InsertExists => 0,
            ConflictKind::InsertDeleted => 1,
            ConflictKind::UpdateMissing => 2,
            ConflictKind::UpdateKeyExists => 3,
            ConflictKind::UpdateNewerLocal => 4,
            ConflictKind::DeleteMissing => 5,
            ConflictKind::DeleteNewerLocal => 6,
        }
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a conflict is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Stop the task before anything of the transaction is committed. Nothing is skipped:
    /// after the data is fixed, the task resumes at the same transaction.
    Fail,
    /// Keep the destination as it is; drop the incoming change.
    Ignore,
    /// The source wins: the incoming change is applied, turned into an insert or update
    /// where needed, and rows that block it are removed.
    Overwrite,
    /// The later write wins (commit time, then node id); with tombstones, concurrent
    /// writes on both nodes converge. The default: it is the only policy that converges.
    #[default]
    LastWriteWins,
}

impl Policy {
    /// The config name, e.g. `last_write_wins`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::Fail => "fail",
            Policy::Ignore => "ignore",
            Policy::Overwrite => "overwrite",
            Policy::LastWriteWins => "last_write_wins",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// `delete_missing` was given another policy than `ignore`.
    #[error(
        "conflict_policy_per_kind.delete_missing = \"{0}\" cannot work: a delete of a row that is not there is always ignored (remove the line or write \"ignore\")"
    )]
    DeleteMissingIsAlwaysIgnored(Policy),
}

/// The policy for each conflict kind: one global policy plus optional per-kind overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawPolicies", into = "RawPolicies")]
pub struct ConflictPolicies {
    default: Policy,
    per_kind: BTreeMap<ConflictKind, Policy>,
}

/// The serialised form (the keys of the task file).
#[derive(Serialize, Deserialize)]
struct RawPolicies {
    #[serde(default)]
    conflict_policy: Policy,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    conflict_policy_per_kind: BTreeMap<ConflictKind, Policy>,
}

impl TryFrom<RawPolicies> for ConflictPolicies {
    type Error = PolicyError;

    fn try_from(raw: RawPolicies) -> Result<Self, PolicyError> {
        let mut policies = ConflictPolicies::uniform(raw.conflict_policy);
        for (kind, policy) in raw.conflict_policy_per_kind {
            policies = policies.with(kind, policy)?;
        }
        Ok(policies)
    }
}

impl From<ConflictPolicies> for RawPolicies {
    fn from(p: ConflictPolicies) -> Self {
        RawPolicies {
            conflict_policy: p.default,
            conflict_policy_per_kind: p.per_kind,
        }
    }
}

impl ConflictPolicies {
    /// The same policy for every kind.
    pub fn uniform(policy: Policy) -> Self {
        Self {
            default: policy,
            per_kind: BTreeMap::new(),
        }
    }

    /// Overrides the policy of one kind.
    pub fn with(mut self, kind: ConflictKind, policy: Policy) -> Result<Self, PolicyError> {
        if kind == ConflictKind::DeleteMissing && policy != Policy::Ignore {
            return Err(PolicyError::DeleteMissingIsAlwaysIgnored(policy));
        }
        self.per_kind.insert(kind, policy);
        Ok(self)
    }

    /// The global policy.
    pub fn default_policy(&self) -> Policy {
        self.default
    }

    /// The policy that resolves `kind` (`delete_missing` is always `ignore`).
    pub fn for_kind(&self, kind: ConflictKind) -> Policy {
        if kind == ConflictKind::DeleteMissing {
            return Policy::Ignore;
        }
        self.per_kind.get(&kind).copied().unwrap_or(self.default)
    }

    /// Whether any kind is resolved by last-write-wins (the applier then needs commit
    /// timestamps and tombstones; precheck needs `track_commit_timestamp = on`).
    pub fn uses_last_write_wins(&self) -> bool {
        ConflictKind::ALL
            .iter()
            .any(|k| self.for_kind(*k) == Policy::LastWriteWins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Sync {
        #[serde(flatten)]
        conflicts: ConflictPolicies,
    }

    #[derive(Debug, Deserialize)]
    struct File {
        sync: Sync,
    }

    #[test]
    fn a_global_policy_and_per_kind_overrides_are_read_from_the_task_file() {
        let file: File = toml::from_str(
            r#"
            [sync]
            conflict_policy = "overwrite"
            [sync.conflict_policy_per_kind]
            insert_exists = "ignore"
            update_newer_local = "last_write_wins"
            "#,
        )
        .unwrap();
        let p = &file.sync.conflicts;
        assert_eq!(p.default_policy(), Policy::Overwrite);
        assert_eq!(p.for_kind(ConflictKind::InsertExists), Policy::Ignore);
        assert_eq!(
            p.for_kind(ConflictKind::UpdateNewerLocal),
            Policy::LastWriteWins
        );
        assert_eq!(p.for_kind(ConflictKind::UpdateMissing), Policy::Overwrite);
        assert_eq!(p.for_kind(ConflictKind::DeleteMissing), Policy::Ignore);
        assert!(p.uses_last_write_wins());
    }

    #[test]
    fn without_settings_every_kind_uses_last_write_wins() {
        let file: File = toml::from_str("[sync]\n").unwrap();
        for kind in ConflictKind::ALL {
            let expected = if kind == ConflictKind::DeleteMissing {
                Policy::Ignore
            } else {
                Policy::LastWriteWins
            };
            assert_eq!(file.sync.conflicts.for_kind(kind), expected);
        }
    }

    #[test]
    fn unknown_kinds_and_policies_are_refused_with_their_name() {
        let bad_kind = toml::from_str::<File>(
            "[sync]\nconflict_policy = \"fail\"\n[sync.conflict_policy_per_kind]\ninsert_clash = \"ignore\"\n",
        )
        .unwrap_err();
        assert!(bad_kind.to_string().contains("insert_clash"), "{bad_kind}");
        let bad_policy =
            toml::from_str::<File>("[sync]\nconflict_policy = \"newest\"\n").unwrap_err();
        assert!(bad_policy.to_string().contains("newest"), "{bad_policy}");
    }

    #[test]
    fn delete_missing_refuses_every_policy_but_ignore() {
        let err = toml::from_str::<File>(
            "[sync]\n[sync.conflict_policy_per_kind]\ndelete_missing = \"fail\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("always ignored"), "{err}");
        assert!(
            ConflictPolicies::default()
                .with(ConflictKind::DeleteMissing, Policy::Ignore)
                .is_ok()
        );
    }

    #[test]
    fn policies_round_trip_through_toml() {
        let p = ConflictPolicies::uniform(Policy::Fail)
            .with(ConflictKind::UpdateMissing, Policy::Overwrite)
            .unwrap();
        let text = toml::to_string(&Sync {
            conflicts: p.clone(),
        })
        .unwrap();
        let back: Sync = toml::from_str(&text).unwrap();
        assert_eq!(back.conflicts, p);
    }

    #[test]
    fn kind_names_match_their_serialised_form() {
        for kind in ConflictKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(ConflictKind::ALL[kind.index()], kind);
        }
    }
}
