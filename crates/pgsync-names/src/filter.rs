//! Per-table filters: which DML operations travel, and which rows (a SQL `WHERE`).
//!
//! Written in the task file as
//!
//! ```toml
//! [[objects.table]]
//! name = "public.orders"
//! operations = ["insert", "update"]   # default: all four
//! row_filter = "region = 'eu'"        # default: every row
//! ```
//!
//! Both are carried out by the source server: the operations become the `publish`
//! parameter of a publication (one publication per distinct operation set), the row
//! filter a publication row filter (`FOR TABLE t WHERE (..)`, PostgreSQL 15+) and the
//! `WHERE` of the full copy. This crate only holds and checks the configuration; the
//! task turns it into publications.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::QualifiedName;

/// One DML operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// INSERT (and the rows of COPY).
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// TRUNCATE.
    Truncate,
}

impl Operation {
    /// All four, in publication order.
    pub const ALL: [Operation; 4] = [Self::Insert, Self::Update, Self::Delete, Self::Truncate];

    fn bit(self) -> u8 {
        match self {
            Self::Insert => 1,
            Self::Update => 2,
            Self::Delete => 4,
            Self::Truncate => 8,
        }
    }

    /// The word PostgreSQL's `publish` parameter uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Truncate => "truncate",
        }
    }
}

/// A non-empty set of operations.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operations(u8);

impl Operations {
    /// Every operation.
    pub const fn all() -> Self {
        Self(15)
    }

    /// The set of these operations; `None` when empty.
    pub fn of(ops: impl IntoIterator<Item = Operation>) -> Option<Self> {
        let bits = ops.into_iter().fold(0, |b, o| b | o.bit());
        (bits != 0).then_some(Self(bits))
    }

    /// Every non-empty set, for code that must find all objects named after one.
    pub fn every_set() -> impl Iterator<Item = Operations> {
        (1..=15).map(Self)
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Operation) -> bool {
        self.0 & op.bit() != 0
    }

    /// Whether every operation is in the set.
    pub fn is_all(self) -> bool {
        self == Self::all()
    }

    /// The operations, in publication order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |o| self.contains(*o))
    }

    /// The value of a publication's `publish` parameter: `insert, update`.
    pub fn publish(self) -> String {
        self.iter()
            .map(Operation::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A short code for object names: the initials in publication order (`iu`).
    pub fn code(self) -> String {
        self.iter().map(|o| &o.as_str()[..1]).collect()
    }
}

impl Default for Operations {
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Debug for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Display for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.publish())
    }
}

impl Serialize for Operations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Operations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ops = Vec::<Operation>::deserialize(d)?;
        Self::of(ops).ok_or_else(|| {
            serde::de::Error::custom(
                "operations is empty: list at least one of \"insert\", \"update\", \"delete\", \
                 \"truncate\" (or leave the table out of the selection)",
            )
        })
    }
}

/// What is synced of one table (`[[objects.table]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFilter {
    /// The source table, `schema.table`; the root for a partitioned table.
    #[serde(deserialize_with = "qualified")]
    pub name: QualifiedName,
    /// Which operations are synced (default: all).
    #[serde(default)]
    pub operations: Operations,
    /// Only rows for which this SQL condition (over the source's columns) is true.
    #[serde(default)]
    pub row_filter: Option<String>,
}

impl TableFilter {
    /// Everything of `name`.
    pub fn new(name: QualifiedName) -> Self {
        Self {
            name,
            operations: Operations::all(),
            row_filter: None,
        }
    }

    /// Whether it filters nothing.
    pub fn is_everything(&self) -> bool {
        self.operations.is_all() && self.row_filter.is_none()
    }
}

fn qualified<'de, D: Deserializer<'de>>(d: D) -> Result<QualifiedName, D::Error> {
    let text = String::deserialize(d)?;
    QualifiedName::parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_sets_spell_the_publish_parameter_and_a_name_code() {
        let iu = Operations::of([Operation::Update, Operation::Insert]).unwrap();
        assert_eq!(iu.publish(), "insert, update");
        assert_eq!(iu.code(), "iu");
        assert!(!iu.is_all());
        assert_eq!(Operations::all().code(), "iudt");
        assert_eq!(Operations::of([]), None);
        assert_eq!(Operations::every_set().count(), 15);
    }

    #[test]
    fn a_table_filter_reads_from_toml_and_rejects_empty_operations() {
        let f: TableFilter = toml::from_str(
            "name = 'public.\"Orders\"'\noperations = [\"insert\", \"delete\"]\nrow_filter = \"region = 'eu'\"",
        )
        .unwrap();
        assert_eq!(f.name, QualifiedName::new("public", "Orders"));
        assert_eq!(f.operations.publish(), "insert, delete");
        assert_eq!(f.row_filter.as_deref(), Some("region = 'eu'"));
        let f: TableFilter = toml::from_str("name = 'public.t'").unwrap();
        assert!(f.is_everything());
        let err = toml::from_str::<TableFilter>("name = 'public.t'\noperations = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("operations is empty"), "{err}");
        let err = toml::from_str::<TableFilter>("name = 'public.t'\noperations = [\"upsert\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upsert"), "{err}");
        let err = toml::from_str::<TableFilter>("name = 'public.t'\nfilter = 'x'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("filter"), "{err}");
    }
}
