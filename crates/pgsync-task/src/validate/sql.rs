//! The statements of a validation, built from the plan for one side: identifiers quoted
//! by `pgsync-names`, types as the server's own `format_type` spells them, and every value
//! a parameter (text, cast to the column's type on the server).
//!
//! The checksum of a row is `hashtextextended(ROW(c1, c2, ...)::text, 0)`: one output
//! call per row (a composite's text form is unambiguous: NULL is empty, an empty string is
//! `""`), then a 64-bit hash. A chunk's checksum is the `sum` of its rows' hashes, which
//! does not depend on the order rows are read in, so no sort is needed. A column whose
//! type differs between the sides is cast to text on both, so that the two texts are made
//! by the same rule.
//!
//! On the source, every read of rows also has the task's row filter of the table, if any
//! (`AND (<row_filter>)`, over the source's column names, as in the publication).

use std::fmt::Write as _;

use pgsync_names::sql::Ident;

use super::plan::TablePlan;
use super::session::Which;

/// Statements for one table on one side.
#[derive(Debug, Clone, Copy)]
pub(super) struct TableSql<'a> {
    pub(super) plan: &'a TablePlan,
    pub(super) w: Which,
}

impl<'a> TableSql<'a> {
    pub(super) fn new(plan: &'a TablePlan, w: Which) -> Self {
        Self { plan, w }
    }

    fn table(&self) -> String {
        self.plan.name(self.w).to_string()
    }

    fn col(&self, i: usize) -> String {
        format!("t.{}", Ident(self.plan.columns[i].name(self.w)))
    }

    fn ty(&self, i: usize) -> &str {
        self.plan.columns[i].ty(self.w)
    }

    /// The row's checksum expression over the compared columns.
    pub(super) fn row_hash(&self) -> String {
        let parts: Vec<String> = (0..self.plan.columns.len())
            .map(|i| {
                if self.plan.columns[i].same_type() {
                    self.col(i)
                } else {
                    format!("{}::text", self.col(i))
                }
            })
            .collect();
        format!("hashtextextended(ROW({})::text, 0)", parts.join(", "))
    }

    /// ` AND (<row filter>)` on the source of a filtered table (and on the destination
    /// when the plan says so), else nothing.
    fn row_filter(&self) -> String {
        match (&self.plan.source_filter, self.w) {
            (Some(f), Which::Source) => format!(" AND ({f})"),
            (Some(f), Which::Destination) if self.plan.filter_destination => {
                format!(" AND ({f})")
            }
            _ => String::new(),
        }
    }

    /// `t."k"` or `(t."a", t."b")`.
    fn key_tuple(&self) -> String {
        let cols: Vec<String> = self.plan.key.iter().map(|&i| self.col(i)).collect();
        if cols.len() == 1 {
            cols.join("")
        } else {
            format!("({})", cols.join(", "))
        }
    }

    /// Parameters `$first..` as a key value: `$1::text::int4` or `($1::text::int4, ...)`.
    fn key_params(&self, first: usize) -> String {
        let vals: Vec<String> = self
            .plan
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("${}::text::{}", first + n, self.ty(i)))
            .collect();
        if vals.len() == 1 {
            vals.join("")
        } else {
            format!("({})", vals.join(", "))
        }
    }

    /// `WHERE` of a key range: lower bound inclusive, upper bound exclusive, each present or
    /// not; the lower bound's parameters come first.
    fn range(&self, lo: bool, hi: bool) -> String {
        let k = self.plan.key.len();
        let mut conds = Vec::new();
        if lo {
            conds.push(format!("{} >= {}", self.key_tuple(), self.key_params(1)));
        }
        if hi {
            let first = if lo { k + 1 } else { 1 };
            conds.push(format!("{} < {}", self.key_tuple(), self.key_params(first)));
        }
        if conds.is_empty() {
            "true".into()
        } else {
            conds.join(" AND ")
        }
    }

    /// Row count and checksum of a key range (of the whole table without bounds).
    pub(super) fn sums(&self, lo: bool, hi: bool) -> String {
        format!(
            "SELECT count(*), coalesce(sum({}), 0)::text FROM {} AS t WHERE {}{}",
            self.row_hash(),
            self.table(),
            self.range(lo, hi),
            self.row_filter()
        )
    }

    /// Every key of a range (as text) with its row's checksum.
    pub(super) fn keys(&self, lo: bool, hi: bool) -> String {
        let mut sql = String::from("SELECT ");
        for &i in &self.plan.key {
            let _ = write!(sql, "{}::text, ", self.col(i));
        }
        let _ = write!(
            sql,
            "{} FROM {} AS t WHERE {}{}",
            self.row_hash(),
            self.table(),
            self.range(lo, hi),
            self.row_filter()
        );
        sql
    }

    /// `unnest($first::text[], ...) AS u(v0, ...)` over `n` arrays, plus a trailing
    /// `int8[]` of checksums (`u.h`) when `with_hash`.
    fn unnest(first: usize, n: usize, with_hash: bool) -> String {
        let mut args: Vec<String> = (0..n).map(|j| format!("${}::text[]", first + j)).collect();
        let mut names: Vec<String> = (0..n).map(|j| format!("v{j}")).collect();
        if with_hash {
            args.push(format!("${}::int8[]", first + n));
            names.push("h".into());
        }
        format!("unnest({}) AS u({})", args.join(", "), names.join(", "))
    }

    /// `t."k" = u.v<j>::T AND ...`, where the key's `n`-th column is `u.v<pos(n)>`.
    fn key_join(&self, pos: impl Fn(usize) -> usize) -> String {
        self.plan
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = u.v{}::{}", self.col(i), pos(n), self.ty(i)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Every compared column as text, then the checksum, of the rows whose keys are given
    /// as one `text[]` per key column (`$1..`).
    pub(super) fn rows_by_key(&self) -> String {
        let mut sql = String::from("SELECT ");
        for i in 0..self.plan.columns.len() {
            let _ = write!(sql, "{}::text, ", self.col(i));
        }
        let _ = write!(
            sql,
            "{} FROM {} AS t JOIN {} ON {}{}",
            self.row_hash(),
            self.table(),
            Self::unnest(1, self.plan.key.len(), false),
            self.key_join(|n| n),
            self.row_filter()
        );
        sql
    }

    /// Deletes rows by key (`$1..` one `text[]` per key column), each only if its checksum
    /// is still the given one (the last array), so that a row the task changed since it was
    /// compared is left alone.
    pub(super) fn delete(&self) -> String {
        format!(
            "DELETE FROM {} AS t USING {} WHERE {} AND {} = u.h",
            self.table(),
            Self::unnest(1, self.plan.key.len(), true),
            self.key_join(|n| n),
            self.row_hash()
        )
    }

    /// Sets every non-key column from one `text[]` per compared column (`$1..`, key
    /// columns included), each row only if its checksum is still the given one. `None`
    /// when every column is a key column (a row that exists then cannot differ).
    pub(super) fn update(&self) -> Option<String> {
        let sets: Vec<String> = (0..self.plan.columns.len())
            .filter(|i| !self.plan.key.contains(i))
            .map(|i| {
                format!(
                    "{} = u.v{i}::{}",
                    Ident(self.plan.columns[i].name(self.w)),
                    self.ty(i)
                )
            })
            .collect();
        if sets.is_empty() {
            return None;
        }
        Some(format!(
            "UPDATE {} AS t SET {} FROM {} WHERE {} AND {} = u.h",
            self.table(),
            sets.join(", "),
            Self::unnest(1, self.plan.columns.len(), true),
            self.key_join(|n| self.plan.key[n]),
            self.row_hash()
        ))
    }

    /// Inserts rows from one `text[]` per compared column (`$1..`); a row that exists by
    /// now (the task inserted it meanwhile) is left as it is.
    pub(super) fn insert(&self) -> String {
        let names: Vec<String> = self
            .plan
            .columns
            .iter()
            .map(|c| Ident(c.name(self.w)).to_string())
            .collect();
        let vals: Vec<String> = (0..self.plan.columns.len())
            .map(|i| format!("u.v{i}::{}", self.ty(i)))
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING",
            self.table(),
            names.join(", "),
            vals.join(", "),
            Self::unnest(1, self.plan.columns.len(), false)
        )
    }

    /// The table's size in blocks (partitions summed).
    pub(super) fn blocks() -> &'static str {
        "SELECT (coalesce((SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree($1::text::regclass)),
                          pg_relation_size($1::text::regclass))
                 / current_setting('block_size')::int)::int8"
    }

    /// Rows in a sample of `percent` of the table's blocks (`REPEATABLE`, so that
    /// [`boundaries`](Self::boundaries) sees the same blocks).
    pub(super) fn sample_count(&self, percent: f64) -> String {
        format!(
            "SELECT count(*) FROM {} AS t TABLESAMPLE SYSTEM ({percent}) REPEATABLE (7)",
            self.table()
        )
    }

    /// The first key (as text) of each of `$1` equal parts of the sampled keys, in key
    /// order: the chunk boundaries.
    pub(super) fn boundaries(&self, percent: f64) -> String {
        let order: Vec<String> = self.plan.key.iter().map(|&i| self.col(i)).collect();
        let order = order.join(", ");
        let mut sql = format!(
            "SELECT DISTINCT ON (pgsync_tile) ntile($1::int) OVER (ORDER BY {order}) AS pgsync_tile"
        );
        for &i in &self.plan.key {
            let _ = write!(sql, ", {}::text", self.col(i));
        }
        let _ = write!(
            sql,
            " FROM {} AS t TABLESAMPLE SYSTEM ({percent}) REPEATABLE (7) ORDER BY pgsync_tile, {order}",
            self.table()
        );
        sql
    }
}

#[cfg(test)]
mod tests {
    use pgsync_names::QualifiedName;

    use super::*;
    use crate::validate::plan::Column;

    fn col(a: &str, b: &str, ta: &str, tb: &str) -> Column {
        Column {
            names: [a.into(), b.into()],
            types: [ta.into(), tb.into()],
        }
    }

    fn plan() -> TablePlan {
        TablePlan {
            names: [
                QualifiedName::new("public", "Orders"),
                QualifiedName::new("shop", "orders"),
            ],
            columns: vec![
                col("id", "id", "integer", "integer"),
                col("Region", "region", "text", "text"),
                col("total", "amount", "numeric(10,2)", "numeric"),
            ],
            key: vec![0, 1],
            only_source: vec![],
            only_destination: vec![],
            source_filter: None,
            filter_destination: false,
        }
    }

    #[test]
    fn a_row_filter_narrows_the_source_reads_only() {
        let mut p = plan();
        p.source_filter = Some("\"Region\" = 'eu'".into());
        let src = TableSql::new(&p, Which::Source);
        let dst = TableSql::new(&p, Which::Destination);
        for sql in [
            src.sums(true, true),
            src.keys(false, false),
            src.rows_by_key(),
        ] {
            assert!(sql.ends_with(" AND (\"Region\" = 'eu')"), "{sql}");
        }
        for sql in [
            dst.sums(true, true),
            dst.keys(false, false),
            dst.rows_by_key(),
        ] {
            assert!(!sql.contains("'eu'"), "{sql}");
        }
        // Two-way: on both sides.
        p.filter_destination = true;
        let dst = TableSql::new(&p, Which::Destination);
        assert!(dst.sums(false, false).ends_with(" AND (\"Region\" = 'eu')"));
    }

    #[test]
    fn the_checksum_casts_only_columns_whose_types_differ() {
        let p = plan();
        assert_eq!(
            TableSql::new(&p, Which::Source).row_hash(),
            r#"hashtextextended(ROW(t."id", t."Region", t."total"::text)::text, 0)"#
        );
        assert_eq!(
            TableSql::new(&p, Which::Destination).row_hash(),
            r#"hashtextextended(ROW(t."id", t."region", t."amount"::text)::text, 0)"#
        );
    }

    #[test]
    fn ranges_compare_the_whole_key_with_typed_parameters() {
        let p = plan();
        let s = TableSql::new(&p, Which::Destination);
        let sql = s.sums(true, true);
        assert!(sql.contains(r#"FROM "shop"."orders" AS t"#), "{sql}");
        assert!(
            sql.contains(r#"(t."id", t."region") >= ($1::text::integer, $2::text::text) AND (t."id", t."region") < ($3::text::integer, $4::text::text)"#),
            "{sql}"
        );
        assert!(s.sums(false, true).contains(r#"< ($1::text::integer"#));
        assert!(s.sums(false, false).ends_with("WHERE true"));
    }

    #[test]
    fn repair_statements_match_keys_and_the_checksum_seen() {
        let p = plan();
        let s = TableSql::new(&p, Which::Destination);
        let upd = s.update().unwrap();
        assert!(
            upd.starts_with(r#"UPDATE "shop"."orders" AS t SET "amount" = u.v2::numeric FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS u(v0, v1, v2, h) WHERE t."id" = u.v0::integer AND t."region" = u.v1::text AND hashtextextended"#),
            "{upd}"
        );
        assert!(upd.ends_with("= u.h"), "{upd}");
        let del = s.delete();
        assert!(
            del.contains(r#"unnest($1::text[], $2::text[], $3::int8[]) AS u(v0, v1, h)"#),
            "{del}"
        );
        let ins = s.insert();
        assert!(
            ins.starts_with(r#"INSERT INTO "shop"."orders" ("id", "region", "amount") SELECT u.v0::integer, u.v1::text, u.v2::numeric FROM"#),
            "{ins}"
        );
        assert!(ins.ends_with("ON CONFLICT DO NOTHING"));
    }

    #[test]
    fn a_table_of_key_columns_only_has_no_update() {
        let mut p = plan();
        p.columns.truncate(2);
        assert!(TableSql::new(&p, Which::Destination).update().is_none());
    }

    #[test]
    fn hostile_names_stay_identifiers() {
        let mut p = plan();
        p.columns[1].names[1] = r#"x"; DROP TABLE y; --"#.into();
        let sql = TableSql::new(&p, Which::Destination).keys(true, false);
        assert!(sql.contains(r#"t."x""; DROP TABLE y; --"::text"#), "{sql}");
    }
}
