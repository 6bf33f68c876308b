//! The applier's side of inserts held back for COPY (see `copy.rs` for the rows): sending
//! a table's held-back inserts, opening the COPY that later inserts stream into, ending it.

use std::sync::Arc;

use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation};
use tokio_postgres::Statement;

use super::{Applier, Batch, Item};
use crate::copy::{ActiveCopy, CopyFormat, RowShape};
use crate::error::ApplyError;
use crate::sql::{self, Col};

impl Applier {
    /// Sends the held-back inserts of one relation: through COPY when there are enough
    /// of them, else as statements of the chunk.
    pub(super) async fn flush_run(&mut self, b: &mut Batch, oid: u32) -> Result<(), ApplyError> {
        let Some(run) = b.runs.get(&oid) else {
            return Ok(());
        };
        if run.rows.len() >= self.config.copy_min_rows {
            self.start_active(b, oid).await?;
            return self.finish_active(b).await;
        }
        let Some(run) = b.runs.remove(&oid) else {
            return Ok(());
        };
        b.run_bytes -= run.bytes;
        b.chunk
            .extend(run.rows.into_iter().map(|(c, l)| Item::Change(c, l)));
        if b.chunk.len() >= self.config.pipeline_depth.max(1) {
            self.run_chunk(b).await?;
        }
        Ok(())
    }

    /// Opens a COPY for the held-back inserts of `oid` and sends them; later inserts of
    /// the same table and shape stream into it. The chunk goes first (COPY takes over the
    /// connection until it ends).
    pub(super) async fn start_active(&mut self, b: &mut Batch, oid: u32) -> Result<(), ApplyError> {
        self.run_chunk(b).await?;
        let Some(run) = b.runs.remove(&oid) else {
            return Ok(());
        };
        b.run_bytes -= run.bytes;
        let first = run.rows.first().map(|r| r.1).unwrap_or_default();
        let stmt = self.copy_statement(&run.relation, &run.shape).await?;
        let begin = !b.began;
        let mut active = ActiveCopy::open(
            &self.client,
            &stmt,
            begin,
            Arc::clone(&run.relation),
            run.shape.clone(),
            first,
        )
        .await
        .map_err(|e| self.insert_error(e, oid, first))?;
        b.began = true;
        for (change, _) in &run.rows {
            if let Change::Insert { new, .. } = change
                && let Err(e) = active.push(new).await
            {
                return Err(self.insert_error(e, oid, first));
            }
        }
        b.active = Some(active);
        Ok(())
    }

    /// Ends the open COPY, if any.
    pub(super) async fn finish_active(&mut self, b: &mut Batch) -> Result<(), ApplyError> {
        let Some(active) = b.active.take() else {
            return Ok(());
        };
        let (oid, first) = (active.relation.oid, active.first_lsn);
        active
            .finish()
            .await
            .map_err(|e| self.insert_error(e, oid, first))?;
        Ok(())
    }

    /// The prepared COPY statement for inserts of `relation` with `shape`.
    pub(super) async fn copy_statement(
        &mut self,
        relation: &Arc<Relation>,
        shape: &RowShape,
    ) -> Result<Statement, ApplyError> {
        let key = (relation.oid, shape.clone());
        if let Some(s) = self.copies.get(&key) {
            return Ok(s.clone());
        }
        let entry = &self.tables[&relation.oid];
        let cols: Vec<&Col> = shape.columns().map(|i| &entry.cols[i]).collect();
        let text = sql::copy_in(&entry.dest, &cols, shape.format == CopyFormat::Binary);
        let stmt = self
            .client
            .prepare(&text)
            .await
            .map_err(ApplyError::pg(format!("preparing {text}")))?;
        self.copies.insert(key, stmt.clone());
        Ok(stmt)
    }

    /// A failed COPY: a unique violation is an `insert_exists` conflict.
    pub(super) fn insert_error(
        &self,
        e: tokio_postgres::Error,
        oid: u32,
        end_lsn: Lsn,
    ) -> ApplyError {
        let Some(entry) = self.tables.get(&oid) else {
            return ApplyError::pg("copying rows")(e);
        };
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            let detail = e
                .as_db_error()
                .and_then(|d| d.detail())
                .unwrap_or("a key already exists")
                .to_owned();
            return ApplyError::Conflict {
                table: entry.dest.clone(),
                kind: "insert_exists",
                detail,
                end_lsn,
            };
        }
        ApplyError::pg(format!("copying rows into {}", entry.dest))(e)
    }
}
