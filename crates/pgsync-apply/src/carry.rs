//! Carrying out a [`Resolution`] on the rows a look found: evictions first, then the
//! write the decision calls for, every row addressed by the `ctid` it was locked at.
//!
//! | decision            | insert            | update                     | delete      |
//! |---------------------|-------------------|----------------------------|-------------|
//! | `apply_remote`      | INSERT            | UPDATE old row (+ deltas)  | DELETE old  |
//! | `convert_to_insert` | —                 | INSERT new image           | —           |
//! | `convert_to_update` | UPDATE key's row  | UPDATE new key's row       | —           |
//! | `convert_to_delete` | —                 | DELETE old row             | —           |
//! | `keep_local`        | nothing           | deltas only, if any        | nothing     |
//! | `skip`              | nothing           | nothing                    | nothing     |
//!
//! Delta columns are written as `col = col + ($new::type - $old::type)`: the destination's
//! current value plus what the source transaction added, so increments made on both nodes
//! all count.

use pgsync_conflict::{Decision, Eviction, Resolution};
use pgsync_names::sql::Ident;
use pgsync_wal::Tuple;
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::error::ApplyError;
use crate::look::{Ctx, Looked, RowOp};
use crate::param::Param;
use crate::probe::{Found, Prober};
use crate::sql::{self, Col};

pub(crate) async fn carry_out(
    ctx: &Ctx<'_>,
    prober: &mut Prober,
    op: RowOp<'_>,
    looked: &Looked,
    res: &Resolution,
) -> Result<(), ApplyError> {
    for e in &res.evict {
        let row = match e {
            Eviction::NewKeyRow => looked.new.as_ref(),
            Eviction::Collision(i) => looked.collisions.get(*i),
        };
        if let Some(row) = row {
            delete(ctx, prober, row).await?;
        }
    }
    let deltas = !res.delta_columns.is_empty();
    match (&res.decision, op) {
        (Decision::ApplyRemote, RowOp::Insert(n))
        | (Decision::ConvertToInsert, RowOp::Update(_, n)) => insert(ctx, prober, n).await,
        (Decision::ApplyRemote, RowOp::Update(o, n)) => match &looked.old {
            Some(row) => update(ctx, prober, row, n, o.filter(|_| deltas), false).await,
            None => Ok(()),
        },
        (Decision::ApplyRemote | Decision::ConvertToDelete, _) => match &looked.old {
            Some(row) => delete(ctx, prober, row).await,
            None => Ok(()),
        },
        (Decision::ConvertToUpdate, RowOp::Insert(n) | RowOp::Update(_, n)) => match &looked.new {
            Some(row) => update(ctx, prober, row, n, None, false).await,
            None => Ok(()),
        },
        (Decision::KeepLocal, RowOp::Update(o, n)) if deltas => match &looked.old {
            Some(row) => update(ctx, prober, row, n, o, true).await,
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

async fn run(
    ctx: &Ctx<'_>,
    prober: &mut Prober,
    text: String,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, ApplyError> {
    let stmt = prober.prepared(ctx.client, text).await?;
    ctx.client.execute(&stmt, params).await.map_err(|e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            let detail = e
                .as_db_error()
                .and_then(|d| d.detail())
                .unwrap_or("a key already exists")
                .to_owned();
            ApplyError::Conflict {
                table: ctx.entry.dest.clone(),
                kind: "insert_exists",
                detail,
                end_lsn: pgsync_wal::Lsn::INVALID,
            }
        } else {
            ApplyError::pg(format!("applying a change to {}", ctx.entry.dest))(e)
        }
    })
}

/// A row the careful path locked has gone: someone else's write won a race.
fn vanished(ctx: &Ctx<'_>) -> ApplyError {
    ApplyError::Conflict {
        table: ctx.entry.dest.clone(),
        kind: "update_missing",
        detail: "a locked row changed place".into(),
        end_lsn: pgsync_wal::Lsn::INVALID,
    }
}

async fn insert(ctx: &Ctx<'_>, prober: &mut Prober, n: &Tuple) -> Result<(), ApplyError> {
    let mut cols: Vec<&Col> = Vec::new();
    let mut params: Vec<Param<'_>> = Vec::new();
    for (i, v) in n.iter().enumerate() {
        if let Some(p) = Param::from_column(v) {
            cols.push(&ctx.entry.cols[i]);
            params.push(p);
        }
    }
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    run(ctx, prober, sql::insert(&ctx.entry.dest, &cols), &refs).await?;
    Ok(())
}

async fn delete(ctx: &Ctx<'_>, prober: &mut Prober, row: &Found) -> Result<(), ApplyError> {
    let text = format!("DELETE FROM {} WHERE ctid = $1::text::tid", ctx.entry.dest);
    if run(ctx, prober, text, &[&row.ctid]).await? == 0 {
        return Err(vanished(ctx));
    }
    Ok(())
}

/// `UPDATE t SET ... WHERE ctid = ...` with the new image's sent columns; with `old`,
/// delta columns as differences; with `only_deltas`, nothing else.
async fn update(
    ctx: &Ctx<'_>,
    prober: &mut Prober,
    row: &Found,
    n: &Tuple,
    old: Option<&OldTuple>,
    only_deltas: bool,
) -> Result<(), ApplyError> {
    let old = match old {
        Some(OldTuple::Full(t)) => Some(t),
        _ => None,
    };
    let mut sets = Vec::new();
    let mut params: Vec<Param<'_>> = Vec::new();
    for (i, v) in n.iter().enumerate() {
        let Some(p) = Param::from_column(v) else {
            continue;
        };
        // UPDATE cannot set a `GENERATED ALWAYS AS IDENTITY` column. As a key it holds the
        // value the row was found by already; a non-key one keeps the destination's value.
        if ctx.entry.always_identity.get(i).copied().unwrap_or(false) {
            continue;
        }
        let col = &ctx.entry.cols[i];
        let before = old
            .filter(|_| ctx.table.delta.contains(&i))
            .and_then(|t| t.get(i))
            .filter(|b| matches!(b, ColumnValue::Text(_) | ColumnValue::Binary(_)))
            .and_then(Param::from_column)
            .filter(|_| !matches!(p, Param::Null));
        match before {
            Some(b) => {
                let name = Ident(&col.name);
                let (x, y) = (params.len() + 1, params.len() + 2);
                sets.push(format!(
                    "{name} = {name} + (${x}::{ty} - ${y}::{ty})",
                    ty = col.type_name
                ));
                params.push(p);
                params.push(b);
            }
            None if only_deltas => {}
            None => {
                sets.push(format!("{} = ${}", Ident(&col.name), params.len() + 1));
                params.push(p);
            }
        }
    }
    if sets.is_empty() {
        return Ok(());
    }
    let text = format!(
        "UPDATE {} SET {} WHERE ctid = ${}::text::tid",
        ctx.entry.dest,
        sets.join(", "),
        params.len() + 1
    );
    let mut refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    refs.push(&row.ctid);
    if run(ctx, prober, text, &refs).await? == 0 {
        return Err(vanished(ctx));
    }
    Ok(())
}
