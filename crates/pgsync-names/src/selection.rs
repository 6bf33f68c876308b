//! Which tables a task covers: include and exclude patterns over `schema.table`.
//!
//! A pattern is `schema.table` where either part may use `*` (any run of characters) and
//! `?` (one character); `public.*` selects a whole schema, including tables created later.
//! A table is selected when some include matches it and no exclude does.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::qualified::split_parts;
use crate::{NameError, QualifiedName, TableFilter};

/// One `schema.table` glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    schema: String,
    table: String,
    text: String,
}

impl Pattern {
    /// Parses `schema.table` (quoted parts allowed; `*` and `?` are wildcards).
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let parts = split_parts(text)?;
        match <[String; 2]>::try_from(parts) {
            Ok([schema, table]) => Ok(Self {
                schema,
                table,
                text: text.trim().to_owned(),
            }),
            Err(_) => Err(NameError::Malformed {
                text: text.into(),
                reason: "expected schema.table or schema.*",
            }),
        }
    }

    /// Whether the pattern matches this table.
    pub fn matches(&self, name: &QualifiedName) -> bool {
        glob(&self.schema, &name.schema) && glob(&self.table, &name.name)
    }

    /// Whether it selects every table of the schemas it matches (`schema.*`), which makes
    /// tables created there later part of the selection.
    pub fn is_whole_schema(&self) -> bool {
        self.table == "*"
    }

    /// The one table this pattern names, when it has no wildcard.
    pub fn literal(&self) -> Option<QualifiedName> {
        let wild = |s: &str| s.contains(['*', '?']);
        (!wild(&self.schema) && !wild(&self.table))
            .then(|| QualifiedName::new(&self.schema, &self.table))
    }

    /// Whether it can match tables in `schema`.
    pub fn matches_schema(&self, schema: &str) -> bool {
        glob(&self.schema, schema)
    }

    /// The schema part, unquoted, wildcards as written (`*`, `?`): for code that has to
    /// evaluate the pattern elsewhere (e.g. in SQL, as a `LIKE` pattern).
    pub fn schema_glob(&self) -> &str {
        &self.schema
    }

    /// The table part, unquoted, wildcards as written.
    pub fn table_glob(&self) -> &str {
        &self.table
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Include and exclude patterns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Tables to take.
    pub include: Vec<Pattern>,
    /// Tables to leave out even when included.
    #[serde(default)]
    pub exclude: Vec<Pattern>,
    /// Per-table filters (`[[objects.table]]`): operations and row filter of selected
    /// tables named exactly.
    #[serde(default, rename = "table", skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableFilter>,
}

impl Default for Selection {
    /// Everything in schema `public`.
    fn default() -> Self {
        Self {
            include: vec![Pattern::parse("public.*").expect("valid")],
            exclude: Vec::new(),
            tables: Vec::new(),
        }
    }
}

impl Selection {
    /// Parses lists of pattern strings.
    pub fn parse<'a>(
        include: impl IntoIterator<Item = &'a str>,
        exclude: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, NameError> {
        Ok(Self {
            include: include
                .into_iter()
                .map(Pattern::parse)
                .collect::<Result<_, _>>()?,
            exclude: exclude
                .into_iter()
                .map(Pattern::parse)
                .collect::<Result<_, _>>()?,
            tables: Vec::new(),
        })
    }

    /// The filter of a table (`None`: everything of it is synced). A partition has the
    /// filter of its root: pass the root's name.
    pub fn filter_of(&self, name: &QualifiedName) -> Option<&TableFilter> {
        self.tables
            .iter()
            .find(|f| &f.name == name && !f.is_everything())
    }

    /// Per-table filters that name a table the patterns do not select (a spelling
    /// mistake, or an exclude that wins): the task refuses them.
    pub fn unselected_filters(&self) -> impl Iterator<Item = &TableFilter> {
        self.tables.iter().filter(|f| !self.contains(&f.name))
    }

    /// Whether the table is selected.
    pub fn contains(&self, name: &QualifiedName) -> bool {
        self.include.iter().any(|p| p.matches(name))
            && !self.exclude.iter().any(|p| p.matches(name))
    }

    /// Whether a table created later in `schema` joins the selection (a whole-schema
    /// include matches the schema; excludes still apply per table).
    pub fn follows_new_tables_in(&self, schema: &str) -> bool {
        self.include
            .iter()
            .any(|p| p.is_whole_schema() && p.matches_schema(schema))
    }

    /// Keeps the selected names, in their order.
    pub fn filter<'a>(
        &'a self,
        names: impl IntoIterator<Item = &'a QualifiedName>,
    ) -> Vec<&'a QualifiedName> {
        names.into_iter().filter(|n| self.contains(n)).collect()
    }
}

/// `*` and `?` glob over characters; iterative with one backtrack point, so linear-ish
/// and never recursive.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str, t: &str) -> QualifiedName {
        QualifiedName::new(s, t)
    }

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob("*", ""));
        assert!(glob("order*", "orders_2024"));
        assert!(glob("o?d*s", "orders"));
        assert!(!glob("order?", "order"));
        assert!(glob("*_log", "a_b_log"));
        assert!(!glob("*_log", "a_b_logs"));
    }

    #[test]
    fn includes_and_excludes_combine() {
        let s = Selection::parse(["public.*", "app.orders"], ["public.tmp_*"]).unwrap();
        assert!(s.contains(&q("public", "accounts")));
        assert!(!s.contains(&q("public", "tmp_1")));
        assert!(s.contains(&q("app", "orders")));
        assert!(!s.contains(&q("app", "items")));
        assert!(s.follows_new_tables_in("public"));
        assert!(!s.follows_new_tables_in("app"));
    }

    #[test]
    fn quoted_patterns_keep_case() {
        let s = Selection::parse([r#""Sales".*"#], []).unwrap();
        assert!(s.contains(&q("Sales", "X")));
        assert!(!s.contains(&q("sales", "x")));
    }

    #[test]
    fn a_bad_pattern_is_reported_with_its_text() {
        let err = Selection::parse(["orders"], []).unwrap_err();
        assert!(err.to_string().contains("\"orders\""), "{err}");
    }
}
