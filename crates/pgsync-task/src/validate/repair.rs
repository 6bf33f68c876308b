//! `--repair`: the source wins. The differing rows of one chunk are rewritten on the
//! destination in one transaction, with `session_replication_role = replica` (no user
//! triggers, no foreign-key checks: the source already enforced them):
//!
//! * extra on the destination  -> `DELETE`
//! * different                 -> `UPDATE` of the non-key columns
//! * missing on the destination -> `INSERT ... ON CONFLICT DO NOTHING`
//!
//! The task keeps running meanwhile, so each `DELETE` and `UPDATE` applies only if the
//! destination row still has the checksum it had when it was compared, and an `INSERT`
//! never overwrites a row that appeared since: a change the task applied in between is
//! newer than what was read on the source, and is kept.
//!
//! In a two-way task the repair session writes under its own pgsync origin
//! (`pgsync_<task>_fwd_repair`), so the reverse direction does not send the rewritten rows
//! back to the source.

use tokio_postgres::types::ToSql;

use super::error::ValidateError;
use super::plan::TablePlan;
use super::report::RowDiffKind;
use super::rows::{Key, Row};
use super::session::Side;
use super::sql::TableSql;

/// Marks every transaction of `writer` as coming from replication origin `origin`
/// (created if needed), so that a two-way task's reverse direction, which drops what
/// pgsync's origins wrote, does not send the repaired rows back to the source. `release`
/// removes the origin with the task's others (it shares their prefix).
pub(super) async fn attach_origin(writer: &Side, origin: &str) -> Result<(), ValidateError> {
    let c = writer.client(0);
    c.execute(
        "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
        &[&origin],
    )
    .await
    .map_err(writer.err(format!("creating replication origin {origin}")))?;
    c.execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
        .await
        .map_err(writer.err(format!("attaching to replication origin {origin}")))?;
    Ok(())
}

/// One row to rewrite.
#[derive(Debug, Clone)]
pub(super) struct Fix {
    pub(super) key: Key,
    pub(super) kind: RowDiffKind,
    /// The source's row (absent for an extra row).
    pub(super) source: Option<Row>,
    /// The destination row's checksum when compared (absent for a missing row).
    pub(super) dest_hash: Option<i64>,
}

/// Rewrites `fixes` (the rows of one chunk) in one destination transaction on `writer`,
/// a session nothing else uses. Returns the number of rows written.
pub(super) async fn apply(
    writer: &Side,
    plan: &TablePlan,
    fixes: &[Fix],
) -> Result<u64, ValidateError> {
    if fixes.is_empty() {
        return Ok(0);
    }
    let c = writer.client(0);
    let name = plan.name(writer.which).to_string();
    c.batch_execute("BEGIN; SET LOCAL session_replication_role = replica")
        .await
        .map_err(writer.err(
            "starting the repair (it sets session_replication_role, which needs a superuser \
             or, from PostgreSQL 15, GRANT SET ON PARAMETER session_replication_role)",
        ))?;
    match write(writer, plan, fixes).await {
        Ok(n) => {
            c.batch_execute("COMMIT")
                .await
                .map_err(writer.err(format!("committing the repair of {name}")))?;
            Ok(n)
        }
        Err(e) => {
            // The error is what matters; a failed rollback ends with the session anyway.
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn write(writer: &Side, plan: &TablePlan, fixes: &[Fix]) -> Result<u64, ValidateError> {
    let c = writer.client(0);
    let sql = TableSql::new(plan, writer.which);
    let name = plan.name(writer.which).to_string();
    let of = |kind| fixes.iter().filter(move |f| f.kind == kind);
    let mut written = 0;

    let extra: Vec<&Fix> = of(RowDiffKind::ExtraOnDestination).collect();
    if !extra.is_empty() {
        let arrays: Vec<Vec<Option<&str>>> = (0..plan.key.len())
            .map(|j| extra.iter().map(|f| Some(f.key[j].as_str())).collect())
            .collect();
        let hashes: Vec<i64> = extra.iter().map(|f| f.dest_hash.unwrap_or(0)).collect();
        written += run(c, &sql.delete(), &arrays, Some(&hashes))
            .await
            .map_err(writer.err(format!("deleting extra rows of {name}")))?;
    }

    let different: Vec<&Fix> = of(RowDiffKind::Different).collect();
    if let (false, Some(update)) = (different.is_empty(), sql.update()) {
        let arrays = values(plan, &different);
        let hashes: Vec<i64> = different.iter().map(|f| f.dest_hash.unwrap_or(0)).collect();
        written += run(c, &update, &arrays, Some(&hashes))
            .await
            .map_err(writer.err(format!("updating differing rows of {name}")))?;
    }

    let missing: Vec<&Fix> = of(RowDiffKind::MissingOnDestination).collect();
    if !missing.is_empty() {
        let arrays = values(plan, &missing);
        written += run(c, &sql.insert(), &arrays, None)
            .await
            .map_err(writer.err(format!("inserting missing rows of {name}")))?;
    }
    Ok(written)
}

/// One `text[]` per compared column, from the source rows.
fn values<'a>(plan: &TablePlan, fixes: &[&'a Fix]) -> Vec<Vec<Option<&'a str>>> {
    (0..plan.columns.len())
        .map(|i| {
            fixes
                .iter()
                .map(|f| f.source.as_ref().and_then(|r| r.values[i].as_deref()))
                .collect()
        })
        .collect()
}

async fn run(
    c: &tokio_postgres::Client,
    sql: &str,
    arrays: &[Vec<Option<&str>>],
    hashes: Option<&Vec<i64>>,
) -> Result<u64, tokio_postgres::Error> {
    let mut params: Vec<&(dyn ToSql + Sync)> =
        arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    if let Some(h) = hashes {
        params.push(h);
    }
    c.execute(sql, &params).await
}
