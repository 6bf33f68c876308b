//! The task spec: what the TOML file says, validated before anything connects.
//!
//! Unknown keys are errors (a misspelt `two_wya = true` must not silently mean the
//! default), and every error names the key and says what is accepted. The keys in the
//! README are the stable contract; new ones get defaults so old files keep working.

use std::path::Path;

use std::collections::BTreeMap;

use pgsync_conflict::{ConflictKind, ConflictPolicies, Policy};
use pgsync_loop::LoopPrevention;
use pgsync_names::{Mapping, Selection};
use serde::Deserialize;

use crate::endpoint::Endpoint;
pub use crate::ops::config::{AlertsSpec, HeartbeatSpec, RetrySpec, ThrottleSpec};

/// A task: one source, one destination, what to sync and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Task name: prefixes the slot, publication and origin names.
    pub name: String,
    /// Cluster A.
    pub source: Endpoint,
    /// Cluster B.
    pub destination: Endpoint,
    /// What to sync.
    #[serde(default)]
    pub sync: SyncSpec,
    /// Which tables.
    #[serde(default)]
    pub objects: Selection,
    /// Renames on the way from A to B.
    #[serde(default)]
    pub mapping: Mapping,
    /// How long transient errors are retried.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Rate limits of the full copy and of streaming.
    #[serde(default)]
    pub throttle: ThrottleSpec,
    /// Heartbeats on the reading side (lag when idle).
    #[serde(default)]
    pub heartbeat: HeartbeatSpec,
    /// Who is told when the task fails or falls behind.
    #[serde(default)]
    pub alerts: AlertsSpec,
}

/// The `[sync]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSpec {
    /// Also run the reverse task (B -> A).
    pub two_way: bool,
    /// Create the schema on the destination first.
    pub schema: bool,
    /// Copy existing rows before streaming.
    pub full: bool,
    /// Replay DDL of the source on the destination.
    pub ddl: bool,
    /// DDL that cannot be replayed faithfully (issued from a function or DO block,
    /// computed defaults that fill existing rows, temporary objects, CREATE TABLE AS):
    /// `fail` (default) stops the task naming the statement, `skip` leaves it out.
    pub ddl_unsupported: pgsync_ddl::plan::Unsupported,
    /// What to do with selected tables that already exist on the destination.
    pub existing_tables: ExistingTables,
    /// Parallel workers of the full copy.
    pub copy_workers: u16,
    /// How conflicts are resolved: `fail` (default), `ignore`, `overwrite`,
    /// `last_write_wins`.
    pub conflict_policy: Policy,
    /// Per conflict kind, a policy other than `conflict_policy`.
    pub conflict_policy_per_kind: BTreeMap<ConflictKind, Policy>,
    /// How two-way sync keeps changes from looping: `origins` (default) or `marker`.
    pub loop_prevention: LoopPrevention,
    /// Per source table (`"schema.table"`), numeric columns applied as a difference
    /// (`col = col + (new - old)`), so that increments made on both sides all count. The
    /// source tables need `REPLICA IDENTITY FULL`.
    pub delta_columns: BTreeMap<String, Vec<String>>,
    /// A slot at least this many MB of WAL behind is read through the SQL decoding
    /// functions (large reads) rather than the walsender (a `send()` per message) until
    /// it has caught up; `0`: always stream.
    pub catch_up_min_wal_mb: u64,
}

impl SyncSpec {
    /// The conflict policies as the applier uses them.
    pub fn conflict_policies(&self) -> Result<ConflictPolicies, String> {
        let mut p = ConflictPolicies::uniform(self.conflict_policy);
        for (&kind, &policy) in &self.conflict_policy_per_kind {
            p = p
                .with(kind, policy)
                .map_err(|e| format!("sync.conflict_policy_per_kind: {e}"))?;
        }
        Ok(p)
    }
}

impl Default for SyncSpec {
    fn default() -> Self {
        Self {
            two_way: false,
            schema: true,
            full: true,
            ddl: true,
            ddl_unsupported: pgsync_ddl::plan::Unsupported::Fail,
            existing_tables: ExistingTables::Error,
            copy_workers: 4,
            conflict_policy: Policy::Fail,
            conflict_policy_per_kind: BTreeMap::new(),
            loop_prevention: LoopPrevention::Origins,
            delta_columns: BTreeMap::new(),
            catch_up_min_wal_mb: 16,
        }
    }
}

/// Tables that already exist on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExistingTables {
    /// Refuse to start, listing them.
    Error,
    /// Keep them as they are; on a key clash during the copy keep the destination row.
    Ignore,
}

/// The spec cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The file cannot be read.
    #[error("cannot read the task file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or ill-typed keys (the message has line and key).
    #[error("task file {path}: {message}")]
    Toml {
        /// The file (or `<inline>`).
        path: String,
        /// toml's own message, with the line, column and key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("task file {path}: {message}")]
    Invalid {
        /// The file (or `<inline>`).
        path: String,
        /// What is wrong and what is accepted.
        message: String,
    },
}

impl TaskSpec {
    /// Reads and validates a task file.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    /// Parses and validates TOML text; `origin` names it in messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let mut spec: TaskSpec = toml::from_str(text).map_err(|e| SpecError::Toml {
            path: origin.into(),
            message: e.to_string(),
        })?;
        spec.validate().map_err(|message| SpecError::Invalid {
            path: origin.into(),
            message,
        })?;
        let app = spec.application_name();
        spec.source.set_application_name(&app);
        spec.destination.set_application_name(&app);
        Ok(spec)
    }

    /// The `application_name` of the task's sessions: `pgsync:<name>`.
    pub fn application_name(&self) -> String {
        format!("pgsync:{}", self.name)
    }

    fn validate(&self) -> Result<(), String> {
        validate_name(&self.name)?;
        if !(1..=64).contains(&self.sync.copy_workers) {
            return Err(format!(
                "sync.copy_workers = {} is out of range (1..=64)",
                self.sync.copy_workers
            ));
        }
        self.sync.conflict_policies()?;
        for table in self.sync.delta_columns.keys() {
            pgsync_names::QualifiedName::parse(table).map_err(|e| {
                format!("sync.delta_columns: {table:?} is not a schema.table name ({e})")
            })?;
        }
        crate::ops::config::validate(&self.retry, &self.throttle, &self.heartbeat, &self.alerts)?;
        if self.sync.schema && !self.sync.full {
            return Err(
                "sync.full = false needs sync.schema = false too: a schema sync without the \
                        copy is not available (create the tables on the destination, or keep \
                        full = true)"
                    .into(),
            );
        }
        if let Some(f) = self.objects.unselected_filters().next() {
            return Err(format!(
                "objects.table {} is not selected by objects.include / objects.exclude: name a \
                 selected table (a partitioned table by its root)",
                f.name
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.objects.tables {
            if !seen.insert(&f.name) {
                return Err(format!(
                    "objects.table {} is given twice; merge the two entries",
                    f.name
                ));
            }
            if f.row_filter.as_deref().is_some_and(|w| w.trim().is_empty()) {
                return Err(format!(
                    "objects.table {}: row_filter is empty (leave it out to sync every row)",
                    f.name
                ));
            }
        }
        if self.objects.include.is_empty() {
            return Err(
                "objects.include is empty: nothing would be synced (e.g. include = [\"public.*\"])"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Task names end up in slot names, which PostgreSQL limits to lower-case letters, digits
/// and underscores, 63 bytes; the longest suffix pgsync adds is 8 bytes.
pub const MAX_NAME_LEN: usize = 40;

fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars {
        return Err(format!(
            "name = {name:?} is not usable: it prefixes replication slot names, so it must be 1 to \
             {MAX_NAME_LEN} characters of a-z, 0-9 and _ (e.g. name = \"shop\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "shop"
[source]
dsn = "host=127.0.0.1 port=5432 user=postgres dbname=shop"
[destination]
dsn = "postgres://postgres@127.0.0.1:5433/shop"
[sync]
two_way = false
schema = true
full = true
ddl = true
conflict_policy = "fail"       # fail | ignore | overwrite | last_write_wins
[objects]
include = ["public.*"]
exclude = []
"#;

    #[test]
    fn the_readme_example_parses() {
        let spec = TaskSpec::from_toml(GOOD, "shop.toml").unwrap();
        assert_eq!(spec.name, "shop");
        assert_eq!(spec.destination.describe(), "postgres@127.0.0.1:5433/shop");
        assert_eq!(spec.sync.copy_workers, 4);
        assert_eq!(spec.sync.catch_up_min_wal_mb, 16);
        assert!(spec.mapping.is_identity());
        let never = GOOD.replace("ddl = true", "ddl = true\ncatch_up_min_wal_mb = 0");
        let spec = TaskSpec::from_toml(&never, "shop.toml").unwrap();
        assert_eq!(spec.sync.catch_up_min_wal_mb, 0);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let text = GOOD.replace("two_way = false", "two_wya = false");
        let err = TaskSpec::from_toml(&text, "shop.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("two_wya"), "{err}");
        assert!(err.contains("shop.toml"), "{err}");
    }

    #[test]
    fn malformed_toml_reports_the_line() {
        let err = TaskSpec::from_toml("name = \"shop\"\n[source\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_names_and_values_say_what_is_accepted() {
        let err = TaskSpec::from_toml(
            &GOOD.replace("\"shop\"\n[source]", "\"Shop-1\"\n[source]"),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a-z, 0-9 and _"), "{err}");
        let err = TaskSpec::from_toml(
            &GOOD.replace("ddl = true", "ddl = true\ncopy_workers = 0"),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("copy_workers"), "{err}");
        let err = TaskSpec::from_toml(
            &GOOD.replace("include = [\"public.*\"]", "include = [\"orders\"]"),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("schema.table"), "{err}");
    }

    #[test]
    fn conflict_policies_parse_globally_and_per_kind() {
        let text = GOOD.replace(
            "conflict_policy = \"fail\"       # fail | ignore | overwrite | last_write_wins",
            "conflict_policy = \"last_write_wins\"\nloop_prevention = \"marker\"\n[sync.conflict_policy_per_kind]\ninsert_exists = \"ignore\"",
        );
        let spec = TaskSpec::from_toml(&text, "x").unwrap();
        assert_eq!(spec.sync.conflict_policy, Policy::LastWriteWins);
        assert_eq!(spec.sync.loop_prevention, LoopPrevention::Marker);
        let p = spec.sync.conflict_policies().unwrap();
        assert_eq!(p.for_kind(ConflictKind::InsertExists), Policy::Ignore);
        assert_eq!(
            p.for_kind(ConflictKind::UpdateMissing),
            Policy::LastWriteWins
        );
        let bad = GOOD.replace("conflict_policy = \"fail\"", "conflict_policy = \"newest\"");
        let err = TaskSpec::from_toml(&bad, "x").unwrap_err().to_string();
        assert!(err.contains("newest"), "{err}");
    }

    #[test]
    fn delta_columns_are_read_per_table() {
        let text = GOOD.replace(
            "conflict_policy = \"fail\"       # fail | ignore | overwrite | last_write_wins",
            "[sync.delta_columns]\n\"public.accounts\" = [\"balance\"]",
        );
        let spec = TaskSpec::from_toml(&text, "x").unwrap();
        assert_eq!(spec.sync.delta_columns["public.accounts"], ["balance"]);
        let bad = text.replace("\"public.accounts\"", "\"accounts\"");
        let err = TaskSpec::from_toml(&bad, "x").unwrap_err().to_string();
        assert!(err.contains("delta_columns"), "{err}");
    }

    #[test]
    fn table_filters_read_and_must_name_a_selected_table_once() {
        let filters = "\n[[objects.table]]\nname = \"public.orders\"\noperations = [\"insert\", \"update\"]\nrow_filter = \"region = 'eu'\"\n";
        let spec = TaskSpec::from_toml(&format!("{GOOD}{filters}"), "x").unwrap();
        let f = spec
            .objects
            .filter_of(&pgsync_names::QualifiedName::new("public", "orders"))
            .unwrap();
        assert_eq!(f.operations.publish(), "insert, update");
        assert_eq!(f.row_filter.as_deref(), Some("region = 'eu'"));
        let names = crate::TaskNames::new("shop", crate::Direction::Forward);
        assert_eq!(
            names.publication_for(f.operations),
            "pgsync_shop_fwd_ops_iu"
        );

        let other = GOOD.replace("include = [\"public.*\"]", "include = [\"app.*\"]");
        let err = TaskSpec::from_toml(&format!("{other}{filters}"), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not selected"), "{err}");
        let err = TaskSpec::from_toml(&format!("{GOOD}{filters}{filters}"), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let unknown = filters.replace("row_filter", "where");
        let err = TaskSpec::from_toml(&format!("{GOOD}{unknown}"), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("where"), "{err}");
    }

    #[test]
    fn a_missing_section_is_named() {
        let text = GOOD.replace(
            "[destination]\ndsn = \"postgres://postgres@127.0.0.1:5433/shop\"\n",
            "",
        );
        let err = TaskSpec::from_toml(&text, "x").unwrap_err().to_string();
        assert!(err.contains("destination"), "{err}");
    }

    #[test]
    fn ddl_unsupported_is_fail_unless_set_to_skip() {
        let spec = TaskSpec::from_toml(GOOD, "x").unwrap();
        assert_eq!(
            spec.sync.ddl_unsupported,
            pgsync_ddl::plan::Unsupported::Fail
        );
        let text = GOOD.replace("ddl = true", "ddl = true\nddl_unsupported = \"skip\"");
        let spec = TaskSpec::from_toml(&text, "x").unwrap();
        assert_eq!(
            spec.sync.ddl_unsupported,
            pgsync_ddl::plan::Unsupported::Skip
        );
        let bad = GOOD.replace("ddl = true", "ddl = true\nddl_unsupported = \"warn\"");
        let err = TaskSpec::from_toml(&bad, "x").unwrap_err().to_string();
        assert!(err.contains("warn"), "{err}");
    }
}
