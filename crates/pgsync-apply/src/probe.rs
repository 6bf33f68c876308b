//! Looking at the destination where an incoming change lands, for the careful path.
//!
//! ```text
//!   change ──> identity slot(s): SELECT ctid, row_to_json(t), last writer FROM t
//!              WHERE <key or whole old row> FOR UPDATE            (old key / new key)
//!          ──> each other UNIQUE index whose values the new image sets:
//!              the row holding them, if it is not a slot's row     (collisions)
//! ```
//!
//! Rows are found as on the fast path: by the replica identity key, or for `REPLICA
//! IDENTITY FULL` tables by the destination's primary key when it has one (whole-row
//! matching would miss a row whose other columns changed concurrently, and could not use
//! an index), else by the whole old row. Slot rows are locked (`FOR UPDATE`), so an
//! application on the destination cannot change them between the look and the write; the
//! write then addresses them by `ctid`.
//!
//! The last writer comes from `pg_xact_commit_timestamp_origin(xmin)` (PostgreSQL 14+):
//! origin 0 is the local node, any other origin the remote one. A row written earlier in
//! the same applying transaction has no commit data yet and counts as unknown (older).

use std::collections::HashMap;

use pgsync_conflict::{CommitTime, LastWriter, LocalRow, NodeId, WriteStamp};
use pgsync_names::QualifiedName;
use pgsync_wal::Tuple;
use pgsync_wal::pgoutput::ColumnValue;
use serde_json::{Map, Value};
use tokio_postgres::{Client, Statement};

use crate::error::ApplyError;
use crate::param::Param;
use crate::sql::{self, Col, Match};
use crate::tables::TableEntry;

/// How the careful path finds a table's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowMatch {
    /// By these source columns (a key).
    Key(Vec<usize>),
    /// By every sent column of the old row.
    FullRow,
}

/// A UNIQUE index over columns the source sends.
#[derive(Debug, Clone)]
pub(crate) struct UniqueIndex {
    pub(crate) name: String,
    /// Source column indexes, in index order.
    pub(crate) cols: Vec<usize>,
}

/// What the careful path knows about a destination table.
#[derive(Debug, Clone)]
pub(crate) struct CarefulTable {
    pub(crate) matching: RowMatch,
    /// Unique indexes other than the one rows are matched by.
    pub(crate) uniques: Vec<UniqueIndex>,
    /// Source column indexes of delta columns.
    pub(crate) delta: Vec<usize>,
}

impl CarefulTable {
    pub(crate) async fn load(
        client: &Client,
        entry: &TableEntry,
        delta_names: &[String],
    ) -> Result<Self, ApplyError> {
        let rows = client
            .query(
                "SELECT i.indexrelid::regclass::text, i.indisprimary,
                        array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = $1::text::regclass AND i.indisunique
                   AND i.indpred IS NULL AND i.indexprs IS NULL
                 GROUP BY i.indexrelid, i.indisprimary
                 ORDER BY i.indisprimary DESC, 1",
                &[&entry.dest.to_string()],
            )
            .await
            .map_err(ApplyError::pg(format!(
                "reading the unique indexes of {}",
                entry.dest
            )))?;
        let position = |name: &str| entry.cols.iter().position(|c| c.name == name);
        let mut indexes = Vec::new();
        for r in &rows {
            let names: Vec<String> = r.get(2);
            let cols: Option<Vec<usize>> = names.iter().map(|n| position(n)).collect();
            if let Some(cols) = cols {
                indexes.push((
                    r.get::<_, bool>(1),
                    UniqueIndex {
                        name: r.get(0),
                        cols,
                    },
                ));
            }
        }
        let matching = if !entry.full_identity && !entry.key.is_empty() {
            RowMatch::Key(entry.key.clone())
        } else if let Some((_, pk)) = indexes.iter().find(|(primary, _)| *primary) {
            RowMatch::Key(pk.cols.clone())
        } else {
            RowMatch::FullRow
        };
        let uniques = indexes
            .into_iter()
            .map(|(_, u)| u)
            .filter(|u| match &matching {
                RowMatch::Key(k) => !same_set(k, &u.cols),
                RowMatch::FullRow => true,
            })
            .collect();
        let delta = delta_names.iter().filter_map(|n| position(n)).collect();
        Ok(Self {
            matching,
            uniques,
            delta,
        })
    }
}

fn same_set(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// A destination row the change meets.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) ctid: String,
    pub(crate) row: LocalRow,
}

/// Runs the careful path's look-ups, each statement prepared once.
#[derive(Debug, Default)]
pub(crate) struct Prober {
    statements: HashMap<String, Statement>,
}

/// Which of the change's values a look-up uses.
pub(crate) enum Lookup<'t> {
    /// The values of these columns of the tuple.
    Columns(&'t Tuple, &'t [usize]),
    /// The whole tuple (every sent column).
    WholeRow(&'t Tuple),
}

/// The node names a row's origin maps to.
pub(crate) struct Nodes<'a> {
    pub(crate) local: &'a NodeId,
    pub(crate) remote: &'a NodeId,
    /// Whether last writers are read at all.
    pub(crate) read_writers: bool,
}

impl Prober {
    /// Forgets the prepared look-ups (their tables may have changed).
    pub(crate) fn forget(&mut self) {
        self.statements.clear();
    }

    pub(crate) async fn prepared(
        &mut self,
        client: &Client,
        text: String,
    ) -> Result<Statement, ApplyError> {
        if let Some(s) = self.statements.get(&text) {
            return Ok(s.clone());
        }
        let stmt = client
            .prepare(&text)
            .await
            .map_err(ApplyError::pg(format!("preparing {text}")))?;
        self.statements.insert(text, stmt.clone());
        Ok(stmt)
    }

    /// The row of `entry` the look-up finds, locked. `None` also when a key value is null
    /// (a NULL never equals anything, and never collides on a UNIQUE index).
    pub(crate) async fn find(
        &mut self,
        client: &Client,
        entry: &TableEntry,
        lookup: Lookup<'_>,
        key_cols: Option<&[usize]>,
        nodes: &Nodes<'_>,
    ) -> Result<Option<Found>, ApplyError> {
        let (idx, how): (Vec<usize>, Match) = match &lookup {
            Lookup::Columns(_, cols) => (cols.to_vec(), Match::Key),
            Lookup::WholeRow(t) => (
                t.iter()
                    .enumerate()
                    .filter(|(_, v)| !matches!(v, ColumnValue::Unchanged))
                    .map(|(i, _)| i)
                    .collect(),
                Match::FullRow,
            ),
        };
        let tuple = match lookup {
            Lookup::Columns(t, _) | Lookup::WholeRow(t) => t,
        };
        let mut params = Vec::with_capacity(idx.len());
        for &i in &idx {
            match tuple.get(i).and_then(Param::from_column) {
                Some(Param::Null) if how == Match::Key => return Ok(None),
                Some(p) => params.push(p),
                None => return Ok(None),
            }
        }
        let cols: Vec<&Col> = idx.iter().map(|&i| &entry.cols[i]).collect();
        let text = probe_text(&entry.dest, &cols, how, nodes.read_writers);
        let stmt = self.prepared(client, text).await?;
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let row = client
            .query_opt(&stmt, &refs)
            .await
            .map_err(ApplyError::pg(format!(
                "looking up a row of {}",
                entry.dest
            )))?;
        let Some(row) = row else { return Ok(None) };
        let ctid: String = row.get(0);
        let image: Option<Value> = row
            .get::<_, Option<String>>(1)
            .and_then(|s| serde_json::from_str(&s).ok());
        let writer = if nodes.read_writers {
            match (row.get::<_, Option<i64>>(2), row.get::<_, Option<i64>>(3)) {
                (Some(ts), Some(origin)) => LastWriter::Known(WriteStamp::new(
                    CommitTime::from_pg_micros(ts),
                    if origin == 0 {
                        nodes.local.clone()
                    } else {
                        nodes.remote.clone()
                    },
                )),
                _ => LastWriter::Unknown,
            }
        } else {
            LastWriter::Unknown
        };
        let key = key_cols.and_then(|k| image.as_ref().map(|img| pick(img, entry, k)));
        Ok(Some(Found {
            ctid,
            row: LocalRow::with_writer(writer).with_images(key, image),
        }))
    }
}

/// `SELECT ctid, row_to_json(r), commit time, origin FROM t r WHERE ... FOR UPDATE OF r`.
fn probe_text(table: &QualifiedName, cols: &[&Col], how: Match, read_writers: bool) -> String {
    let mut text = String::from("SELECT r.ctid::text, row_to_json(r)::text");
    if read_writers {
        text.push_str(
            ", ((extract(epoch FROM w.pgsync_ts) - 946684800) * 1000000)::bigint, w.pgsync_origin::bigint",
        );
    }
    text.push_str(&format!(" FROM {table} r"));
    if read_writers {
        text.push_str(
            " LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(r.xmin) AS w(pgsync_ts, pgsync_origin) ON true",
        );
    }
    sql::push_where(&mut text, table, cols, how, 0);
    text.push_str(" FOR UPDATE OF r");
    text
}

/// The columns `cols` of a destination row image (`row_to_json`), as a JSON object.
fn pick(image: &Value, entry: &TableEntry, cols: &[usize]) -> Value {
    let mut m = Map::new();
    for &i in cols {
        let name = &entry.cols[i].name;
        m.insert(
            name.clone(),
            image.get(name.as_str()).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(m)
}

/// A source tuple as a JSON object of destination column names (text values as strings,
/// binary ones as `\x` hex; unchanged TOAST values left out), for the conflict log.
pub(crate) fn tuple_json(entry: &TableEntry, tuple: &Tuple, only: Option<&[usize]>) -> Value {
    let mut m = Map::new();
    for (i, v) in tuple.iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let Some(col) = entry.cols.get(i) else {
            continue;
        };
        let value = match v {
            ColumnValue::Null => Value::Null,
            ColumnValue::Unchanged => continue,
            ColumnValue::Text(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            ColumnValue::Binary(b) => {
                let mut s = String::with_capacity(2 + b.len() * 2);
                s.push_str("\\x");
                for byte in b {
                    s.push_str(&format!("{byte:02x}"));
                }
                Value::String(s)
            }
        };
        m.insert(col.name.clone(), value);
    }
    Value::Object(m)
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

    #[test]
    fn the_probe_locks_the_row_and_reads_its_last_writer() {
        let t = QualifiedName::new("s", "t");
        let k = col("id");
        assert_eq!(
            probe_text(&t, &[&k], Match::Key, true),
            "SELECT r.ctid::text, row_to_json(r)::text, ((extract(epoch FROM w.pgsync_ts) - 946684800) * 1000000)::bigint, w.pgsync_origin::bigint FROM \"s\".\"t\" r LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(r.xmin) AS w(pgsync_ts, pgsync_origin) ON true WHERE \"id\" = $1 FOR UPDATE OF r"
        );
        assert_eq!(
            probe_text(&t, &[&k], Match::Key, false),
            "SELECT r.ctid::text, row_to_json(r)::text FROM \"s\".\"t\" r WHERE \"id\" = $1 FOR UPDATE OF r"
        );
    }

    #[test]
    fn key_sets_compare_regardless_of_order() {
        assert!(same_set(&[1, 2], &[2, 1]));
        assert!(!same_set(&[1], &[1, 2]));
    }
}
