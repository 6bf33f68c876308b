//! Applying source transactions: one destination transaction per group of source
//! transactions, statements pipelined on one connection, origin progress committed with
//! the data.
//!
//! ```text
//!  BEGIN ─ stmt ─ stmt ─ ... ─ stmt        one round trip per chunk of up to
//!  └──────────── pipelined ─────────┘      `pipeline_depth` statements
//!  COPY t ... (each table's inserts of the group, see crate::copy)
//!  stmt ─ ... ─ stmt ─ pg_replication_origin_xact_setup(end_lsn, commit_time)
//!  check every row count; any surprise -> ROLLBACK, error
//!  COMMIT ─ pg_current_wal_insert_lsn()    one round trip
//! ```
//! So a group costs one round trip per chunk plus one for the commit; BEGIN rides with
//! the first chunk (or COPY), the origin setup with the last. COMMIT waits for the row
//! counts: a pipelined COMMIT would commit a group whose UPDATE found no row.
//!
//! Exactly once: the origin's progress moves in the same commit as the rows, so after a
//! crash the task resumes from `pg_replication_origin_progress` and the applier skips any
//! transaction at or below it. `pg_replication_origin_xact_setup` runs in every
//! destination transaction (its values are not reset at commit; a skipped call would
//! reuse the previous timestamp).

use std::collections::HashMap;
use std::sync::Arc;

use pgsync_names::{Mapping, QualifiedName};
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation, Transaction, Tuple};
use tokio_postgres::{Client, Statement};

use crate::conflicts::ConflictHandling;
use crate::copy::{ActiveCopy, InsertRun, RowShape};
use crate::error::ApplyError;
use crate::keyed::{KeyedRun, TextArray};
use crate::param::Param;
use crate::pipeline::{self, Expect, InFlight};
use crate::session::{self, FlushTracker};
use crate::sql::{self, Col, Match};
use crate::tables::TableEntry;

/// How the applier works.
#[derive(Debug, Clone)]
pub struct ApplierConfig {
    /// The replication origin on the destination that records this task's progress.
    pub origin: String,
    /// Source to destination names.
    pub mapping: Mapping,
    /// Changes sent before waiting for their results.
    pub pipeline_depth: usize,
    /// Inserts into one table within a group from which COPY is used instead of INSERTs.
    pub copy_min_rows: usize,
    /// Inserts into one table within a group from which the COPY is opened and further
    /// rows stream into it as they are read (a bulk load is one COPY).
    pub copy_stream_rows: usize,
    /// Bytes of inserts a group may hold back for COPY (over all tables); beyond it the
    /// largest table's rows are sent.
    pub copy_buffer_bytes: usize,
    /// Updates or deletes by key of one table within a group from which they go as one
    /// statement over arrays (see `keyed.rs`); below it, one statement per row. 0 or 1:
    /// never.
    pub keyed_min_rows: usize,
    /// Rows of one such statement at most.
    pub keyed_max_rows: usize,
    /// Per source table, the LSN its initial copy is as of: changes to it in source
    /// transactions ending at or before that LSN are already in the copy and are skipped.
    pub copied_at: HashMap<QualifiedName, Lsn>,
    /// When set, only changes to these source tables are applied; the others are
    /// dropped (the reverse task of a two-way pair covers only the forward selection).
    pub only_tables: Option<std::collections::HashSet<QualifiedName>>,
    /// Conflict detection and resolution (the careful path); `None`: any conflict stops.
    pub conflicts: Option<ConflictHandling>,
    /// Marker-mode loop prevention: the statement writing `pgsync.loop_marker`, run in
    /// every applied transaction (see pgsync-loop).
    pub loop_marker: Option<String>,
    /// What happens to DDL in the stream (see `ddl.rs`).
    pub ddl: DdlApply,
}

impl ApplierConfig {
    /// Defaults for `origin`: identity mapping, 1000-statement pipelines, COPY from 64
    /// rows, streaming COPY from 4096 rows, 16 MiB of inserts held back, keyed runs of
    /// 4 to 5000 rows.
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            mapping: Mapping::identity(),
            pipeline_depth: 1000,
            copy_min_rows: 64,
            copy_stream_rows: 4096,
            copy_buffer_bytes: 16 << 20,
            keyed_min_rows: 4,
            keyed_max_rows: 5000,
            copied_at: HashMap::new(),
            only_tables: None,
            conflicts: None,
            loop_marker: None,
            ddl: DdlApply::Ignore,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
}

/// A statement shape; see [`crate::sql`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    relation: u32,
    op: Op,
    how: Match,
    set: Vec<u16>,
    whr: Vec<u16>,
}

/// One step of a chunk's plan.
enum Step<'c> {
    /// A prepared statement to pipeline.
    Exec {
        stmt: Statement,
        params: Vec<Param<'c>>,
        expect: Expect,
        end_lsn: Lsn,
    },
    /// A keyed run's statement with its arrays.
    Keyed {
        stmt: Statement,
        arrays: Vec<TextArray>,
        expect: Expect,
        end_lsn: Lsn,
    },
    /// A statement run on its own (TRUNCATE).
    Simple(String),
    /// Nothing to write.
    Nothing,
}

/// One entry of a chunk: a change for a single-row statement, or a keyed run.
#[derive(Debug)]
enum Item {
    Change(Change, Lsn),
    Keyed(KeyedRun),
}

/// What one group has under way on the destination.
#[derive(Debug, Default)]
struct Batch {
    /// Whether BEGIN was sent.
    began: bool,
    /// Changes to run as statements, not yet sent.
    chunk: Vec<Item>,
    /// Per source relation OID: updates or deletes by key held back to go as one
    /// statement (see crate::keyed).
    keyed: HashMap<u32, KeyedRun>,
    /// Per source relation OID: inserts held back for COPY.
    runs: HashMap<u32, InsertRun>,
    /// Bytes held in `runs`.
    run_bytes: usize,
    /// The COPY rows are streaming into.
    active: Option<ActiveCopy>,
    /// Set on the last chunk: the origin setup goes with it.
    setup: Option<(String, i64)>,
}

/// Writes source transactions to the destination.
#[derive(Debug)]
pub struct Applier {
    client: Client,
    config: ApplierConfig,
    tables: HashMap<u32, TableEntry>,
    statements: HashMap<Shape, Statement>,
    /// Keyed-run statements per (relation, operation, columns written).
    keyed_statements: HashMap<(u32, Op, Vec<u16>), Statement>,
    /// `COPY t (...) FROM STDIN`, per relation and row shape.
    copies: HashMap<(u32, RowShape), Statement>,
    progress: Lsn,
    flush: FlushTracker,
    /// `pg_replication_origin_xact_setup($1, $2)`, prepared so that it is sent at once
    /// when pipelined with the COMMIT (an unprepared query would be sent after a prepare
    /// round trip, i.e. after the COMMIT).
    xact_setup: Statement,
    /// `pg_current_wal_insert_lsn()`, prepared for the same reason.
    insert_lsn: Statement,
    /// The careful path's state (see `careful.rs`).
    careful: careful::CarefulState,
    /// DDL replay / reverse translation state (see `ddl.rs`).
    ddl: ddl::DdlState,
    /// A streamed transaction applied as it arrives (see `eager.rs`).
    eager: Option<eager::Eager>,
}

#[path = "careful.rs"]
mod careful;
#[path = "copy_runs.rs"]
mod copy_runs;
#[path = "ddl.rs"]
mod ddl;
#[path = "eager.rs"]
mod eager;
#[path = "keyed_runs.rs"]
mod keyed_runs;
pub use ddl::DdlApply;

impl Applier {
    /// Sets `client` up for applying (see [`crate::session`]) and reads the origin's
    /// progress. The client must be used for nothing else.
    pub async fn new(client: Client, config: ApplierConfig) -> Result<Self, ApplyError> {
        let progress = session::setup(&client, &config.origin).await?;
        let mut flush = FlushTracker::default();
        flush.nothing_written(progress);
        // The progress row commits with the data; the origin's own progress is not
        // enough, as from PostgreSQL 16 an aborted transaction that set it advances it too.
        if config.loop_marker.is_some() {
            client
                .batch_execute(pgsync_loop::MARKER_DDL)
                .await
                .map_err(ApplyError::pg("creating pgsync.loop_marker"))?;
        }
        let marker = config
            .loop_marker
            .as_ref()
            .map_or(String::new(), |m| format!("marker AS ({m}), "));
        let careful = careful::CarefulState::setup(&client, &config).await?;
        let xact_setup = client
            .prepare(&format!(
                "WITH {marker}progress AS (
                     INSERT INTO pgsync.apply_progress (origin, end_lsn) VALUES ($3, $1::text::pg_lsn)
                     ON CONFLICT (origin) DO UPDATE SET end_lsn = EXCLUDED.end_lsn)
                 SELECT pg_replication_origin_xact_setup($1::text::pg_lsn,
                        TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 microsecond')",
            ))
            .await
            .map_err(ApplyError::pg("preparing pg_replication_origin_xact_setup"))?;
        let insert_lsn = client
            .prepare("SELECT pg_current_wal_insert_lsn()::text")
            .await
            .map_err(ApplyError::pg("preparing pg_current_wal_insert_lsn"))?;
        Ok(Self {
            client,
            config,
            tables: HashMap::new(),
            statements: HashMap::new(),
            keyed_statements: HashMap::new(),
            copies: HashMap::new(),
            progress,
            flush,
            xact_setup,
            insert_lsn,
            careful,
            ddl: ddl::DdlState::default(),
            eager: None,
        })
    }

    /// The end LSN of the last source transaction applied (committed) on the destination.
    pub fn progress(&self) -> Lsn {
        self.progress
    }

    /// The highest source LSN whose effects are durable on the destination: what may be
    /// confirmed to the source. Asks the destination for its WAL flush position when
    /// commits are waiting for it.
    pub async fn durable(&mut self) -> Result<Lsn, ApplyError> {
        // With a transaction applied early, the connection may be in the middle of a COPY.
        if !self.flush.has_pending() || self.eager.is_some() {
            return Ok(self.flush.durable());
        }
        let row = self
            .client
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await
            .map_err(ApplyError::pg(
                "reading the destination's WAL flush position",
            ))?;
        let flushed: Lsn = row.get::<_, &str>(0).parse().unwrap_or_default();
        Ok(self.flush.flushed_to(flushed))
    }

    /// Records `txn` as handled without applying it (a transaction dropped by loop
    /// prevention), so that progress and the slot move past it.
    pub fn skip(&mut self, txn: &Transaction) {
        if txn.end_lsn > self.progress {
            self.progress = txn.end_lsn;
            self.flush.nothing_written(txn.end_lsn);
        }
    }

    /// Applies `group` (source transactions in commit order) as one destination
    /// transaction. Transactions at or below the origin's progress are skipped. On error
    /// nothing of the group is applied.
    pub async fn apply(&mut self, group: &[Transaction]) -> Result<(), ApplyError> {
        // Early work of a streamed transaction cannot stay open under another commit.
        self.eager_abandon().await;
        let todo: Vec<&Transaction> = group.iter().filter(|t| t.end_lsn > self.progress).collect();
        let Some(last) = todo.last().copied() else {
            return Ok(());
        };
        if todo.iter().all(|t| t.is_empty()) {
            self.progress = last.end_lsn;
            self.flush.nothing_written(last.end_lsn);
            return Ok(());
        }
        if let Some(at) = self.careful_first(&todo).await? {
            return self.recover(&todo, at).await;
        }
        let mut batch = Batch::default();
        let outcome = self.apply_changes(&todo, last, &mut batch).await;
        if let Err(e) = outcome {
            // An open COPY is abandoned (CopyFail) when dropped. The rollback fails too
            // when the connection is gone; the first error is the one.
            drop(batch);
            let _ = self.client.batch_execute("ROLLBACK").await;
            if let Some(at) = self.conflict_at(&e) {
                tracing::debug!(error = %e, "conflict on the fast path");
                return self.recover(&todo, at).await;
            }
            return Err(e);
        }
        let first = todo.first().map(|t| t.end_lsn).unwrap_or_default();
        self.commit(last).await.inspect_err(|e| {
            tracing::debug!(first = %first, last = %last.end_lsn, error = %e, "group not committed");
        })
    }

    /// COMMIT (the origin setup went with the last statements) and the local WAL position.
    async fn commit(&mut self, last: &Transaction) -> Result<(), ApplyError> {
        // Sent in this order on the first poll: both are ready to go.
        let commit = self.client.batch_execute("COMMIT");
        let insert_lsn = self.client.query_one(&self.insert_lsn, &[]);
        let (commit, insert_lsn) = futures_util::future::join(commit, insert_lsn).await;
        commit.map_err(ApplyError::pg("committing"))?;
        let local: Lsn = insert_lsn
            .map_err(ApplyError::pg("reading the WAL position of the commit"))?
            .get::<_, &str>(0)
            .parse()
            .unwrap_or_default();
        self.progress = last.end_lsn;
        self.flush.committed(local, last.end_lsn);
        Ok(())
    }

    /// Sends every change of `todo`, then the origin setup; leaves the transaction open
    /// for [`Self::commit`].
    async fn apply_changes(
        &mut self,
        todo: &[&Transaction],
        last: &Transaction,
        b: &mut Batch,
    ) -> Result<(), ApplyError> {
        for txn in todo {
            for change in txn.changes() {
                let mut change = change?;
                if self.ddl_hooks(&change) {
                    match self.ddl_hook(change, txn.end_lsn, Some(b)).await? {
                        Some(c) => change = c,
                        None => continue,
                    }
                }
                self.resolve_in(&change, b).await?;
                if self.in_copy(&change, txn.end_lsn) {
                    continue;
                }
                self.route(change, txn.end_lsn, b).await?;
            }
        }
        self.finish_active(b).await?;
        self.flush_runs(b).await?;
        b.setup = Some((last.end_lsn.to_string(), last.commit_time.unix_micros()));
        self.run_chunk(b).await
    }

    /// Puts one change on its way: an insert joins its table's COPY (open or held back),
    /// anything else becomes a statement of the chunk, after the held-back inserts of its
    /// table (or of every table, for a TRUNCATE) were sent.
    async fn route(
        &mut self,
        change: Change,
        end_lsn: Lsn,
        b: &mut Batch,
    ) -> Result<(), ApplyError> {
        if let Change::Insert { relation, new } = &change
            && let Some(shape) = RowShape::of(new)
        {
            if let Some(active) = &mut b.active {
                if active.accepts(relation, &shape) {
                    let first = active.first_lsn;
                    return match active.push(new).await {
                        Ok(()) => Ok(()),
                        Err(e) => Err(self.insert_error(e, relation.oid, first)),
                    };
                }
                self.finish_active(b).await?;
            }
            let oid = relation.oid;
            if b.keyed.contains_key(&oid) {
                self.flush_keyed(b, oid).await?;
            }
            if b.runs
                .get(&oid)
                .is_some_and(|r| !r.accepts(relation, &shape))
            {
                self.flush_run(b, oid).await?;
            }
            let relation = Arc::clone(relation);
            let bytes = new.raw().len();
            let run = b
                .runs
                .entry(oid)
                .or_insert_with(|| InsertRun::new(relation, shape));
            b.run_bytes += run.push(change, end_lsn, bytes);
            if run.rows.len() >= self.config.copy_stream_rows.max(1) {
                return self.start_active(b, oid).await;
            }
            if b.run_bytes > self.config.copy_buffer_bytes {
                let largest = b.runs.iter().max_by_key(|(_, r)| r.bytes).map(|(o, _)| *o);
                if let Some(oid) = largest {
                    self.flush_run(b, oid).await?;
                }
            }
            return Ok(());
        }
        self.finish_active(b).await?;
        match &change {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => {
                let oid = relation.oid;
                if b.runs.contains_key(&oid) {
                    self.flush_run(b, oid).await?;
                }
                let change = match self.keyed_shape(&change) {
                    Some((op, set)) => match self.push_keyed(b, change, end_lsn, op, set).await? {
                        None => return Ok(()),
                        Some(change) => change,
                    },
                    None => change,
                };
                self.flush_keyed(b, oid).await?;
                return self.push_chunk(b, change, end_lsn).await;
            }
            _ => self.flush_runs(b).await?,
        }
        self.push_chunk(b, change, end_lsn).await
    }

    /// Appends a change to the chunk; runs the chunk when full or at a barrier.
    async fn push_chunk(
        &mut self,
        b: &mut Batch,
        change: Change,
        end_lsn: Lsn,
    ) -> Result<(), ApplyError> {
        let barrier = matches!(change, Change::Truncate { .. });
        b.chunk.push(Item::Change(change, end_lsn));
        if barrier || b.chunk.len() >= self.config.pipeline_depth.max(1) {
            self.run_chunk(b).await?;
        }
        Ok(())
    }

    /// Sends every held-back insert, and puts every keyed run in the chunk.
    async fn flush_runs(&mut self, b: &mut Batch) -> Result<(), ApplyError> {
        let oids: Vec<u32> = b.runs.keys().copied().collect();
        for oid in oids {
            self.flush_run(b, oid).await?;
        }
        let oids: Vec<u32> = b.keyed.keys().copied().collect();
        for oid in oids {
            self.flush_keyed(b, oid).await?;
        }
        Ok(())
    }

    /// Runs the chunk's statements, pipelined, TRUNCATE at its place; with the group's
    /// BEGIN first when not sent yet, and the origin setup last when it is due. First
    /// every statement is looked up or prepared, then everything is sent.
    async fn run_chunk(&mut self, b: &mut Batch) -> Result<(), ApplyError> {
        if b.chunk.is_empty() && b.setup.is_none() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut b.chunk);
        let result = self.run_statements(&chunk, b).await;
        let mut chunk = chunk;
        chunk.clear();
        b.chunk = chunk;
        result
    }

    async fn run_statements(&mut self, chunk: &[Item], b: &mut Batch) -> Result<(), ApplyError> {
        let mut plan: Vec<Step<'_>> = Vec::with_capacity(chunk.len());
        for item in chunk {
            let (change, end_lsn) = match item {
                Item::Change(change, end_lsn) => (change, *end_lsn),
                Item::Keyed(run) => {
                    let (stmt, arrays, expect) = self.keyed_statement(run).await?;
                    plan.push(Step::Keyed {
                        stmt,
                        arrays,
                        expect,
                        end_lsn: run.first_lsn(),
                    });
                    continue;
                }
            };
            self.careful.at(end_lsn);
            let step = match change {
                Change::Insert { relation, new } => {
                    let (stmt, params, expect) =
                        self.statement(Op::Insert, relation, None, new).await?;
                    Step::Exec {
                        stmt,
                        params,
                        expect,
                        end_lsn,
                    }
                }
                Change::Update { relation, old, new } => {
                    let (stmt, params, expect) = self
                        .statement(Op::Update, relation, old.as_ref(), new)
                        .await?;
                    Step::Exec {
                        stmt,
                        params,
                        expect,
                        end_lsn,
                    }
                }
                Change::Delete { relation, old } => {
                    let (stmt, params, expect) = self
                        .statement(Op::Delete, relation, Some(old), old.tuple())
                        .await?;
                    Step::Exec {
                        stmt,
                        params,
                        expect,
                        end_lsn,
                    }
                }
                Change::Truncate { relations, options } => {
                    let tables: Vec<_> = relations
                        .iter()
                        .filter(|r| self.allowed(r) && end_lsn > self.tables[&r.oid].copied_at)
                        .map(|r| self.tables[&r.oid].dest.clone())
                        .collect();
                    if tables.is_empty() {
                        Step::Nothing
                    } else {
                        Step::Simple(sql::truncate(&tables, options.restart_identity))
                    }
                }
                // Logical messages (DDL capture) are handled before the applier.
                _ => Step::Nothing,
            };
            plan.push(step);
        }

        let mut pending: Vec<InFlight<'_>> = Vec::new();
        if !b.began {
            let client = &self.client;
            pending.push((
                Box::pin(async move { client.batch_execute("BEGIN").await.map(|()| 0) }),
                None,
                Lsn::INVALID,
            ));
            b.began = true;
        }
        for step in plan {
            match step {
                Step::Exec {
                    stmt,
                    params,
                    expect,
                    end_lsn,
                } => {
                    pending.push((
                        pipeline::exec(&self.client, stmt, params),
                        Some(expect),
                        end_lsn,
                    ));
                    if pending.len() >= self.config.pipeline_depth {
                        pipeline::drain(&mut pending, &self.tables).await?;
                    }
                }
                Step::Keyed {
                    stmt,
                    arrays,
                    expect,
                    end_lsn,
                } => {
                    let client = &self.client;
                    pending.push((
                        Box::pin(async move { client.execute_raw(&stmt, arrays.iter()).await }),
                        Some(expect),
                        end_lsn,
                    ));
                    if pending.len() >= self.config.pipeline_depth {
                        pipeline::drain(&mut pending, &self.tables).await?;
                    }
                }
                Step::Simple(text) => {
                    pipeline::drain(&mut pending, &self.tables).await?;
                    self.client
                        .batch_execute(&text)
                        .await
                        .map_err(ApplyError::pg(text))?;
                }
                Step::Nothing => {}
            }
        }
        if let Some((lsn, micros)) = b.setup.take() {
            let (client, stmt, origin) = (&self.client, &self.xact_setup, &self.config.origin);
            pending.push((
                Box::pin(async move {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                        [&lsn, &micros, origin];
                    client.execute(stmt, &params).await
                }),
                None,
                Lsn::INVALID,
            ));
        }
        pipeline::drain(&mut pending, &self.tables).await
    }

    /// Whether a row change is already contained in its table's initial copy.
    fn in_copy(&self, change: &Change, end_lsn: Lsn) -> bool {
        match change {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => {
                !self.allowed(relation) || end_lsn <= self.tables[&relation.oid].copied_at
            }
            _ => false,
        }
    }

    /// Whether changes to `relation` are applied at all (see [`ApplierConfig::only_tables`]).
    fn allowed(&self, relation: &Relation) -> bool {
        self.config
            .only_tables
            .as_ref()
            .is_none_or(|t| t.contains(&relation.name))
    }

    /// The relations of `change` (those applied at all).
    fn relations_of<'c>(&self, change: &'c Change) -> impl Iterator<Item = &'c Arc<Relation>> {
        let relations: &[Arc<Relation>] = match change {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => std::slice::from_ref(relation),
            Change::Truncate { relations, .. } => relations,
            _ => &[],
        };
        relations.iter().filter(|r| self.allowed(r))
    }

    /// Whether `relation` has no entry yet, or one resolved for another layout.
    fn needs_resolving(&self, relation: &Arc<Relation>) -> bool {
        !self
            .tables
            .get(&relation.oid)
            .is_some_and(|e| Arc::ptr_eq(&e.relation, relation) || *e.relation == **relation)
    }

    /// [`Self::resolve`] inside a batch. Statements, COPY rows and held-back runs are
    /// built from the table entries when they are sent, so what the batch holds for a
    /// table whose layout changes is sent first, under the layout it was read with.
    async fn resolve_in(&mut self, change: &Change, b: &mut Batch) -> Result<(), ApplyError> {
        let changed = self
            .relations_of(change)
            .any(|r| self.tables.contains_key(&r.oid) && self.needs_resolving(r));
        if changed {
            self.finish_active(b).await?;
            self.flush_runs(b).await?;
            self.run_chunk(b).await?;
        }
        self.resolve(change).await
    }

    /// Resolves the relations of `change` (again, when their layout changed).
    async fn resolve(&mut self, change: &Change) -> Result<(), ApplyError> {
        let stale: Vec<Arc<Relation>> = self
            .relations_of(change)
            .filter(|r| self.needs_resolving(r))
            .cloned()
            .collect();
        for r in &stale {
            let mut entry = TableEntry::resolve(&self.client, &self.config.mapping, r).await?;
            entry.copied_at = self
                .config
                .copied_at
                .get(&r.name)
                .copied()
                .unwrap_or_default();
            self.statements.retain(|shape, _| shape.relation != r.oid);
            self.keyed_statements.retain(|(oid, ..), _| *oid != r.oid);
            self.copies.retain(|(oid, _), _| *oid != r.oid);
            self.tables.insert(r.oid, entry);
        }
        Ok(())
    }

    /// The prepared statement and parameters for one row change.
    async fn statement<'c>(
        &mut self,
        op: Op,
        relation: &Arc<Relation>,
        old: Option<&'c OldTuple>,
        new: &'c Tuple,
    ) -> Result<(Statement, Vec<Param<'c>>, Expect), ApplyError> {
        let entry = &self.tables[&relation.oid];
        let mut params = Vec::with_capacity(new.len() * 2);
        let mut set = Vec::new();
        if op != Op::Delete {
            for (i, v) in new.iter().enumerate() {
                if op == Op::Update && !entry.update_writes(i, old, new) {
                    continue;
                }
                if let Some(p) = Param::from_column(v) {
                    set.push(i as u16);
                    params.push(p);
                }
            }
        }
        let mut whr = Vec::new();
        let mut how = Match::Key;
        if op != Op::Insert {
            let (source, full) = match old {
                Some(OldTuple::Full(t)) if entry.full_identity => (t, true),
                Some(o) => (o.tuple(), false),
                None => (new, false),
            };
            if full {
                how = Match::FullRow;
                for (i, v) in source.iter().enumerate() {
                    if let Some(p) = Param::from_column(v) {
                        whr.push(i as u16);
                        params.push(p);
                    }
                }
            } else {
                for &k in &entry.key {
                    let v = source.get(k).unwrap_or(ColumnValue::Null);
                    whr.push(k as u16);
                    params.push(Param::from_column(v).unwrap_or(Param::Null));
                }
            }
        }
        let describe_key = pipeline::describe_key(entry, &whr, &params[set.len()..]);
        let stamp_check = self.careful.stamp_check().filter(|_| op != Op::Insert);
        if let Some((_, since)) = stamp_check {
            params.push(Param::Int8(since));
            if self.careful.guards(op == Op::Delete) {
                params.push(Param::Int8(self.careful.current_lsn()));
            }
        }
        let shape = Shape {
            relation: relation.oid,
            op,
            how,
            set,
            whr,
        };
        let stmt = match self.statements.get(&shape) {
            Some(s) => s.clone(),
            None => {
                let cols = |idx: &[u16]| -> Vec<&Col> {
                    idx.iter().map(|&i| &entry.cols[i as usize]).collect()
                };
                let guarded = stamp_check.and_then(|_| {
                    let moves = (op == Op::Update && how == Match::Key)
                        .then(|| crate::guard::key_moves(&shape.set, &shape.whr))
                        .flatten();
                    self.careful.guarded(
                        &entry.dest,
                        op == Op::Delete,
                        &cols(&shape.set),
                        &cols(&shape.whr),
                        how,
                        moves,
                    )
                });
                let mut text = match op {
                    _ if guarded.is_some() => guarded.clone().unwrap_or_default(),
                    Op::Insert => sql::insert(&entry.dest, &cols(&shape.set)),
                    Op::Update => {
                        sql::update(&entry.dest, &cols(&shape.set), &cols(&shape.whr), how)
                    }
                    Op::Delete => sql::delete(&entry.dest, &cols(&shape.whr), how),
                };
                if let Some((local_wins_ties, _)) = stamp_check.filter(|_| guarded.is_none()) {
                    let n = shape.set.len() + shape.whr.len() + 1;
                    sql::push_stamp_check(&mut text, &entry.dest, local_wins_ties, n);
                }
                let stmt = self
                    .client
                    .prepare(&text)
                    .await
                    .map_err(ApplyError::pg(format!("preparing {text}")))?;
                self.statements.insert(shape, stmt.clone());
                stmt
            }
        };
        Ok((
            stmt,
            params,
            Expect {
                op,
                relation: relation.oid,
                describe_key,
                rows: 1,
            },
        ))
    }
}
