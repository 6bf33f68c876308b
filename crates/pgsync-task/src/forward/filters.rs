//! Per-table filters (`[[objects.table]]`) as the source server carries them out: the
//! forward direction reads from one publication per operation set.
//!
//! ```text
//!  objects.table            publication on A                    publish
//!  (no entry)          ──>  pgsync_<task>_fwd                   insert, update, delete, truncate
//!  operations = [i, u] ──>  pgsync_<task>_fwd_ops_iu            insert, update
//!  row_filter = "w"    ──>  FOR TABLE t WHERE (w)  (in the publication of its operations)
//!                           every one WITH (publish_via_partition_root = true)
//! ```
//! One slot streams all of them (`publication_names` lists each), and every table is in
//! exactly one, so pgoutput never merges two filters of a table. Dropping operations on
//! the source rather than in the applier keeps unwanted changes off the wire, and the
//! applier stays filter-free.
//!
//! Row filters (PostgreSQL 15+; the precheck refuses them on older sources) apply to the
//! full copy too (`COPY (SELECT .. WHERE (w))`). In the stream pgoutput evaluates the
//! filter on the old and the new row of an UPDATE: both match, an UPDATE; only the new
//! one (the row moves into the filter), an INSERT of the whole new row; only the old one
//! (it moves out), a DELETE; neither, nothing. So the destination holds exactly the rows
//! that match, as long as the operations those transformations need are synced (a table
//! without `delete` keeps rows that moved out of its filter). For UPDATE and DELETE the
//! filter may use only replica identity columns (a server rule; the precheck tries it).
//!
//! Publications are part of decoding's historic catalog: one created after the slot is
//! unknown to changes older than itself, so a new operation set on a running task is
//! refused (release and start the task again).
//!
//! Filters belong to the forward direction; in two-way sync the reverse direction carries
//! every change B makes to the selected tables.

use std::collections::BTreeMap;

use pgsync_names::sql::Ident;
use pgsync_names::{Operations, QualifiedName, Selection};
use tokio_postgres::Client;

use crate::error::TaskError;
use crate::names::TaskNames;

/// One publication to make on the reading side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publication {
    pub(crate) name: String,
    pub(crate) operations: Operations,
    /// Tables (roots for partitioned ones), each with its row filter.
    pub(crate) tables: Vec<(QualifiedName, Option<String>)>,
}

/// The forward publications over `tables` (the selected roots): the main one first (it
/// exists even when every table is elsewhere: DDL capture adds new tables to it), then
/// one per other operation set named in the filters, in a stable order.
pub(crate) fn publications(
    selection: &Selection,
    names: &TaskNames,
    tables: &[QualifiedName],
) -> Vec<Publication> {
    let mut by_ops: BTreeMap<Operations, Vec<(QualifiedName, Option<String>)>> = BTreeMap::new();
    by_ops.insert(Operations::all(), Vec::new());
    for f in &selection.tables {
        by_ops.entry(f.operations).or_default();
    }
    for t in tables {
        let (ops, row_filter) = match selection.filter_of(t) {
            Some(f) => (f.operations, f.row_filter.clone()),
            None => (Operations::all(), None),
        };
        by_ops.entry(ops).or_default().push((t.clone(), row_filter));
    }
    let mut out: Vec<Publication> = by_ops
        .into_iter()
        .map(|(operations, tables)| Publication {
            name: names.publication_for(operations),
            operations,
            tables,
        })
        .collect();
    out.sort_by_key(|p| (!p.operations.is_all(), p.name.clone()));
    out
}

/// The publications the forward stream reads: the main one and one per operation set of
/// the filters (the same names [`publications`] makes).
pub(crate) fn stream_publications(selection: &Selection, names: &TaskNames) -> Vec<String> {
    publications(selection, names, &[])
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// Creates `p`, or sets its tables, row filters and parameters. `slot_exists`: the
/// stream already reads from a slot, which cannot see a publication made after it.
pub(crate) async fn ensure(
    c: &Client,
    p: &Publication,
    slot_exists: bool,
) -> Result<(), TaskError> {
    let exists = c
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&p.name],
        )
        .await
        .map_err(TaskError::sql("looking for the publication"))?
        .is_some();
    let with = format!(
        "publish = '{}', publish_via_partition_root = true",
        p.operations.publish()
    );
    let list = p
        .tables
        .iter()
        .map(|(t, w)| match w {
            Some(w) => format!("{t} WHERE ({w})"),
            None => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let name = Ident(&p.name);
    let context = format!("creating publication {}", p.name);
    if !exists {
        if slot_exists && !p.operations.is_all() {
            return Err(TaskError::Filters(format!(
                "operations = [{}] is new for this task, but its slot exists already and cannot \
                 read a publication made after it; run pgsync release and start the task again",
                p.operations
            )));
        }
        let tables = if list.is_empty() {
            String::new()
        } else {
            format!(" FOR TABLE {list}")
        };
        return c
            .batch_execute(&format!("CREATE PUBLICATION {name}{tables} WITH ({with})"))
            .await
            .map_err(TaskError::sql(context));
    }
    let set_tables = if list.is_empty() {
        let current = c
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_publication_tables
                 WHERE pubname = $1",
                &[&p.name],
            )
            .await
            .map_err(TaskError::sql("listing the publication's tables"))?;
        let current: Vec<String> = current.iter().map(|r| r.get(0)).collect();
        if current.is_empty() {
            String::new()
        } else {
            format!(
                "ALTER PUBLICATION {name} DROP TABLE {};",
                current.join(", ")
            )
        }
    } else {
        format!("ALTER PUBLICATION {name} SET TABLE {list};")
    };
    c.batch_execute(&format!(
        "{set_tables} ALTER PUBLICATION {name} SET ({with})"
    ))
    .await
    .map_err(TaskError::sql(context))
}

/// Drops operation-set publications of the task that the filters no longer name.
pub(crate) async fn drop_unused(
    c: &Client,
    names: &TaskNames,
    keep: &[Publication],
) -> Result<(), TaskError> {
    let stale: Vec<String> = all_operation_publications(names)
        .filter(|n| !keep.iter().any(|p| &p.name == n))
        .collect();
    let found = c
        .query(
            "SELECT pubname::text FROM pg_publication WHERE pubname = ANY($1)",
            &[&stale],
        )
        .await
        .map_err(TaskError::sql("looking for publications"))?;
    for r in found {
        let name: String = r.get(0);
        c.batch_execute(&format!("DROP PUBLICATION {}", Ident(&name)))
            .await
            .map_err(TaskError::sql(format!("dropping publication {name}")))?;
    }
    Ok(())
}

/// Every operation-set publication name the task could have made (for release).
pub(crate) fn all_operation_publications(names: &TaskNames) -> impl Iterator<Item = String> + '_ {
    Operations::every_set()
        .filter(|o| !o.is_all())
        .map(|o| names.publication_for(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Direction;

    #[test]
    fn each_operation_set_gets_one_publication_and_the_main_one_comes_first() {
        let toml = r#"
include = ["public.*"]
[[table]]
name = "public.orders"
operations = ["insert", "update"]
row_filter = "region = 'eu'"
[[table]]
name = "public.audit"
operations = ["insert"]
[[table]]
name = "public.items"
row_filter = "qty > 0"
"#;
        let selection: Selection = toml::from_str(toml).unwrap();
        let names = TaskNames::new("shop", Direction::Forward);
        let q = |t: &str| QualifiedName::new("public", t);
        let tables = [q("audit"), q("items"), q("orders"), q("plain")];
        let pubs = publications(&selection, &names, &tables);
        let summary: Vec<(String, Vec<String>)> = pubs
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.tables
                        .iter()
                        .map(|(t, w)| format!("{}{}", t.name, w.as_deref().unwrap_or("")))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "pgsync_shop_fwd".to_string(),
                    vec!["itemsqty > 0".to_string(), "plain".to_string()]
                ),
                (
                    "pgsync_shop_fwd_ops_i".to_string(),
                    vec!["audit".to_string()]
                ),
                (
                    "pgsync_shop_fwd_ops_iu".to_string(),
                    vec!["ordersregion = 'eu'".to_string()]
                ),
            ]
        );
        assert_eq!(
            stream_publications(&selection, &names),
            [
                "pgsync_shop_fwd",
                "pgsync_shop_fwd_ops_i",
                "pgsync_shop_fwd_ops_iu"
            ]
        );
        assert_eq!(all_operation_publications(&names).count(), 14);
    }
}
