//! Guarded statements: the fast path's UPDATE and DELETE when rows written later on the
//! destination must be kept (`update_newer_local` / `delete_newer_local` resolved by
//! `last_write_wins` or `ignore`), so that the commonest two-way conflict — both sides
//! changing the same hot row — costs one statement instead of a careful replay.
//!
//! ```text
//!  WITH target AS (SELECT the row, its image, its last writer, ok = not written here
//!                  after the change  FROM t WHERE <key> FOR UPDATE)
//!     , w      AS (UPDATE / DELETE the target row WHERE ok)
//!     , log    AS (INSERT INTO pgsync.conflicts ... keep_local  WHERE NOT ok)
//!  SELECT 1 FROM target [WHERE ok OR the key stays]
//! ```
//!
//! The statement reports one row whenever the row exists, applied or kept (and logged):
//! only a missing row — or a kept row whose update would move its key, which the careful
//! path decides half by half — reports none and sends the group to the careful path.
//! Parameters: the SET values, the WHERE values, the change's commit time (PostgreSQL
//! microseconds, bigint) and its source commit LSN (bigint).

use std::fmt::Write as _;

use pgsync_names::QualifiedName;
use pgsync_names::sql::{Ident, Literal};

use crate::sql::{self, Col, Match};

/// The constants a guarded statement writes into the conflict log.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) origin: String,
    pub(crate) local_node: String,
    pub(crate) remote_node: String,
    pub(crate) update_policy: Option<&'static str>,
    pub(crate) delete_policy: Option<&'static str>,
    pub(crate) local_wins_ties: bool,
}

/// The guarded UPDATE (`delete: false`) or DELETE; `None` when the kind's policy does
/// not simply keep the local row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn statement(
    g: &Guard,
    table: &QualifiedName,
    delete: bool,
    set: &[&Col],
    whr: &[&Col],
    how: Match,
    key_moves: Option<String>,
) -> Option<String> {
    let (kind, policy) = if delete {
        ("delete_newer_local", g.delete_policy?)
    } else {
        ("update_newer_local", g.update_policy?)
    };
    let n_set = set.len();
    let t = n_set + whr.len() + 1;
    let lsn = t + 1;
    let cmp = if g.local_wins_ties { "<" } else { "<=" };
    let mut s = String::from(
        "WITH target AS (SELECT r.ctid AS pgsync_ctid, row_to_json(r) AS pgsync_img, w.pgsync_ts,",
    );
    let _ = write!(
        s,
        " coalesce(w.pgsync_o <> 0 OR w.pgsync_ts {cmp} {epoch} + ${t}::bigint * INTERVAL '1 microsecond', true) AS pgsync_ok FROM {table} r LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(r.xmin) AS w(pgsync_ts, pgsync_o) ON true",
        epoch = EPOCH
    );
    sql::push_where(&mut s, table, whr, how, n_set);
    s.push_str(" FOR UPDATE OF r), ");
    if delete {
        let _ = write!(
            s,
            "pgsync_w AS (DELETE FROM {table} USING target WHERE {table}.ctid = target.pgsync_ctid AND target.pgsync_ok RETURNING 1), "
        );
    } else {
        let sets: Vec<String> = set
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ${}", Ident(&c.name), i + 1))
            .collect();
        let _ = write!(
            s,
            "pgsync_w AS (UPDATE {table} SET {} FROM target WHERE {table}.ctid = target.pgsync_ctid AND target.pgsync_ok RETURNING 1), ",
            sets.join(", ")
        );
    }
    let object = |cols: &[&Col], offset: usize| -> String {
        let pairs: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}, ${}", Literal(&c.name), offset + i + 1))
            .collect();
        format!("jsonb_build_object({})", pairs.join(", "))
    };
    let key = match how {
        Match::Key => object(whr, n_set),
        Match::FullRow => "NULL".to_owned(),
    };
    let remote = if delete {
        object(whr, n_set)
    } else {
        object(set, 0)
    };
    let stays = key_moves.map_or("true".to_owned(), |m| format!("NOT ({m})"));
    let _ = write!(
        s,
        "pgsync_log AS (INSERT INTO pgsync.conflicts (origin, kind, table_name, key, local_row, remote_row, local_commit_time, local_origin, local_deleted, remote_commit_time, remote_origin, decision, policy, remote_is_later, source_lsn) \
         SELECT {origin}, '{kind}', {tname}, {key}, pgsync_img::jsonb, {remote}, pgsync_ts, {local}, false, {epoch} + ${t}::bigint * INTERVAL '1 microsecond', {remote_node}, 'keep_local', '{policy}', false, '0/0'::pg_lsn + ${lsn}::bigint \
         FROM target WHERE NOT pgsync_ok AND {stays}) \
         SELECT 1 FROM target WHERE pgsync_ok OR {stays}",
        origin = Literal(&g.origin),
        tname = Literal(&table.to_string()),
        local = Literal(&g.local_node),
        remote_node = Literal(&g.remote_node),
        epoch = EPOCH,
    );
    Some(s)
}

const EPOCH: &str = "TIMESTAMPTZ '2000-01-01 00:00:00+00'";

/// `$a IS DISTINCT FROM $b OR ...` over the key columns present in both the SET list and
/// the WHERE list (by key): true when the update moves the row to another key.
pub(crate) fn key_moves(set: &[u16], whr: &[u16]) -> Option<String> {
    let conds: Vec<String> = whr
        .iter()
        .enumerate()
        .filter_map(|(wi, col)| {
            let si = set.iter().position(|s| s == col)?;
            Some(format!(
                "${} IS DISTINCT FROM ${}",
                si + 1,
                set.len() + wi + 1
            ))
        })
        .collect();
    (!conds.is_empty()).then(|| conds.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> Col {
        Col {
            name: name.into(),
            type_name: "integer".into(),
        }
    }

    fn guard() -> Guard {
        Guard {
            origin: "pgsync_t_fwd".into(),
            local_node: "destination".into(),
            remote_node: "source".into(),
            update_policy: Some("last_write_wins"),
            delete_policy: None,
            local_wins_ties: false,
        }
    }

    #[test]
    fn a_guarded_update_keeps_newer_local_rows_and_logs_them_in_one_statement() {
        let t = QualifiedName::new("s", "t");
        let (id, v) = (col("id"), col("v"));
        let text = statement(
            &guard(),
            &t,
            false,
            &[&id, &v],
            &[&id],
            Match::Key,
            key_moves(&[0, 1], &[0]),
        )
        .unwrap();
        assert!(text.starts_with("WITH target AS (SELECT r.ctid"), "{text}");
        assert!(
            text.contains("w.pgsync_ts <= TIMESTAMPTZ '2000-01-01 00:00:00+00' + $4::bigint"),
            "{text}"
        );
        assert!(
            text.contains(r#"WHERE "id" = $3 FOR UPDATE OF r"#),
            "{text}"
        );
        assert!(
            text.contains(r#"UPDATE "s"."t" SET "id" = $1, "v" = $2 FROM target"#),
            "{text}"
        );
        assert!(text.contains("'update_newer_local'"), "{text}");
        assert!(text.contains("'0/0'::pg_lsn + $5::bigint"), "{text}");
        assert!(
            text.ends_with("SELECT 1 FROM target WHERE pgsync_ok OR NOT ($1 IS DISTINCT FROM $3)"),
            "{text}"
        );
    }

    #[test]
    fn without_a_keeping_policy_there_is_no_guarded_statement() {
        let t = QualifiedName::new("s", "t");
        let id = col("id");
        assert!(statement(&guard(), &t, true, &[], &[&id], Match::Key, None).is_none());
    }
}
