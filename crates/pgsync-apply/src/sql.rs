//! The statements the applier runs, one per *shape*: (table, operation, which columns are
//! written, how the row is found). Shapes repeat endlessly in a stream, so each is built
//! and prepared once and then only bound and executed.
//!
//! Finding the row:
//! * by key — the replica identity key (primary key or `REPLICA IDENTITY USING INDEX`):
//!   `WHERE "k" = $n`, using the index;
//! * by whole row — `REPLICA IDENTITY FULL` (tables without a key): every sent column of
//!   the old row must match, compared through each type's text form (so types without an
//!   equality operator, like json, still match), and exactly one physical row is touched
//!   (`ctid = (SELECT ctid ... LIMIT 1)`), so duplicate rows stay duplicates, never
//!   collapse or multiply.

use std::fmt::Write as _;

use pgsync_names::QualifiedName;
use pgsync_names::sql::Ident;

/// How an UPDATE or DELETE finds its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Match {
    /// By the key columns.
    Key,
    /// By every sent column of the old row (REPLICA IDENTITY FULL).
    FullRow,
}

/// A destination column as statements need it.
#[derive(Debug, Clone)]
pub(crate) struct Col {
    /// Destination column name.
    pub(crate) name: String,
    /// `format_type` of the column's type (for whole-row matching).
    pub(crate) type_name: String,
}

/// `INSERT INTO t (c...) OVERRIDING SYSTEM VALUE VALUES ($1...)`: the source's value of a
/// `GENERATED ALWAYS AS IDENTITY` column is written as well (a no-op for other tables).
pub(crate) fn insert(table: &QualifiedName, cols: &[&Col]) -> String {
    let mut sql = format!("INSERT INTO {table} (");
    push_list(&mut sql, cols.iter().map(|c| Ident(&c.name).to_string()));
    sql.push_str(") OVERRIDING SYSTEM VALUE VALUES (");
    push_list(&mut sql, (1..=cols.len()).map(|i| format!("${i}")));
    sql.push(')');
    sql
}

/// `UPDATE t SET c = $1 ... WHERE <match>`; SET parameters come first, then WHERE ones.
pub(crate) fn update(table: &QualifiedName, set: &[&Col], whr: &[&Col], how: Match) -> String {
    let mut sql = format!("UPDATE {table} SET ");
    push_list(
        &mut sql,
        set.iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ${}", Ident(&c.name), i + 1)),
    );
    push_where(&mut sql, table, whr, how, set.len());
    sql
}

/// `DELETE FROM t WHERE <match>`.
pub(crate) fn delete(table: &QualifiedName, whr: &[&Col], how: Match) -> String {
    let mut sql = format!("DELETE FROM {table}");
    push_where(&mut sql, table, whr, how, 0);
    sql
}

/// `TRUNCATE ONLY a, b [RESTART IDENTITY]`: pgoutput lists every truncated table itself,
/// including those reached by CASCADE on the source.
pub(crate) fn truncate(tables: &[QualifiedName], restart_identity: bool) -> String {
    let mut sql = String::from("TRUNCATE ONLY ");
    push_list(&mut sql, tables.iter().map(ToString::to_string));
    if restart_identity {
        sql.push_str(" RESTART IDENTITY");
    }
    sql
}

/// `COPY t (c...) FROM STDIN [(FORMAT binary)]` for runs of inserts.
pub(crate) fn copy_in(table: &QualifiedName, cols: &[&Col], binary: bool) -> String {
    let mut sql = format!("COPY {table} (");
    push_list(&mut sql, cols.iter().map(|c| Ident(&c.name).to_string()));
    sql.push_str(") FROM STDIN");
    if binary {
        sql.push_str(" (FORMAT binary)");
    }
    sql
}

/// Appends the WHERE clause of `how` over `whr`, parameters numbered from `offset + 1`.
pub(crate) fn push_where(
    sql: &mut String,
    table: &QualifiedName,
    whr: &[&Col],
    how: Match,
    offset: usize,
) {
    let conds: Vec<String> = whr
        .iter()
        .enumerate()
        .map(|(i, c)| match how {
            Match::Key => format!("{} = ${}", Ident(&c.name), offset + i + 1),
            Match::FullRow => format!(
                "{}::text IS NOT DISTINCT FROM (${}::{})::text",
                Ident(&c.name),
                offset + i + 1,
                c.type_name
            ),
        })
        .collect();
    let conds = if conds.is_empty() {
        "true".to_owned()
    } else {
        conds.join(" AND ")
    };
    match how {
        Match::Key => {
            let _ = write!(sql, " WHERE {conds}");
        }
        Match::FullRow => {
            let _ = write!(
                sql,
                " WHERE ctid = (SELECT ctid FROM {table} WHERE {conds} LIMIT 1)"
            );
        }
    }
}

/// Appends the last-write-wins check of the fast path to an UPDATE or DELETE: the row
/// must not have been written by the destination's own applications (origin 0) after the
/// commit time in parameter `$n` (PostgreSQL microseconds); on a tie the higher node id
/// wins. A row that fails it reports no row, and the group goes to the careful path. Rows
/// without commit data (frozen, written before `track_commit_timestamp`, or in this very
/// transaction) pass.
pub(crate) fn push_stamp_check(
    sql: &mut String,
    table: &QualifiedName,
    local_wins_ties: bool,
    n: usize,
) {
    let cmp = if local_wins_ties { "<" } else { "<=" };
    let _ = write!(
        sql,
        " AND coalesce((SELECT w.o <> 0 OR w.ts {cmp} TIMESTAMPTZ '2000-01-01 00:00:00+00' + ${n}::bigint * INTERVAL '1 microsecond' FROM pg_xact_commit_timestamp_origin({table}.xmin) AS w(ts, o)), true)"
    );
}

fn push_list(sql: &mut String, items: impl Iterator<Item = String>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> Col {
        Col {
            name: name.into(),
            type_name: ty.into(),
        }
    }

    #[test]
    fn statements_quote_every_name_and_number_parameters_in_order() {
        let t = QualifiedName::new("app", "Order Items");
        let (a, b, k) = (
            col("a", "integer"),
            col("B\"x", "text"),
            col("id", "bigint"),
        );
        assert_eq!(
            insert(&t, &[&a, &b]),
            r#"INSERT INTO "app"."Order Items" ("a", "B""x") OVERRIDING SYSTEM VALUE VALUES ($1, $2)"#
        );
        assert_eq!(
            update(&t, &[&a, &b], &[&k], Match::Key),
            r#"UPDATE "app"."Order Items" SET "a" = $1, "B""x" = $2 WHERE "id" = $3"#
        );
        assert_eq!(
            delete(&t, &[&k], Match::Key),
            r#"DELETE FROM "app"."Order Items" WHERE "id" = $1"#
        );
        assert_eq!(
            truncate(&[t.clone(), QualifiedName::new("s", "u")], true),
            r#"TRUNCATE ONLY "app"."Order Items", "s"."u" RESTART IDENTITY"#
        );
    }

    #[test]
    fn the_stamp_check_lets_only_rows_not_written_later_here_through() {
        let t = QualifiedName::new("s", "t");
        let k = col("id", "bigint");
        let mut text = update(&t, &[&k], &[&k], Match::Key);
        push_stamp_check(&mut text, &t, true, 3);
        assert_eq!(
            text,
            r#"UPDATE "s"."t" SET "id" = $1 WHERE "id" = $2 AND coalesce((SELECT w.o <> 0 OR w.ts < TIMESTAMPTZ '2000-01-01 00:00:00+00' + $3::bigint * INTERVAL '1 microsecond' FROM pg_xact_commit_timestamp_origin("s"."t".xmin) AS w(ts, o)), true)"#
        );
    }

    #[test]
    fn whole_row_matching_touches_one_physical_row() {
        let t = QualifiedName::new("s", "t");
        let (a, j) = (col("a", "character(3)"), col("j", "json"));
        assert_eq!(
            delete(&t, &[&a, &j], Match::FullRow),
            r#"DELETE FROM "s"."t" WHERE ctid = (SELECT ctid FROM "s"."t" WHERE "a"::text IS NOT DISTINCT FROM ($1::character(3))::text AND "j"::text IS NOT DISTINCT FROM ($2::json)::text LIMIT 1)"#
        );
    }
}
