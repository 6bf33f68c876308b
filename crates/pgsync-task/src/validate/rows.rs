//! Row level: which keys of a differing chunk differ, and whether they still differ once
//! the lag has passed.
//!
//! A round reads the candidate rows on the source (`a`), waits until the destination has
//! applied everything up to that read, reads them on the destination (`b`), then on the
//! source again (`a'`):
//!
//! ```text
//!   b == a'            equal (the destination has caught up with the source)
//!   b != a', a == a'   different: the source row did not change around the
//!                      destination's read, and the destination had applied it
//!   a != a'            the row is changing on the source: another round
//! ```
//! Rows are compared by the text of each column (both sessions print alike), absent rows
//! as `None`, so "missing on the destination", "extra on the destination" and "different
//! columns" fall out of the same comparison.

use std::collections::HashMap;

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use tokio_postgres::types::ToSql;

use super::chunks::Chunk;
use super::error::ValidateError;
use super::plan::TablePlan;
use super::report::RowDiffKind;
use super::session::Side;
use super::sql::TableSql;

/// A key's values as text, in key order.
pub(super) type Key = Vec<String>;

/// Keys looked up per statement.
const FETCH_BATCH: usize = 5000;

/// A row: each compared column as text, and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) values: Vec<Option<String>>,
    pub(super) hash: i64,
}

/// What a round concluded about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Equal,
    /// How, and (for [`RowDiffKind::Different`]) the positions of the differing columns.
    Differs(RowDiffKind, Vec<usize>),
    Unstable,
}

/// Every key of `chunk` on one side (on its session `session`), with its row's checksum.
pub(super) async fn list(
    side: &Side,
    session: usize,
    plan: &TablePlan,
    chunk: &Chunk,
) -> Result<HashMap<Key, i64>, ValidateError> {
    let sql = TableSql::new(plan, side.which).keys(chunk.lo.is_some(), chunk.hi.is_some());
    let rows = side
        .client(session)
        .query(&sql, &chunk.params())
        .await
        .map_err(side.err(format!("listing the keys of {}", plan.name(side.which))))?;
    let k = plan.key.len();
    Ok(rows
        .iter()
        .map(|r| {
            let key = (0..k).map(|i| r.get::<_, String>(i)).collect();
            (key, r.get::<_, i64>(k))
        })
        .collect())
}

/// The keys whose checksums differ or that only one side has, in order.
pub(super) fn candidates(a: &HashMap<Key, i64>, b: &HashMap<Key, i64>) -> Vec<Key> {
    let mut keys: Vec<Key> = a
        .iter()
        .filter(|(k, h)| b.get(*k) != Some(h))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    keys.sort_unstable();
    keys
}

/// The rows of `keys` on one side (absent keys are absent from the map).
pub(super) async fn fetch(
    side: &Side,
    plan: &TablePlan,
    keys: &[Key],
) -> Result<HashMap<Key, Row>, ValidateError> {
    let sql = TableSql::new(plan, side.which).rows_by_key();
    let sql = &sql;
    let ncols = plan.columns.len();
    let parts: Vec<HashMap<Key, Row>> = stream::iter(keys.chunks(FETCH_BATCH).enumerate())
        .map(|(n, batch)| async move {
            let arrays: Vec<Vec<&str>> = (0..plan.key.len())
                .map(|j| batch.iter().map(|k| k[j].as_str()).collect())
                .collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let rows = side
                .client(n)
                .query(sql.as_str(), &params)
                .await
                .map_err(side.err(format!("reading rows of {}", plan.name(side.which))))?;
            Ok::<_, ValidateError>(
                rows.iter()
                    .map(|r| {
                        let values: Vec<Option<String>> = (0..ncols).map(|i| r.get(i)).collect();
                        let row = Row {
                            hash: r.get(ncols),
                            values,
                        };
                        (key_of(plan, &row), row)
                    })
                    .collect(),
            )
        })
        .buffered(side.sessions())
        .try_collect()
        .await?;
    Ok(parts.into_iter().flatten().collect())
}

/// The key of a fetched row.
pub(super) fn key_of(plan: &TablePlan, row: &Row) -> Key {
    plan.key
        .iter()
        .map(|&i| row.values[i].clone().unwrap_or_default())
        .collect()
}

/// One key's verdict from a round: source before, destination, source after.
pub(super) fn classify(a: Option<&Row>, b: Option<&Row>, a2: Option<&Row>) -> Verdict {
    if same(b, a2) {
        return Verdict::Equal;
    }
    if !same(a, a2) {
        return Verdict::Unstable;
    }
    match (a2, b) {
        (Some(_), None) => Verdict::Differs(RowDiffKind::MissingOnDestination, Vec::new()),
        (None, Some(_)) => Verdict::Differs(RowDiffKind::ExtraOnDestination, Vec::new()),
        (Some(x), Some(y)) => Verdict::Differs(
            RowDiffKind::Different,
            (0..x.values.len())
                .filter(|&i| x.values[i] != y.values[i])
                .collect(),
        ),
        (None, None) => Verdict::Equal,
    }
}

fn same(x: Option<&Row>, y: Option<&Row>) -> bool {
    match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => x.values == y.values,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[Option<&str>]) -> Row {
        Row {
            values: v.iter().map(|x| x.map(str::to_owned)).collect(),
            hash: 0,
        }
    }

    #[test]
    fn a_destination_that_caught_up_with_the_source_is_equal() {
        let old = row(&[Some("1"), Some("a")]);
        let new = row(&[Some("1"), Some("b")]);
        // The source changed during the round and the destination already has the change.
        assert_eq!(classify(Some(&old), Some(&new), Some(&new)), Verdict::Equal);
        assert_eq!(classify(None, None, None), Verdict::Equal);
    }

    #[test]
    fn a_stable_source_row_the_destination_lacks_or_changed_is_a_difference() {
        let a = row(&[Some("1"), Some("a"), None]);
        let b = row(&[Some("1"), Some("x"), Some("")]);
        assert_eq!(
            classify(Some(&a), Some(&b), Some(&a)),
            Verdict::Differs(RowDiffKind::Different, vec![1, 2])
        );
        assert_eq!(
            classify(Some(&a), None, Some(&a)),
            Verdict::Differs(RowDiffKind::MissingOnDestination, vec![])
        );
        assert_eq!(
            classify(None, Some(&b), None),
            Verdict::Differs(RowDiffKind::ExtraOnDestination, vec![])
        );
    }

    #[test]
    fn a_row_changing_on_the_source_is_looked_at_again() {
        let a = row(&[Some("1"), Some("a")]);
        let a2 = row(&[Some("1"), Some("c")]);
        let b = row(&[Some("1"), Some("b")]);
        assert_eq!(classify(Some(&a), Some(&b), Some(&a2)), Verdict::Unstable);
        assert_eq!(classify(None, Some(&b), Some(&a2)), Verdict::Unstable);
    }

    #[test]
    fn candidates_are_keys_with_other_checksums_or_on_one_side_only() {
        let k = |s: &str| vec![s.to_owned()];
        let a: HashMap<Key, i64> = [(k("1"), 10), (k("2"), 20), (k("3"), 30)].into();
        let b: HashMap<Key, i64> = [(k("1"), 10), (k("2"), 21), (k("4"), 40)].into();
        assert_eq!(candidates(&a, &b), vec![k("2"), k("3"), k("4")]);
    }
}
