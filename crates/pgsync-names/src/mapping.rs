//! How source names become destination names.
//!
//! Resolution order for a table: an explicit table rename; otherwise the schema rename (or
//! the source schema) and the source table name. The case policy then applies to every
//! part that was not given explicitly, so `lower` turns `"Orders"` into `orders` but an
//! explicit rename to `"MyOrders"` stays as written. Columns: an explicit column rename, or
//! the source name under the case policy.
//!
//! The reverse task needs the inverse. A case policy alone cannot be inverted (both `A`
//! and `a` lower to `a`), so [`Mapping::inverse_for`] builds an explicit inverse from the
//! selected tables and their columns, and refuses mappings that merge two names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{NameError, QualifiedName};

/// What happens to the case of destination names that were not renamed explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CasePolicy {
    /// As on the source.
    #[default]
    Keep,
    /// Lower case.
    Lower,
    /// Upper case.
    Upper,
}

impl CasePolicy {
    fn apply(self, name: &str) -> String {
        match self {
            Self::Keep => name.to_owned(),
            Self::Lower => name.to_lowercase(),
            Self::Upper => name.to_uppercase(),
        }
    }
}

/// Source-to-destination renames.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mapping {
    /// Schema renames: source schema -> destination schema.
    #[serde(default)]
    pub schemas: BTreeMap<String, String>,
    /// Table renames: source table -> destination table (schema included).
    #[serde(default, with = "qualified_map")]
    pub tables: BTreeMap<QualifiedName, QualifiedName>,
    /// Column renames per source table: source column -> destination column.
    #[serde(default, with = "column_map")]
    pub columns: BTreeMap<QualifiedName, BTreeMap<String, String>>,
    /// Case of names not renamed explicitly.
    #[serde(default)]
    pub case: CasePolicy,
}

impl Mapping {
    /// No renames, source case kept.
    pub fn identity() -> Self {
        Self::default()
    }

    /// Whether every name maps to itself.
    pub fn is_identity(&self) -> bool {
        self.case == CasePolicy::Keep
            && self.schemas.iter().all(|(a, b)| a == b)
            && self.tables.iter().all(|(a, b)| a == b)
            && self.columns.values().all(|m| m.iter().all(|(a, b)| a == b))
    }

    /// The destination schema of a source schema.
    pub fn schema(&self, source: &str) -> String {
        match self.schemas.get(source) {
            Some(s) => s.clone(),
            None => self.case.apply(source),
        }
    }

    /// The destination name of a source table.
    pub fn table(&self, source: &QualifiedName) -> QualifiedName {
        match self.tables.get(source) {
            Some(t) => t.clone(),
            None => QualifiedName::new(self.schema(&source.schema), self.case.apply(&source.name)),
        }
    }

    /// The destination name of a column of a source table.
    pub fn column(&self, table: &QualifiedName, column: &str) -> String {
        match self.columns.get(table).and_then(|m| m.get(column)) {
            Some(c) => c.clone(),
            None => self.case.apply(column),
        }
    }

    /// The inverse mapping over these source tables and their columns, as explicit renames.
    /// Fails when two tables (or two columns of a table) map to the same destination name.
    pub fn inverse_for<'a>(
        &self,
        tables: impl IntoIterator<Item = (&'a QualifiedName, &'a [String])>,
    ) -> Result<Mapping, NameError> {
        let mut inv = Mapping::identity();
        for (src, columns) in tables {
            let dst = self.table(src);
            if let Some(other) = inv.tables.insert(dst.clone(), src.clone())
                && &other != src
            {
                return Err(NameError::Collision {
                    first: other.to_string(),
                    second: src.to_string(),
                    target: dst.to_string(),
                });
            }
            inv.schemas.insert(dst.schema.clone(), src.schema.clone());
            let cols = inv.columns.entry(dst.clone()).or_default();
            for c in columns {
                let d = self.column(src, c);
                if let Some(other) = cols.insert(d.clone(), c.clone())
                    && &other != c
                {
                    return Err(NameError::Collision {
                        first: format!("{src}.{other}"),
                        second: format!("{src}.{c}"),
                        target: format!("{dst}.{d}"),
                    });
                }
            }
        }
        Ok(inv)
    }
}

/// TOML keys must be strings: tables are written as `"schema.table" = "schema.table"`.
mod qualified_map {
    use super::*;
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<QualifiedName, QualifiedName>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let as_text: BTreeMap<String, String> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        as_text.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<QualifiedName, QualifiedName>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    QualifiedName::parse(&k).map_err(D::Error::custom)?,
                    QualifiedName::parse(&v).map_err(D::Error::custom)?,
                ))
            })
            .collect()
    }
}

/// Columns are written as `"schema.table" = { old = "new" }`.
mod column_map {
    use super::*;
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    type Columns = BTreeMap<QualifiedName, BTreeMap<String, String>>;

    pub(super) fn serialize<S: Serializer>(map: &Columns, s: S) -> Result<S::Ok, S::Error> {
        let as_text: BTreeMap<String, &BTreeMap<String, String>> =
            map.iter().map(|(k, v)| (k.to_string(), v)).collect();
        as_text.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Columns, D::Error> {
        BTreeMap::<String, BTreeMap<String, String>>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((QualifiedName::parse(&k).map_err(D::Error::custom)?, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str, t: &str) -> QualifiedName {
        QualifiedName::new(s, t)
    }

    fn sample() -> Mapping {
        let mut m = Mapping {
            case: CasePolicy::Lower,
            ..Mapping::identity()
        };
        m.schemas.insert("app".into(), "app_copy".into());
        m.tables.insert(q("app", "Orders"), q("sales", "MyOrders"));
        m.columns
            .entry(q("app", "Orders"))
            .or_default()
            .insert("Total".into(), "amount".into());
        m
    }

    #[test]
    fn explicit_renames_win_and_the_case_policy_covers_the_rest() {
        let m = sample();
        assert_eq!(m.table(&q("app", "Orders")), q("sales", "MyOrders"));
        assert_eq!(m.table(&q("app", "Items")), q("app_copy", "items"));
        assert_eq!(m.table(&q("Public", "T")), q("public", "t"));
        assert_eq!(m.column(&q("app", "Orders"), "Total"), "amount");
        assert_eq!(m.column(&q("app", "Orders"), "Qty"), "qty");
        assert!(!m.is_identity());
        assert!(Mapping::identity().is_identity());
    }

    #[test]
    fn the_inverse_maps_every_destination_name_back() {
        let m = sample();
        let cols = vec!["Total".to_string(), "Qty".to_string()];
        let tables = [
            (q("app", "Orders"), cols.clone()),
            (q("app", "Items"), cols.clone()),
        ];
        let inv = m
            .inverse_for(tables.iter().map(|(t, c)| (t, c.as_slice())))
            .unwrap();
        for (src, cols) in &tables {
            let dst = m.table(src);
            assert_eq!(&inv.table(&dst), src);
            for c in cols {
                assert_eq!(&inv.column(&dst, &m.column(src, c)), c);
            }
        }
    }

    #[test]
    fn a_mapping_that_merges_two_tables_has_no_inverse() {
        let m = Mapping {
            case: CasePolicy::Lower,
            ..Mapping::identity()
        };
        let none: Vec<String> = Vec::new();
        let tables = [q("s", "T"), q("s", "t")];
        let err = m
            .inverse_for(tables.iter().map(|t| (t, none.as_slice())))
            .unwrap_err();
        assert!(matches!(err, NameError::Collision { .. }), "{err}");
    }
}
