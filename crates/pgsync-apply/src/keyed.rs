//! Updates and deletes by key, many rows per statement.
//!
//! A backlog of small transactions is mostly single-row UPDATEs and DELETEs found by
//! primary key (pgbench's accounts, an orders table). One prepared statement per row costs
//! the destination a Bind/Execute/Sync round of its own for each — parse the message, set
//! up the executor, find one row, send a reply — which is most of its work per row. So
//! consecutive updates of one table that write the same columns (and deletes of one
//! table) are held back as a *keyed run* and sent as one statement over arrays:
//!
//! ```text
//! UPDATE t AS pgsync_t SET "c" = pgsync_v.s0::type, ...
//!   FROM unnest($1::text[], $2::text[], ...) AS pgsync_v(k0, ..., s0, ...)
//!  WHERE pgsync_t."id" = pgsync_v.k0::type AND ...
//! DELETE FROM t AS pgsync_t USING unnest($1::text[], ...) AS pgsync_v(k0, ...)
//!  WHERE pgsync_t."id" = pgsync_v.k0::type AND ...
//! ```
//!
//! Values travel as they came from pgoutput, in text form, inside binary `text[]`
//! parameters (no quoting or escaping to do), and the server's input function of each
//! column's type parses them, as for single-row statements.
//!
//! Order: a run holds each key once, so its rows commute with each other; a second change
//! to a key already in the run, any other change to the table (an insert, a key-changing
//! update, a TRUNCATE, DDL) first puts the run in the chunk of statements, in its place.
//! Changes to other tables may overtake it, as held-back inserts already do: within one
//! destination transaction, and with `session_replication_role = replica` (no FK triggers),
//! rows of different tables do not see each other.
//!
//! Surprises: the statement reports how many rows it touched; fewer than the run's rows
//! (a row missing on the destination) fails the group like a single-row statement would,
//! and the careful path, when configured, replays it row by row. Rows found by the whole
//! old row (REPLICA IDENTITY FULL), binary values, key-changing updates and a
//! last-writer check keep the single-row statements.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsync_names::QualifiedName;
use pgsync_names::sql::Ident;
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation, Tuple};
use postgres_types::{Format, IsNull, ToSql, Type, to_sql_checked};

use crate::applier::Op;
use crate::sql::Col;
use crate::tables::TableEntry;

/// The OID of `text`, the element type of the arrays.
const TEXT_OID: u32 = 25;

/// Consecutive updates (same columns written) or deletes of one table, each key once.
#[derive(Debug)]
pub(crate) struct KeyedRun {
    pub(crate) relation: Arc<Relation>,
    pub(crate) op: Op,
    /// Source column indexes written (updates; empty for deletes).
    pub(crate) set: Vec<u16>,
    /// The changes, in stream order, with the end LSN of their transaction.
    pub(crate) rows: Vec<(Change, Lsn)>,
    /// The key of every row, as sent (text), to keep each key once.
    keys: HashSet<Vec<u8>>,
}

/// Where a change could go in a keyed run: its operation and the columns it writes.
pub(crate) fn shape_of(change: &Change, entry: &TableEntry) -> Option<(Op, Vec<u16>)> {
    if entry.full_identity || entry.key.is_empty() {
        return None;
    }
    match change {
        // An old key is sent only when the key changed: that one needs its own statement.
        Change::Update { new, old: None, .. } => {
            let mut set = Vec::with_capacity(new.len());
            for (i, v) in new.iter().enumerate() {
                if !entry.update_writes(i, None, new) {
                    continue;
                }
                match v {
                    ColumnValue::Text(_) | ColumnValue::Null => set.push(i as u16),
                    ColumnValue::Unchanged => {}
                    ColumnValue::Binary(_) => return None,
                }
            }
            key_of(new, entry)?;
            Some((Op::Update, set))
        }
        Change::Delete {
            old: old @ OldTuple::Key(_),
            ..
        } => {
            key_of(old.tuple(), entry)?;
            Some((Op::Delete, Vec::new()))
        }
        _ => None,
    }
}

/// The key values of `tuple`, length-prefixed into one buffer; `None` unless every key
/// column is a text value.
fn key_of(tuple: &Tuple, entry: &TableEntry) -> Option<Vec<u8>> {
    let mut key = Vec::new();
    for &k in &entry.key {
        match tuple.get(k) {
            Some(ColumnValue::Text(b)) => {
                key.extend_from_slice(&(b.len() as u32).to_le_bytes());
                key.extend_from_slice(b);
            }
            _ => return None,
        }
    }
    Some(key)
}

/// The tuple a change's key and values are read from.
fn tuple_of(change: &Change) -> Option<&Tuple> {
    match change {
        Change::Update { new, .. } => Some(new),
        Change::Delete { old, .. } => Some(old.tuple()),
        _ => None,
    }
}

impl KeyedRun {
    pub(crate) fn new(relation: Arc<Relation>, op: Op, set: Vec<u16>) -> Self {
        Self {
            relation,
            op,
            set,
            rows: Vec::new(),
            keys: HashSet::new(),
        }
    }

    /// Adds `change` when it has this run's shape and a key not in the run yet; gives it
    /// back otherwise.
    pub(crate) fn try_push(
        &mut self,
        change: Change,
        end_lsn: Lsn,
        op: Op,
        set: &[u16],
        entry: &TableEntry,
    ) -> Result<(), Change> {
        if op != self.op || set != self.set.as_slice() {
            return Err(change);
        }
        let Some(key) = tuple_of(&change).and_then(|t| key_of(t, entry)) else {
            return Err(change);
        };
        if !self.keys.insert(key) {
            return Err(change);
        }
        self.rows.push((change, end_lsn));
        Ok(())
    }

    /// The end LSN of the run's first transaction (where a failure is reported).
    pub(crate) fn first_lsn(&self) -> Lsn {
        self.rows.first().map(|r| r.1).unwrap_or_default()
    }

    /// The statement's parameters: one `text[]` per key column, then one per written
    /// column, each with a value per row.
    pub(crate) fn arrays(&self, entry: &TableEntry) -> Vec<TextArray> {
        let columns: Vec<usize> = entry
            .key
            .iter()
            .copied()
            .chain(self.set.iter().map(|&i| i as usize))
            .collect();
        let mut arrays: Vec<TextArray> = columns
            .iter()
            .map(|_| TextArray::with_rows(self.rows.len()))
            .collect();
        for (change, _) in &self.rows {
            let Some(tuple) = tuple_of(change) else {
                continue;
            };
            for (array, &c) in arrays.iter_mut().zip(&columns) {
                match tuple.get(c) {
                    Some(ColumnValue::Text(b)) => array.push(Some(b)),
                    _ => array.push(None),
                }
            }
        }
        arrays
    }
}

/// The statement text for a run of `op` on `dest` writing `set` (destination columns),
/// rows found by `key`.
pub(crate) fn statement(dest: &QualifiedName, op: Op, key: &[&Col], set: &[&Col]) -> String {
    let mut params = Vec::with_capacity(key.len() + set.len());
    let mut aliases = Vec::with_capacity(key.len() + set.len());
    for i in 0..key.len() {
        aliases.push(format!("k{i}"));
    }
    for i in 0..set.len() {
        aliases.push(format!("s{i}"));
    }
    for n in 1..=aliases.len() {
        params.push(format!("${n}::text[]"));
    }
    let source = format!(
        "unnest({}) AS pgsync_v({})",
        params.join(", "),
        aliases.join(", ")
    );
    let matches: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "pgsync_t.{} = pgsync_v.k{i}::{}",
                Ident(&c.name),
                c.type_name
            )
        })
        .collect();
    let matches = matches.join(" AND ");
    match op {
        Op::Delete => format!("DELETE FROM {dest} AS pgsync_t USING {source} WHERE {matches}"),
        _ => {
            let sets: Vec<String> = set
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} = pgsync_v.s{i}::{}", Ident(&c.name), c.type_name))
                .collect();
            format!(
                "UPDATE {dest} AS pgsync_t SET {} FROM {source} WHERE {matches}",
                sets.join(", ")
            )
        }
    }
}

/// A one-dimensional `text[]` in the binary array format, built row by row.
#[derive(Debug)]
pub(crate) struct TextArray {
    buf: BytesMut,
    len: i32,
    has_null: bool,
}

impl TextArray {
    fn with_rows(rows: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(20 + rows * 16),
            len: 0,
            has_null: false,
        }
    }

    fn push(&mut self, value: Option<&[u8]>) {
        match value {
            Some(b) => {
                self.buf.put_i32(b.len() as i32);
                self.buf.put_slice(b);
            }
            None => {
                self.buf.put_i32(-1);
                self.has_null = true;
            }
        }
        self.len += 1;
    }
}

impl ToSql for TextArray {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_i32(1); // dimensions
        out.put_i32(i32::from(self.has_null));
        out.put_u32(TEXT_OID);
        out.put_i32(self.len);
        out.put_i32(1); // lower bound
        out.put_slice(&self.buf);
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Binary
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_name: &str) -> Col {
        Col {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
        }
    }

    #[test]
    fn an_update_run_joins_the_arrays_on_the_key_and_sets_every_written_column() {
        let t = QualifiedName::new("app", "Accounts");
        let (id, bal) = (col("id", "integer"), col("bal ance", "numeric(10,2)"));
        let text = statement(&t, Op::Update, &[&id], &[&id, &bal]);
        assert_eq!(
            text,
            "UPDATE \"app\".\"Accounts\" AS pgsync_t SET \"id\" = pgsync_v.s0::integer, \
             \"bal ance\" = pgsync_v.s1::numeric(10,2) \
             FROM unnest($1::text[], $2::text[], $3::text[]) AS pgsync_v(k0, s0, s1) \
             WHERE pgsync_t.\"id\" = pgsync_v.k0::integer"
        );
    }

    #[test]
    fn a_delete_run_matches_every_key_column() {
        let t = QualifiedName::new("public", "t");
        let (a, b) = (col("a", "integer"), col("b", "text"));
        let text = statement(&t, Op::Delete, &[&a, &b], &[]);
        assert_eq!(
            text,
            "DELETE FROM \"public\".\"t\" AS pgsync_t \
             USING unnest($1::text[], $2::text[]) AS pgsync_v(k0, k1) \
             WHERE pgsync_t.\"a\" = pgsync_v.k0::integer AND pgsync_t.\"b\" = pgsync_v.k1::text"
        );
    }

    #[test]
    fn a_text_array_is_encoded_in_the_binary_array_format() {
        let mut a = TextArray::with_rows(2);
        a.push(Some(b"42"));
        a.push(None);
        let mut out = BytesMut::new();
        a.to_sql(&Type::TEXT_ARRAY, &mut out).unwrap();
        let mut want = Vec::new();
        for v in [1i32, 1] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.extend_from_slice(&25u32.to_be_bytes());
        for v in [2i32, 1, 2] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.extend_from_slice(b"42");
        want.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(&out[..], &want[..]);
    }
}
