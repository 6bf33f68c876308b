//! What is compared: the task's tables on the source, each under its destination name
//! (`[mapping]`), with the columns both sides have and the key that orders the chunks.
//!
//! Generated columns are left out (the destination computes its own). A column only one
//! side has is listed in the report and not compared. The key is the primary key, else
//! the replica identity index; a table with neither (or whose key columns the destination
//! lacks) is compared as a whole, by count and checksum.
//!
//! Per-table filters (`[[objects.table]]`): a row filter is added to every read of the
//! source (the destination should hold exactly the rows that match it, see
//! `forward/filters.rs`), so rows outside it count as extra on the destination. In a
//! two-way task B's own rows outside the filter are legitimately on both sides, so the
//! filter is applied on both (which needs the filter's column names on B: a table with
//! renamed columns is skipped). A table that does not sync all of INSERT, UPDATE and
//! DELETE is skipped: its differences are intended (and a repair would undo them).

use pgsync_names::{Operation, QualifiedName};
use tokio_postgres::Client;

use super::error::ValidateError;
use super::session::{Side, Which};
use crate::spec::TaskSpec;

/// A compared column: its name and type on each side (indexed by [`Which::index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Column {
    pub(super) names: [String; 2],
    pub(super) types: [String; 2],
}

impl Column {
    pub(super) fn name(&self, w: Which) -> &str {
        &self.names[w.index()]
    }

    pub(super) fn ty(&self, w: Which) -> &str {
        &self.types[w.index()]
    }

    /// Whether both sides store the column as the same type (so the values print alike
    /// without a cast).
    pub(super) fn same_type(&self) -> bool {
        self.types[0] == self.types[1]
    }
}

/// One table to compare.
#[derive(Debug, Clone)]
pub(super) struct TablePlan {
    pub(super) names: [QualifiedName; 2],
    /// Compared columns, in the source's column order.
    pub(super) columns: Vec<Column>,
    /// Positions in `columns` of the key, in key order; empty when there is none.
    pub(super) key: Vec<usize>,
    pub(super) only_source: Vec<String>,
    pub(super) only_destination: Vec<String>,
    /// The task's row filter of the table (over source columns): applied on the source,
    /// and on the destination too when `filter_destination`.
    pub(super) source_filter: Option<String>,
    pub(super) filter_destination: bool,
}

impl TablePlan {
    pub(super) fn name(&self, w: Which) -> &QualifiedName {
        &self.names[w.index()]
    }

    /// The key's column names on the source.
    pub(super) fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| self.columns[i].names[0].clone())
            .collect()
    }
}

/// The outcome of planning one table.
#[derive(Debug)]
pub(super) enum Planned {
    Table(TablePlan),
    /// The destination has no table of the mapped name.
    MissingOnDestination {
        source: QualifiedName,
        destination: QualifiedName,
    },
    /// Not compared, for `reason`: the task's operation filter leaves out some of
    /// INSERT, UPDATE and DELETE (the sides are meant to differ), or a two-way row filter
    /// cannot be applied on the destination.
    Skipped {
        source: QualifiedName,
        destination: QualifiedName,
        reason: String,
    },
}

/// The source tables the task selects, in name order (as the publication lists them).
pub(super) async fn selected_tables(
    a: &Side,
    spec: &TaskSpec,
) -> Result<Vec<QualifiedName>, ValidateError> {
    let rows = a
        .client(0)
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsync')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(a.err("listing the tables"))?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|t| spec.objects.contains(t))
        .collect())
}

/// Plans the comparison of source table `table`.
pub(super) async fn plan(
    a: &Side,
    b: &Side,
    spec: &TaskSpec,
    table: &QualifiedName,
) -> Result<Planned, ValidateError> {
    let dest = spec.mapping.table(table);
    let filter = spec.objects.filter_of(table);
    if let Some(f) = filter
        && ![Operation::Insert, Operation::Update, Operation::Delete]
            .into_iter()
            .all(|op| f.operations.contains(op))
    {
        return Ok(Planned::Skipped {
            source: table.clone(),
            destination: dest,
            reason: format!(
                "the task syncs only {} of this table, so the sides are meant to differ; \
                 not compared (nor repaired)",
                f.operations
            ),
        });
    }
    let exists: bool = b
        .client(0)
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&dest.to_string()])
        .await
        .map_err(b.err(format!("looking for {dest}")))?
        .get(0);
    if !exists {
        return Ok(Planned::MissingOnDestination {
            source: table.clone(),
            destination: dest,
        });
    }
    let (src_cols, dst_cols, src_key) =
        tokio::try_join!(columns(a, table), columns(b, &dest), key_columns(a, table))?;
    let mut plan = TablePlan {
        names: [table.clone(), dest.clone()],
        columns: Vec::new(),
        key: Vec::new(),
        only_source: Vec::new(),
        only_destination: Vec::new(),
        source_filter: filter.and_then(|f| f.row_filter.clone()),
        filter_destination: false,
    };
    for (name, ty) in &src_cols {
        let mapped = spec.mapping.column(table, name);
        match dst_cols.iter().find(|(n, _)| *n == mapped) {
            Some((_, dty)) => plan.columns.push(Column {
                names: [name.clone(), mapped],
                types: [ty.clone(), dty.clone()],
            }),
            None => plan.only_source.push(name.clone()),
        }
    }
    plan.only_destination = dst_cols
        .iter()
        .filter(|(n, _)| !plan.columns.iter().any(|c| &c.names[1] == n))
        .map(|(n, _)| n.clone())
        .collect();
    let key: Option<Vec<usize>> = src_key
        .iter()
        .map(|k| plan.columns.iter().position(|c| &c.names[0] == k))
        .collect();
    plan.key = key.unwrap_or_default();
    if plan.source_filter.is_some() && spec.sync.two_way {
        if plan.columns.iter().any(|c| c.names[0] != c.names[1]) {
            return Ok(Planned::Skipped {
                source: table.clone(),
                destination: dest,
                reason: "two-way with a row filter over renamed columns: the filter cannot \
                         be applied to the destination's rows; not compared (nor repaired)"
                    .into(),
            });
        }
        plan.filter_destination = true;
    }
    Ok(Planned::Table(plan))
}

async fn columns(
    side: &Side,
    table: &QualifiedName,
) -> Result<Vec<(String, String)>, ValidateError> {
    let rows = side
        .client(0)
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&table.to_string()],
        )
        .await
        .map_err(side.err(format!("reading the columns of {table}")))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The primary key's columns, else the replica identity index's; empty when neither.
async fn key_columns(side: &Side, table: &QualifiedName) -> Result<Vec<String>, ValidateError> {
    key_columns_on(side.client(0), table)
        .await
        .map_err(side.err(format!("reading the key of {table}")))
}

async fn key_columns_on(
    c: &Client,
    table: &QualifiedName,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT a.attname::text
             FROM (SELECT indrelid, indkey FROM pg_index
                   WHERE indrelid = $1::text::regclass AND (indisprimary OR indisreplident)
                   ORDER BY indisprimary DESC LIMIT 1) i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&table.to_string()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
