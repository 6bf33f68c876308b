//! The careful path: a group that hit a surprise on the fast path (an UPDATE or DELETE
//! that found no row, a unique violation, a row written later by the other node) is rolled
//! back and replayed here, one destination transaction per source transaction, statement
//! by statement:
//!
//! ```text
//!  BEGIN
//!   for each change:  probe the slots and UNIQUE collisions (rows locked, last writers,
//!                     tombstones)  ->  Situation  ->  decide (policies) / Resolver
//!                     ->  evict blocking rows, write (as is, converted, deltas) or skip
//!                     ->  conflict records
//!   INSERT INTO pgsync.conflicts ...          (in the same transaction)
//!   progress row + pg_replication_origin_xact_setup(end_lsn, commit_time)
//!  COMMIT
//! ```
//!
//! Exactly-once holds as on the fast path: the progress row and the origin's progress
//! commit with the rows and the log. A `fail` decision rolls the transaction back, logs
//! the conflict in a transaction of its own and stops the task with
//! [`ApplyError::Conflict`]: nothing is skipped, and after the data is fixed the same
//! transaction is applied on restart.
//!
//! An application on the destination may write the same key between the look and the
//! write (a row inserted after the probe found none): the write then fails with a unique
//! violation, and the source transaction is replayed from its start, a few times at most.

use std::collections::HashMap;
use std::sync::Arc;

use pgsync_conflict::{
    CommitTime, ConflictCounters, ConflictKind, ConflictRecord, Decision, Policy, WriteStamp,
};
use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation, Transaction};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::{Applier, ApplierConfig};
use crate::conflicts::ConflictHandling;
use crate::error::ApplyError;
use crate::guard::{self, Guard};
use crate::look::{self, RowOp};
use crate::probe::{CarefulTable, Nodes, Prober, RowMatch};
use crate::{carry, conflict_log, sql, tombstones};

/// How often a source transaction is replayed after an application wrote the same key
/// between the careful path's look and its write.
const RACE_RETRIES: usize = 3;

/// Source transactions applied on the fast path right after a careful one (see
/// `recover`).
const FIRST_SPAN: usize = 16;

/// How often the fast path prunes tombstones.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The careful path's state, kept by the applier.
#[derive(Debug, Default)]
pub(crate) struct CarefulState {
    /// Per source relation: the layout it was built for and what the careful path knows.
    tables: HashMap<u32, (Arc<Relation>, CarefulTable)>,
    prober: Prober,
    counters: ConflictCounters,
    /// Whether the destination keeps commit timestamps (last writers are readable).
    commit_timestamps: bool,
    /// The fast path's last-writer check, when newer local rows must be detected:
    /// whether the local node wins a tie.
    stamp_check: Option<bool>,
    /// The earliest commit time (PostgreSQL micros) of the group on the fast path.
    group_min_time: i64,
    /// The fast path's group: (end LSN, commit time) per source transaction.
    times: Vec<(Lsn, i64)>,
    /// The source transaction whose statement is being built: commit time, end LSN.
    current: Option<(i64, Lsn)>,
    /// Newer local rows kept and logged by the fast path's statements themselves.
    guard: Option<Guard>,
    /// The conflict log's INSERT, prepared once.
    log_insert: Option<tokio_postgres::Statement>,
    /// When tombstones were last pruned.
    pruned_at: Option<std::time::Instant>,
    /// Whether the last careful transaction failed on a write that raced an application
    /// (worth replaying), rather than on a decision.
    raced: bool,
}

/// The outcome of one change.
enum Step {
    Done,
    Failed {
        kind: &'static str,
        table: pgsync_names::QualifiedName,
        reason: String,
    },
}

impl CarefulState {
    /// Drops what was read of the destination's tables (after replayed DDL).
    pub(crate) fn forget_layouts(&mut self) {
        self.tables.clear();
        self.prober.forget();
    }

    /// Reads what the careful path needs from the destination and creates the log table.
    pub(crate) async fn setup(client: &Client, config: &ApplierConfig) -> Result<Self, ApplyError> {
        let Some(h) = config.conflicts.as_ref() else {
            return Ok(Self::default());
        };
        client
            .batch_execute(conflict_log::CONFLICTS_TABLE)
            .await
            .map_err(ApplyError::pg("creating pgsync.conflicts"))?;
        if h.tombstones {
            tombstones::setup(client).await?;
        }
        let on: String = client
            .query_one("SHOW track_commit_timestamp", &[])
            .await
            .map_err(ApplyError::pg("reading track_commit_timestamp"))?
            .get(0);
        let commit_timestamps = on == "on";
        let stamp_check =
            (commit_timestamps && h.detects_newer_local()).then(|| h.local_wins_ties());
        let keeps = |kind| match h.policies.for_kind(kind) {
            Policy::LastWriteWins | Policy::Ignore if h.resolver.is_none() => {
                Some(h.policies.for_kind(kind).as_str())
            }
            _ => None,
        };
        let guard = stamp_check.map(|local_wins_ties| Guard {
            origin: config.origin.clone(),
            local_node: h.local_node.as_str().to_owned(),
            remote_node: h.remote_node.as_str().to_owned(),
            update_policy: keeps(ConflictKind::UpdateNewerLocal),
            delete_policy: keeps(ConflictKind::DeleteNewerLocal),
            local_wins_ties,
        });
        let log_insert = Some(conflict_log::prepare(client).await?);
        Ok(Self {
            commit_timestamps,
            stamp_check,
            guard,
            log_insert,
            ..Self::default()
        })
    }

    /// Conflicts counted since the applier started.
    pub(crate) fn counters(&self) -> ConflictCounters {
        self.counters
    }

    /// The fast path's last-writer check for this group: `(local wins ties, earliest
    /// commit time of the group)`. A row that passes it was last written before every
    /// change of the group (or by the source node), so the fast path may overwrite it;
    /// one that does not makes the statement report no row, and the group goes careful.
    pub(crate) fn stamp_check(&self) -> Option<(bool, i64)> {
        let time = self.current.map_or(self.group_min_time, |(t, _)| t);
        self.stamp_check.map(|ties| (ties, time))
    }

    /// The statements built next are for the source transaction ending at `end_lsn`.
    pub(crate) fn at(&mut self, end_lsn: Lsn) {
        self.current = self
            .times
            .binary_search_by(|(l, _)| l.cmp(&end_lsn))
            .ok()
            .map(|i| (self.times[i].1, end_lsn));
    }

    /// The source commit LSN of the current transaction, for a guarded statement.
    pub(crate) fn current_lsn(&self) -> i64 {
        self.current
            .map_or(0, |(_, l)| i64::try_from(l.0).unwrap_or(i64::MAX))
    }

    /// The guarded UPDATE or DELETE text (see `guard.rs`), when newer local rows are kept
    /// by the policy: the statement then takes the commit LSN as its last parameter.
    pub(crate) fn guarded(
        &self,
        table: &pgsync_names::QualifiedName,
        delete: bool,
        set: &[&crate::sql::Col],
        whr: &[&crate::sql::Col],
        how: crate::sql::Match,
        key_moves: Option<String>,
    ) -> Option<String> {
        guard::statement(
            self.guard.as_ref()?,
            table,
            delete,
            set,
            whr,
            how,
            key_moves,
        )
    }

    /// Whether statements of `op` are guarded.
    pub(crate) fn guards(&self, delete: bool) -> bool {
        self.guard.as_ref().is_some_and(|g| {
            if delete {
                g.delete_policy.is_some()
            } else {
                g.update_policy.is_some()
            }
        })
    }
}

impl Applier {
    /// Conflicts detected (and committed, or stopped at) since the applier started, per
    /// kind. The durable record is `pgsync.conflicts`.
    pub fn conflict_counters(&self) -> ConflictCounters {
        self.careful.counters()
    }

    /// The source transaction a fast-path conflict `e` happened in, when the careful path
    /// takes conflicts.
    pub(super) fn conflict_at(&self, e: &ApplyError) -> Option<Lsn> {
        match e {
            ApplyError::Conflict { end_lsn, .. } if self.config.conflicts.is_some() => {
                Some(*end_lsn)
            }
            _ => None,
        }
    }

    /// Prepares the fast path for `todo`; returns the first transaction that must go
    /// careful at once: one updating a table with delta columns, or one inserting a key
    /// that a local delete after it left a tombstone for.
    pub(super) async fn careful_first(
        &mut self,
        todo: &[&Transaction],
    ) -> Result<Option<Lsn>, ApplyError> {
        let Some(h) = self.config.conflicts.clone() else {
            return Ok(None);
        };
        self.careful.group_min_time = todo.iter().map(|t| t.commit_time.0).min().unwrap_or(0);
        self.careful.times = todo.iter().map(|t| (t.end_lsn, t.commit_time.0)).collect();
        self.careful.current = None;
        if h.delta_columns.is_empty() && !h.tombstones {
            return Ok(None);
        }
        // Tombstones older than what arrives now (less the margin) are no longer needed.
        if h.tombstones
            && self
                .careful
                .pruned_at
                .is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            tombstones::prune(&self.client, Some(self.careful.group_min_time)).await?;
            self.careful.pruned_at = Some(std::time::Instant::now());
        }
        let mut inserts = tombstones::Inserts::default();
        for txn in todo {
            for change in txn.changes() {
                let change = change?;
                let relation = match &change {
                    Change::Insert { relation, .. } | Change::Update { relation, .. } => relation,
                    _ => continue,
                };
                let dest = self.config.mapping.table(&relation.name);
                match &change {
                    Change::Update { .. } if h.delta_columns.contains_key(&dest) => {
                        return Ok(Some(txn.end_lsn));
                    }
                    Change::Insert { relation, new } if h.tombstones && self.allowed(relation) => {
                        // Keys are compared once the table is known; before that, any
                        // newer tombstone of the table counts.
                        let known = self.tables.get(&relation.oid).filter(|e| {
                            Arc::ptr_eq(&e.relation, relation) || *e.relation == **relation
                        });
                        inserts.push(&dest, known.map(|e| (e, new)), txn);
                    }
                    _ => {}
                }
            }
        }
        if inserts.is_empty() {
            return Ok(None);
        }
        inserts.first_refused(&self.client).await
    }

    /// Finishes a group whose fast path met a conflict in the source transaction ending
    /// at `at`: the transactions before it go again on the fast path, that one on the
    /// careful path, the rest on the fast path, and so on. A hot key then costs one
    /// careful transaction, not a careful group.
    ///
    /// The rest goes in spans: [`FIRST_SPAN`] transactions after a conflict, twice as
    /// many after each span that applied cleanly, half as many after one that did not.
    /// A group with a conflict every few transactions (two nodes writing the same keys,
    /// a large group read during a slow apply) then resends a few transactions per
    /// conflict, not its whole tail each time.
    pub(super) async fn recover(
        &mut self,
        todo: &[&Transaction],
        at: Lsn,
    ) -> Result<(), ApplyError> {
        let mut rest: &[&Transaction] = todo;
        let mut at = Some(at);
        let mut span = FIRST_SPAN;
        loop {
            if let Some(culprit) = at.take() {
                let Some(k) = rest.iter().position(|t| t.end_lsn == culprit) else {
                    return self.apply_carefully(rest).await;
                };
                tracing::debug!(k, of = rest.len(), at = %culprit, "replaying a transaction on the careful path");
                if k > 0
                    && let Some(earlier) = self.fast(&rest[..k]).await?
                {
                    at = Some(earlier);
                    continue;
                }
                self.apply_carefully(&rest[k..=k]).await?;
                rest = &rest[k + 1..];
            }
            if rest.is_empty() {
                return Ok(());
            }
            let n = span.min(rest.len());
            match self.fast(&rest[..n]).await? {
                None => {
                    rest = &rest[n..];
                    span = span.saturating_mul(2);
                }
                Some(next) => {
                    at = Some(next);
                    span = (span / 2).max(1);
                }
            }
        }
    }

    /// The fast path for `todo` (all above the progress), committed. `Some(at)`: nothing
    /// was applied, and the source transaction ending at `at` needs the careful path.
    async fn fast(&mut self, todo: &[&Transaction]) -> Result<Option<Lsn>, ApplyError> {
        let Some(last) = todo.last().copied() else {
            return Ok(None);
        };
        if let Some(at) = self.careful_first(todo).await? {
            return Ok(Some(at));
        }
        let mut batch = super::Batch::default();
        if let Err(e) = self.apply_changes(todo, last, &mut batch).await {
            drop(batch);
            let _ = self.client.batch_execute("ROLLBACK").await;
            return match self.conflict_at(&e) {
                Some(at) => {
                    tracing::debug!(error = %e, "conflict on the fast path");
                    Ok(Some(at))
                }
                None => Err(e),
            };
        }
        self.commit(last).await?;
        Ok(None)
    }

    /// Replays `todo` on the careful path, one destination transaction per source
    /// transaction.
    pub(super) async fn apply_carefully(
        &mut self,
        todo: &[&Transaction],
    ) -> Result<(), ApplyError> {
        let Some(h) = self.config.conflicts.clone() else {
            return Ok(());
        };
        for txn in todo {
            if txn.end_lsn <= self.progress {
                continue;
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.apply_one_carefully(&h, txn).await {
                    Err(e @ ApplyError::Conflict { .. })
                        if self.careful.raced && attempt < RACE_RETRIES =>
                    {
                        tracing::debug!(error = %e, "a destination write raced the careful path; replaying the transaction");
                    }
                    other => {
                        other?;
                        break;
                    }
                }
            }
        }
        if h.tombstones {
            tombstones::prune(&self.client, todo.last().map(|t| t.commit_time.0)).await?;
        }
        Ok(())
    }

    async fn apply_one_carefully(
        &mut self,
        h: &ConflictHandling,
        txn: &Transaction,
    ) -> Result<(), ApplyError> {
        self.careful.raced = false;
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(ApplyError::pg("starting a careful transaction"))?;
        let mut records = Vec::new();
        let outcome = self.careful_changes(h, txn, &mut records).await;
        let outcome = match outcome {
            Ok(Step::Done) => conflict_log::write(
                &self.client,
                self.careful.log_insert.as_ref(),
                &self.config.origin,
                &records,
            )
            .await
            .map(|()| Step::Done),
            other => other,
        };
        match outcome {
            Ok(Step::Done) => {
                let (lsn, micros) = (txn.end_lsn.to_string(), txn.commit_time.unix_micros());
                let params: [&(dyn ToSql + Sync); 3] = [&lsn, &micros, &self.config.origin];
                if let Err(e) = self.client.execute(&self.xact_setup, &params).await {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    return Err(ApplyError::pg("recording progress")(e));
                }
                self.commit(txn).await?;
                tracing::debug!(end_lsn = %txn.end_lsn, commit_time = txn.commit_time.0, conflicts = records.len(), "careful transaction applied");
                for r in &records {
                    self.careful.counters.add(r.kind);
                }
                Ok(())
            }
            Ok(Step::Failed {
                kind,
                table,
                reason,
            }) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                for r in &records {
                    self.careful.counters.add(r.kind);
                }
                // The task stops; the log shows why (best effort: the error says it too).
                let logged = async {
                    self.client.batch_execute("BEGIN").await?;
                    let _ = conflict_log::write(
                        &self.client,
                        self.careful.log_insert.as_ref(),
                        &self.config.origin,
                        &records,
                    )
                    .await;
                    self.client.batch_execute("COMMIT").await
                }
                .await;
                if logged.is_err() {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                }
                Err(ApplyError::Conflict {
                    table,
                    kind,
                    detail: reason,
                    end_lsn: txn.end_lsn,
                })
            }
            Err(e) => {
                self.careful.raced = matches!(e, ApplyError::Conflict { .. });
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn careful_changes(
        &mut self,
        h: &ConflictHandling,
        txn: &Transaction,
        records: &mut Vec<ConflictRecord>,
    ) -> Result<Step, ApplyError> {
        let stamp = WriteStamp::new(
            CommitTime::from_pg_micros(txn.commit_time.0),
            h.remote_node.clone(),
        );
        for change in txn.changes() {
            let mut change = change?;
            if self.ddl_hooks(&change) {
                match self.ddl_hook(change, txn.end_lsn, None).await? {
                    Some(c) => change = c,
                    None => continue,
                }
            }
            self.resolve(&change).await?;
            if let Change::Truncate { relations, options } = &change {
                let tables: Vec<_> = relations
                    .iter()
                    .filter(|r| self.allowed(r) && txn.end_lsn > self.tables[&r.oid].copied_at)
                    .map(|r| self.tables[&r.oid].dest.clone())
                    .collect();
                if !tables.is_empty() {
                    let text = sql::truncate(&tables, options.restart_identity);
                    self.client
                        .batch_execute(&text)
                        .await
                        .map_err(ApplyError::pg(text))?;
                }
                continue;
            }
            if self.in_copy(&change, txn.end_lsn) {
                continue;
            }
            let (relation, op) = match &change {
                Change::Insert { relation, new } => (relation, RowOp::Insert(new)),
                Change::Update { relation, old, new } => {
                    (relation, RowOp::Update(old.as_ref(), new))
                }
                Change::Delete { relation, old } => (relation, RowOp::Delete(old)),
                _ => continue,
            };
            let step = self
                .careful_row(h, &stamp, txn, relation, op, records)
                .await?;
            if let Step::Failed { .. } = step {
                return Ok(step);
            }
        }
        Ok(Step::Done)
    }

    /// The careful table of `relation` (built again when its layout changed).
    async fn careful_table(
        &mut self,
        h: &ConflictHandling,
        relation: &Arc<Relation>,
    ) -> Result<CarefulTable, ApplyError> {
        if let Some((r, t)) = self.careful.tables.get(&relation.oid)
            && (Arc::ptr_eq(r, relation) || **r == **relation)
        {
            return Ok(t.clone());
        }
        let entry = &self.tables[&relation.oid];
        let delta = h
            .delta_columns
            .get(&entry.dest)
            .cloned()
            .unwrap_or_default();
        let t = CarefulTable::load(&self.client, entry, &delta).await?;
        if entry.full_identity && t.matching == RowMatch::FullRow {
            tracing::debug!(table = %entry.dest, "no primary key: rows are matched whole");
        }
        self.careful
            .tables
            .insert(relation.oid, (Arc::clone(relation), t.clone()));
        Ok(t)
    }

    /// Looks, decides, writes and records one row change.
    async fn careful_row(
        &mut self,
        h: &ConflictHandling,
        stamp: &WriteStamp,
        txn: &Transaction,
        relation: &Arc<Relation>,
        op: RowOp<'_>,
        records: &mut Vec<ConflictRecord>,
    ) -> Result<Step, ApplyError> {
        let table = self.careful_table(h, relation).await?;
        let entry = &self.tables[&relation.oid];
        let nodes = Nodes {
            local: &h.local_node,
            remote: &h.remote_node,
            read_writers: self.careful.commit_timestamps && h.compare_writers,
        };
        let ctx = look::Ctx {
            client: &self.client,
            entry,
            table: &table,
            handling: h,
            nodes: &nodes,
        };
        let prober = &mut self.careful.prober;
        let looked = look::look(&ctx, prober, stamp, txn.commit_lsn, op).await?;
        let resolution =
            pgsync_conflict::resolve(&h.policies, h.resolver.as_deref(), &looked.situation).await?;
        records.extend(resolution.records(&looked.situation));
        if let Decision::Fail { reason } = &resolution.decision {
            let kind = resolution
                .conflicts
                .first()
                .map_or("conflict", |c| c.kind.as_str());
            return Ok(Step::Failed {
                kind,
                table: entry.dest.clone(),
                reason: reason.clone(),
            });
        }
        carry::carry_out(&ctx, prober, op, &looked, &resolution).await?;
        Ok(Step::Done)
    }
}
