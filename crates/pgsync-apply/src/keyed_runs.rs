//! The applier's side of keyed runs (see `keyed.rs` for the statement and why): which
//! changes may join a run, holding them per table, and putting a run in the chunk in its
//! place.

use std::sync::Arc;

use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation};
use tokio_postgres::Statement;

use super::{Applier, Batch, Item, Op};
use crate::error::ApplyError;
use crate::keyed::{self, KeyedRun, TextArray};
use crate::pipeline::Expect;
use crate::sql::Col;

impl Applier {
    /// Whether `change` may join a keyed run, and with which shape: not while a
    /// last-writer check guards every row (each row carries its own condition).
    pub(super) fn keyed_shape(&self, change: &Change) -> Option<(Op, Vec<u16>)> {
        if self.config.keyed_min_rows < 2 || self.careful.stamp_check().is_some() {
            return None;
        }
        let relation = match change {
            Change::Update { relation, .. } | Change::Delete { relation, .. } => relation,
            _ => return None,
        };
        keyed::shape_of(change, self.tables.get(&relation.oid)?)
    }

    /// Adds `change` to its table's keyed run (starting one, or putting a run of another
    /// shape, or one that has the key already, in the chunk first). `Some(change)`: it
    /// cannot go in a run after all.
    pub(super) async fn push_keyed(
        &mut self,
        b: &mut Batch,
        change: Change,
        end_lsn: Lsn,
        op: Op,
        set: Vec<u16>,
    ) -> Result<Option<Change>, ApplyError> {
        let Some(relation) = change_relation(&change) else {
            return Ok(Some(change));
        };
        let oid = relation.oid;
        let change = match b.keyed.get_mut(&oid) {
            Some(run) => match run.try_push(change, end_lsn, op, &set, &self.tables[&oid]) {
                Ok(()) => {
                    if run.rows.len() >= self.config.keyed_max_rows.max(2) {
                        self.flush_keyed(b, oid).await?;
                    }
                    return Ok(None);
                }
                Err(change) => {
                    self.flush_keyed(b, oid).await?;
                    change
                }
            },
            None => change,
        };
        let mut run = KeyedRun::new(relation, op, set.clone());
        match run.try_push(change, end_lsn, op, &set, &self.tables[&oid]) {
            Ok(()) => {
                b.keyed.insert(oid, run);
                Ok(None)
            }
            Err(change) => Ok(Some(change)),
        }
    }

    /// Puts the keyed run of `oid` in the chunk, in its place: as one statement, or as
    /// single-row statements when it has too few rows to be worth it.
    pub(super) async fn flush_keyed(&mut self, b: &mut Batch, oid: u32) -> Result<(), ApplyError> {
        let Some(run) = b.keyed.remove(&oid) else {
            return Ok(());
        };
        if run.rows.len() >= self.config.keyed_min_rows {
            b.chunk.push(Item::Keyed(run));
        } else {
            b.chunk
                .extend(run.rows.into_iter().map(|(c, l)| Item::Change(c, l)));
        }
        if b.chunk.len() >= self.config.pipeline_depth.max(1) {
            self.run_chunk(b).await?;
        }
        Ok(())
    }

    /// The prepared statement and arrays of a keyed run.
    pub(super) async fn keyed_statement(
        &mut self,
        run: &KeyedRun,
    ) -> Result<(Statement, Vec<TextArray>, Expect), ApplyError> {
        let oid = run.relation.oid;
        let entry = &self.tables[&oid];
        let arrays = run.arrays(entry);
        let expect = Expect {
            op: run.op,
            relation: oid,
            describe_key: format!("one of {} keys written together", run.rows.len()),
            rows: run.rows.len() as u64,
        };
        let key = (oid, run.op, run.set.clone());
        if let Some(stmt) = self.keyed_statements.get(&key) {
            return Ok((stmt.clone(), arrays, expect));
        }
        let keys: Vec<&Col> = entry.key.iter().map(|&i| &entry.cols[i]).collect();
        let set: Vec<&Col> = run.set.iter().map(|&i| &entry.cols[i as usize]).collect();
        let text = keyed::statement(&entry.dest, run.op, &keys, &set);
        let stmt = self
            .client
            .prepare(&text)
            .await
            .map_err(ApplyError::pg(format!("preparing {text}")))?;
        self.keyed_statements.insert(key, stmt.clone());
        Ok((stmt, arrays, expect))
    }
}

/// The relation a row change is on.
fn change_relation(change: &Change) -> Option<Arc<Relation>> {
    match change {
        Change::Insert { relation, .. }
        | Change::Update { relation, .. }
        | Change::Delete { relation, .. } => Some(Arc::clone(relation)),
        _ => None,
    }
}
