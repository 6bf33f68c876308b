//! Applying a large streamed transaction while it arrives.
//!
//! With protocol 2 and later the server streams a transaction that outgrows
//! `logical_decoding_work_mem` before it commits, in blocks. Held until its Stream
//! Commit and only then applied, a bulk load costs decoding plus transfer plus apply, one
//! after the other. Applied as the blocks arrive, in a destination transaction left open
//! until the commit, apply overlaps decoding and transfer (the rows of a bulk load stream
//! into one COPY), and the commit only finishes what is already written.
//!
//! Commit order makes this safe only while the streamed transaction is the one thing under
//! way: the destination connection is the applier's only one, so a transaction that
//! commits on the source before it (any other transaction completed meanwhile, another
//! streamed transaction, a subtransaction abort) ends the early work — it is rolled back,
//! and the transaction is applied whole at its commit as usual, from the assembler's copy.
//! So do changes whose handling needs the end LSN or the commit time: a table whose initial
//! copy may already contain them, logical messages (DDL), and configurations whose fast
//! path depends on the group's commit time (the last-writer check) or goes careful at once
//! (delta columns, tombstones). Any error rolls the early work back the same way; the
//! whole-transaction path then meets it again and handles it (the careful path for a
//! conflict).
//!
//! Exactly once holds as for groups: the progress row and the origin setup go with the
//! COMMIT, and a transaction at or below the progress (sent again after a restart) is
//! rolled back at its commit instead of committed.

use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Transaction};

use super::{Applier, Batch};
use crate::error::ApplyError;

/// A streamed transaction being applied before its commit.
#[derive(Debug)]
pub(super) struct Eager {
    xid: u32,
    batch: Batch,
    changes: u64,
}

impl Applier {
    /// Whether streamed transactions may be applied before their commit under this
    /// configuration (see the module documentation).
    pub fn eager_possible(&self) -> bool {
        self.careful.stamp_check().is_none()
            && self
                .config
                .conflicts
                .as_ref()
                .is_none_or(|h| h.delta_columns.is_empty() && !h.tombstones)
    }

    /// The streamed transaction being applied before its commit, if any.
    pub fn eager_xid(&self) -> Option<u32> {
        self.eager.as_ref().map(|e| e.xid)
    }

    /// Applies `change` of streamed transaction `xid`, read at `lsn`, now, in a
    /// destination transaction left open until [`Self::eager_commit`]. The caller must
    /// have applied every transaction that committed before the first such change, and
    /// must call [`Self::eager_abandon`] as soon as any other transaction completes. False
    /// when the change cannot be applied early: everything done early for `xid` is then
    /// rolled back, and the transaction must be applied whole at its commit.
    pub async fn eager_change(&mut self, xid: u32, change: Change, lsn: Lsn) -> bool {
        if !self.eager_possible() || self.eager.as_ref().is_some_and(|e| e.xid != xid) {
            self.eager_abandon().await;
            return false;
        }
        let mut e = self.eager.take().unwrap_or_else(|| Eager {
            xid,
            batch: Batch::default(),
            changes: 0,
        });
        match self.eager_push(&mut e.batch, change, lsn).await {
            Ok(true) => {
                e.changes += 1;
                self.eager = Some(e);
                true
            }
            Ok(false) => {
                self.rollback_eager(e).await;
                false
            }
            Err(err) => {
                tracing::debug!(xid, error = %err, "applying the streamed transaction at its commit instead");
                self.rollback_eager(e).await;
                false
            }
        }
    }

    /// Rolls back what was applied early, if anything.
    pub async fn eager_abandon(&mut self) {
        if let Some(e) = self.eager.take() {
            self.rollback_eager(e).await;
        }
    }

    /// Commits `txn` when it is the streamed transaction applied early: true when it is
    /// handled (committed, or rolled back as already applied). False when there was no
    /// early work for it, or it failed to finish: the caller applies it whole.
    pub async fn eager_commit(&mut self, txn: &Transaction) -> Result<bool, ApplyError> {
        let Some(e) = self.eager.take() else {
            return Ok(false);
        };
        if e.xid != txn.xid || !txn.streamed {
            self.rollback_eager(e).await;
            return Ok(false);
        }
        if txn.end_lsn <= self.progress {
            // Sent again after a restart: it was applied before.
            self.rollback_eager(e).await;
            return Ok(true);
        }
        let Eager {
            mut batch, changes, ..
        } = e;
        if let Err(err) = self.finish_eager(&mut batch, txn).await {
            tracing::debug!(xid = txn.xid, error = %err, "applying the streamed transaction whole instead");
            drop(batch);
            let _ = self.client.batch_execute("ROLLBACK").await;
            return Ok(false);
        }
        self.commit(txn).await?;
        tracing::debug!(xid = txn.xid, changes, end = %txn.end_lsn, "streamed transaction applied as it arrived");
        Ok(true)
    }

    /// One change into the early batch; false when it cannot go early.
    async fn eager_push(
        &mut self,
        b: &mut Batch,
        change: Change,
        lsn: Lsn,
    ) -> Result<bool, ApplyError> {
        let relations = match &change {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => std::slice::from_ref(relation),
            Change::Truncate { relations, .. } => relations.as_slice(),
            _ => return Ok(false),
        };
        if self.ddl_hooks(&change) {
            return Ok(false);
        }
        self.resolve_in(&change, b).await?;
        // The end LSN lies beyond `lsn`: a table copied as of `lsn` or later may hold the
        // change already, which only the end LSN can tell.
        if relations
            .iter()
            .any(|r| self.allowed(r) && self.tables[&r.oid].copied_at >= lsn)
        {
            return Ok(false);
        }
        if self.in_copy(&change, Lsn(u64::MAX)) {
            return Ok(true);
        }
        self.route(change, lsn, b).await?;
        Ok(true)
    }

    /// Sends what is held back and the origin setup; the transaction stays open for
    /// [`Self::commit`].
    async fn finish_eager(&mut self, b: &mut Batch, txn: &Transaction) -> Result<(), ApplyError> {
        self.finish_active(b).await?;
        self.flush_runs(b).await?;
        b.setup = Some((txn.end_lsn.to_string(), txn.commit_time.unix_micros()));
        self.run_chunk(b).await
    }

    async fn rollback_eager(&mut self, e: Eager) {
        let began = e.batch.began;
        // An open COPY is abandoned (CopyFail) when dropped.
        drop(e);
        if began {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
    }
}
