//! From one incoming row change to a [`Situation`]: which rows sit at the keys it touches,
//! who last wrote them, what tombstones say about empty keys, and which other rows hold
//! its new UNIQUE values.
//!
//! ```text
//!   insert k        new slot k                                  + collisions(new image)
//!   update k        old slot k   [+ new slot k' if the key moves] + collisions(new image)
//!   delete k        old slot k
//! ```
//! A slot without a row asks the tombstones (last-write-wins with tombstones on); rows
//! already found as a slot are not collisions. Delta columns are declared for an update
//! that carries the whole old row (`REPLICA IDENTITY FULL`) and keeps its key.

use pgsync_conflict::{Absence, Collision, IncomingChange, Situation, Slot, WriteStamp};
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use pgsync_wal::{Lsn, Tuple};
use tokio_postgres::Client;

use crate::conflicts::ConflictHandling;
use crate::error::ApplyError;
use crate::probe::{CarefulTable, Found, Lookup, Nodes, Prober, RowMatch, tuple_json};
use crate::tables::TableEntry;
use crate::tombstones;

/// One row change as the careful path sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowOp<'c> {
    Insert(&'c Tuple),
    Update(Option<&'c OldTuple>, &'c Tuple),
    Delete(&'c OldTuple),
}

/// What a look needs.
pub(crate) struct Ctx<'a> {
    pub(crate) client: &'a Client,
    pub(crate) entry: &'a TableEntry,
    pub(crate) table: &'a CarefulTable,
    pub(crate) handling: &'a ConflictHandling,
    pub(crate) nodes: &'a Nodes<'a>,
}

/// The situation and the rows behind it (their `ctid`s are what the write addresses).
#[derive(Debug)]
pub(crate) struct Looked {
    pub(crate) situation: Situation,
    /// The row at the old key (update, delete).
    pub(crate) old: Option<Found>,
    /// The row at the new key (insert, key-changing update).
    pub(crate) new: Option<Found>,
    /// Rows colliding on other UNIQUE indexes, in the situation's collision order.
    pub(crate) collisions: Vec<Found>,
}

pub(crate) async fn look(
    ctx: &Ctx<'_>,
    prober: &mut Prober,
    stamp: &WriteStamp,
    source_lsn: Lsn,
    op: RowOp<'_>,
) -> Result<Looked, ApplyError> {
    let entry = ctx.entry;
    let key_cols = match &ctx.table.matching {
        RowMatch::Key(k) => Some(k.as_slice()),
        RowMatch::FullRow => None,
    };
    let (addr, new): (Option<&Tuple>, Option<&Tuple>) = match op {
        RowOp::Insert(n) => (None, Some(n)),
        RowOp::Update(o, n) => (Some(o.map_or(n, OldTuple::tuple)), Some(n)),
        RowOp::Delete(o) => (Some(o.tuple()), None),
    };
    let image = new.or(addr).map(|t| tuple_json(entry, t, None));
    let key = key_cols.and_then(|k| addr.or(new).map(|t| tuple_json(entry, t, Some(k))));
    let mut incoming =
        IncomingChange::new(entry.dest.clone(), stamp.clone(), source_lsn).with_images(key, image);
    if new.is_some_and(Tuple::has_unchanged) {
        incoming = incoming.with_incomplete_image();
    }

    let mut old_found = None;
    let mut new_found = None;
    let situation = match op {
        RowOp::Insert(n) => {
            new_found = find_at_key(ctx, prober, n).await?;
            let slot = slot(ctx, &new_found, n).await?;
            Situation::insert(incoming, slot)
        }
        RowOp::Update(o, n) => {
            let a = o.map_or(n, OldTuple::tuple);
            old_found = find_old(ctx, prober, o, a).await?;
            let old_slot = slot(ctx, &old_found, a).await?;
            let moves = match key_cols {
                Some(k) => o.is_some() && k.iter().any(|&i| a.get(i) != n.get(i)),
                None => false,
            };
            let whole_old = matches!(o, Some(OldTuple::Full(_)));
            if moves {
                new_found = find_at_key(ctx, prober, n).await?;
                let new_slot = slot(ctx, &new_found, n).await?;
                Situation::update_moving_key(incoming, old_slot, new_slot)
            } else if whole_old && !ctx.table.delta.is_empty() {
                let names = ctx.table.delta.iter().map(|&i| entry.cols[i].name.clone());
                Situation::update(incoming, old_slot).with_delta_columns(names)
            } else {
                Situation::update(incoming, old_slot)
            }
        }
        RowOp::Delete(o) => {
            old_found = find_old(ctx, prober, Some(o), o.tuple()).await?;
            let slot = slot(ctx, &old_found, o.tuple()).await?;
            Situation::delete(incoming, slot)
        }
    };

    let mut situation = situation;
    let mut collisions: Vec<Found> = Vec::new();
    if let Some(n) = new {
        for u in &ctx.table.uniques {
            let usable = u.cols.iter().all(|&i| {
                !matches!(
                    n.get(i),
                    None | Some(ColumnValue::Null | ColumnValue::Unchanged)
                )
            });
            if !usable {
                continue;
            }
            let Some(found) = prober
                .find(
                    ctx.client,
                    entry,
                    Lookup::Columns(n, &u.cols),
                    key_cols,
                    ctx.nodes,
                )
                .await?
            else {
                continue;
            };
            let known = old_found
                .iter()
                .chain(new_found.iter())
                .chain(collisions.iter())
                .any(|f| f.ctid == found.ctid);
            if known {
                continue;
            }
            situation = situation.with_collision(Collision {
                constraint: u.name.clone(),
                row: found.row.clone(),
            });
            collisions.push(found);
        }
    }
    Ok(Looked {
        situation,
        old: old_found,
        new: new_found,
        collisions,
    })
}

/// The row at the key `t` carries (none for tables matched by the whole row).
async fn find_at_key(
    ctx: &Ctx<'_>,
    prober: &mut Prober,
    t: &Tuple,
) -> Result<Option<Found>, ApplyError> {
    match &ctx.table.matching {
        RowMatch::Key(k) => {
            prober
                .find(
                    ctx.client,
                    ctx.entry,
                    Lookup::Columns(t, k),
                    Some(k),
                    ctx.nodes,
                )
                .await
        }
        RowMatch::FullRow => Ok(None),
    }
}

/// The row an update or delete addresses: by key, or by the whole old row.
async fn find_old(
    ctx: &Ctx<'_>,
    prober: &mut Prober,
    old: Option<&OldTuple>,
    addr: &Tuple,
) -> Result<Option<Found>, ApplyError> {
    match (&ctx.table.matching, old) {
        (RowMatch::Key(_), _) => find_at_key(ctx, prober, addr).await,
        (RowMatch::FullRow, Some(OldTuple::Full(t))) => {
            prober
                .find(ctx.client, ctx.entry, Lookup::WholeRow(t), None, ctx.nodes)
                .await
        }
        (RowMatch::FullRow, _) => Ok(None),
    }
}

/// A slot: the row found, or what the tombstones know about the empty key.
async fn slot(ctx: &Ctx<'_>, found: &Option<Found>, t: &Tuple) -> Result<Slot, ApplyError> {
    if let Some(f) = found {
        return Ok(Slot::Present(f.row.clone()));
    }
    match (&ctx.table.matching, ctx.handling.tombstones) {
        (RowMatch::Key(k), true) => Ok(Slot::Missing(
            tombstones::absence(ctx.client, ctx.entry, t, k, ctx.nodes.local).await?,
        )),
        _ => Ok(Slot::Missing(Absence::NEVER_DELETED)),
    }
}
