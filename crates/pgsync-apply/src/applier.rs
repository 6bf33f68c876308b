//! Applying source transactions: one destination transaction per group of source
//! transactions, statements pipelined on one connection, origin progress committed with
//! the data.
//!
//! ```text
//!  BEGIN ─ stmt ─ stmt ─ ... ─ stmt        one round trip per chunk of up to
//!        └──────── pipelined ─────────┘     `pipeline_depth` changes
//!  (runs of inserts into one table go through COPY instead)
//!  check every row count; any surprise -> ROLLBACK, error
//!  pg_replication_origin_xact_setup(end_lsn, commit_time) ─ COMMIT ─ pg_current_wal_insert_lsn()
//! ```
//!
//! Exactly once: the origin's progress moves in the same commit as the rows, so after a
//! crash the task resumes from `pg_replication_origin_progress` and the applier skips any
//! transaction at or below it. `pg_replication_origin_xact_setup` runs in every
//! destination transaction (its values are not reset at commit; a skipped call would
//! reuse the previous timestamp).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::SinkExt as _;
use futures_util::future::join_all;
use pgsync_names::{Mapping, QualifiedName};
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation, Transaction, Tuple};
use tokio_postgres::{Client, Statement};

use crate::error::ApplyError;
use crate::param::{Param, copy_text_value};
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
    /// Consecutive inserts into one table from which COPY is used instead of INSERTs.
    pub copy_min_rows: usize,
    /// Per source table, the LSN its initial copy is as of: changes to it in source
    /// transactions ending at or before that LSN are already in the copy and are skipped.
    pub copied_at: HashMap<QualifiedName, Lsn>,
    /// When set, only changes to these source tables are applied; the others are
    /// dropped (the reverse task of a two-way pair covers only the forward selection).
    pub only_tables: Option<std::collections::HashSet<QualifiedName>>,
}

impl ApplierConfig {
    /// Defaults for `origin`: identity mapping, 1000-change pipelines, COPY from 64 rows.
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            mapping: Mapping::identity(),
            pipeline_depth: 1000,
            copy_min_rows: 64,
            copied_at: HashMap::new(),
            only_tables: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
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

/// What one pipelined statement must report.
#[derive(Debug)]
struct Expect {
    op: Op,
    relation: u32,
    describe_key: String,
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
    /// `len` inserts from `start` through COPY.
    Copy {
        start: usize,
        len: usize,
        end_lsn: Lsn,
    },
    /// A statement run on its own (TRUNCATE).
    Simple(String),
    /// Nothing to write.
    Nothing,
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Writes source transactions to the destination.
#[derive(Debug)]
pub struct Applier {
    client: Client,
    config: ApplierConfig,
    tables: HashMap<u32, TableEntry>,
    statements: HashMap<Shape, Statement>,
    progress: Lsn,
    flush: FlushTracker,
    /// `pg_replication_origin_xact_setup($1, $2)`, prepared so that it is sent at once
    /// when pipelined with the COMMIT (an unprepared query would be sent after a prepare
    /// round trip, i.e. after the COMMIT).
    xact_setup: Statement,
    /// `pg_current_wal_insert_lsn()`, prepared for the same reason.
    insert_lsn: Statement,
}

impl Applier {
    /// Sets `client` up for applying (see [`crate::session`]) and reads the origin's
    /// progress. The client must be used for nothing else.
    pub async fn new(client: Client, config: ApplierConfig) -> Result<Self, ApplyError> {
        let progress = session::setup(&client, &config.origin).await?;
        let mut flush = FlushTracker::default();
        flush.nothing_written(progress);
        let xact_setup = client
            .prepare(
                "SELECT pg_replication_origin_xact_setup($1::text::pg_lsn,
                        TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 microsecond')",
            )
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
            progress,
            flush,
            xact_setup,
            insert_lsn,
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
        if !self.flush.has_pending() {
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
        let todo: Vec<&Transaction> = group.iter().filter(|t| t.end_lsn > self.progress).collect();
        let Some(last) = todo.last().copied() else {
            return Ok(());
        };
        if todo.iter().all(|t| t.is_empty()) {
            self.progress = last.end_lsn;
            self.flush.nothing_written(last.end_lsn);
            return Ok(());
        }
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(ApplyError::pg("starting a transaction"))?;
        let outcome = self.apply_changes(&todo).await;
        if let Err(e) = outcome {
            // The rollback fails too when the connection is gone; the first error is the one.
            let _ = self.client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        self.commit(last).await
    }

    async fn commit(&mut self, last: &Transaction) -> Result<(), ApplyError> {
        let lsn = last.end_lsn.to_string();
        let micros = last.commit_time.unix_micros();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&lsn, &micros];
        // Sent in this order on the first poll: all three are ready to go.
        let setup = self.client.execute(&self.xact_setup, &params);
        let commit = self.client.batch_execute("COMMIT");
        let insert_lsn = self.client.query_one(&self.insert_lsn, &[]);
        let (setup, commit, insert_lsn) =
            futures_util::future::join3(setup, commit, insert_lsn).await;
        setup.map_err(ApplyError::pg("recording origin progress"))?;
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

    async fn apply_changes(&mut self, todo: &[&Transaction]) -> Result<(), ApplyError> {
        let depth = self.config.pipeline_depth.max(1);
        let mut chunk: Vec<(Change, Lsn)> = Vec::with_capacity(depth);
        for txn in todo {
            for change in txn.changes() {
                chunk.push((change?, txn.end_lsn));
                if chunk.len() >= depth {
                    self.run_chunk(&chunk).await?;
                    chunk.clear();
                }
            }
        }
        self.run_chunk(&chunk).await
    }

    /// Runs a chunk of changes: statements pipelined, runs of inserts through COPY,
    /// TRUNCATE at its place. First every statement is looked up or prepared, then the
    /// chunk is sent.
    async fn run_chunk(&mut self, chunk: &[(Change, Lsn)]) -> Result<(), ApplyError> {
        for (change, _) in chunk {
            self.resolve(change).await?;
        }
        let mut plan: Vec<Step<'_>> = Vec::with_capacity(chunk.len());
        let mut i = 0;
        while i < chunk.len() {
            let (change, end_lsn) = &chunk[i];
            let end_lsn = *end_lsn;
            if self.in_copy(change, end_lsn) {
                i += 1;
                continue;
            }
            let step = match change {
                Change::Insert { relation, new } => {
                    let run = insert_run(&chunk[i..], relation, new);
                    if run >= self.config.copy_min_rows {
                        plan.push(Step::Copy {
                            start: i,
                            len: run,
                            end_lsn,
                        });
                        i += run;
                        continue;
                    }
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
            i += 1;
        }

        let mut pending: Vec<(Pending<'_>, Expect, Lsn)> = Vec::new();
        for step in plan {
            match step {
                Step::Exec {
                    stmt,
                    params,
                    expect,
                    end_lsn,
                } => {
                    pending.push((exec(&self.client, stmt, params), expect, end_lsn));
                    if pending.len() >= self.config.pipeline_depth {
                        Self::drain(&mut pending, &self.tables).await?;
                    }
                }
                Step::Copy {
                    start,
                    len,
                    end_lsn,
                } => {
                    Self::drain(&mut pending, &self.tables).await?;
                    self.copy(&chunk[start..start + len], end_lsn).await?;
                }
                Step::Simple(text) => {
                    Self::drain(&mut pending, &self.tables).await?;
                    self.client
                        .batch_execute(&text)
                        .await
                        .map_err(ApplyError::pg(text))?;
                }
                Step::Nothing => {}
            }
        }
        Self::drain(&mut pending, &self.tables).await
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

    /// Resolves the relations of `change` (again, when their layout changed).
    async fn resolve(&mut self, change: &Change) -> Result<(), ApplyError> {
        let relations: &[Arc<Relation>] = match change {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => std::slice::from_ref(relation),
            Change::Truncate { relations, .. } => relations,
            _ => &[],
        };
        for r in relations {
            if !self.allowed(r) {
                continue;
            }
            let current = self
                .tables
                .get(&r.oid)
                .is_some_and(|e| Arc::ptr_eq(&e.relation, r) || *e.relation == **r);
            if !current {
                let mut entry = TableEntry::resolve(&self.client, &self.config.mapping, r).await?;
                entry.copied_at = self
                    .config
                    .copied_at
                    .get(&r.name)
                    .copied()
                    .unwrap_or_default();
                self.statements.retain(|shape, _| shape.relation != r.oid);
                self.tables.insert(r.oid, entry);
            }
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
        let describe_key = describe_key(entry, &whr, &params[set.len()..]);
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
                let text = match op {
                    Op::Insert => sql::insert(&entry.dest, &cols(&shape.set)),
                    Op::Update => {
                        sql::update(&entry.dest, &cols(&shape.set), &cols(&shape.whr), how)
                    }
                    Op::Delete => sql::delete(&entry.dest, &cols(&shape.whr), how),
                };
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
            },
        ))
    }

    /// Sends a run of inserts as one `COPY ... FROM STDIN`.
    async fn copy(&self, run: &[(Change, Lsn)], end_lsn: Lsn) -> Result<(), ApplyError> {
        let rows: Vec<(&Arc<Relation>, &Tuple)> = run
            .iter()
            .filter_map(|(c, _)| match c {
                Change::Insert { relation, new } => Some((relation, new)),
                _ => None,
            })
            .collect();
        let Some(&(relation, first)) = rows.first() else {
            return Ok(());
        };
        let entry = &self.tables[&relation.oid];
        let present: Vec<usize> = first
            .iter()
            .enumerate()
            .filter(|(_, v)| *v != ColumnValue::Unchanged)
            .map(|(i, _)| i)
            .collect();
        let cols: Vec<&Col> = present.iter().map(|&i| &entry.cols[i]).collect();
        let text = sql::copy_in(&entry.dest, &cols);
        let sink = self
            .client
            .copy_in::<_, bytes::Bytes>(&text)
            .await
            .map_err(ApplyError::pg(text.clone()))?;
        let mut sink = std::pin::pin!(sink);
        let mut buf = BytesMut::with_capacity(64 << 10);
        for (_, row) in rows {
            let values = row.iter().filter(|v| *v != ColumnValue::Unchanged);
            for (n, v) in values.enumerate() {
                if n > 0 {
                    buf.extend_from_slice(b"\t");
                }
                match v {
                    ColumnValue::Text(b) => copy_text_value(&mut buf, b),
                    _ => buf.extend_from_slice(b"\\N"),
                }
            }
            buf.extend_from_slice(b"\n");
            if buf.len() >= 256 << 10 {
                sink.send(buf.split().freeze())
                    .await
                    .map_err(|e| self.insert_error(e, entry, end_lsn))?;
            }
        }
        if !buf.is_empty() {
            sink.send(buf.freeze())
                .await
                .map_err(|e| self.insert_error(e, entry, end_lsn))?;
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| self.insert_error(e, entry, end_lsn))?;
        Ok(())
    }

    fn insert_error(
        &self,
        e: tokio_postgres::Error,
        entry: &TableEntry,
        end_lsn: Lsn,
    ) -> ApplyError {
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

    /// Waits for every pending statement and checks what each reported.
    async fn drain(
        pending: &mut Vec<(Pending<'_>, Expect, Lsn)>,
        tables: &HashMap<u32, TableEntry>,
    ) -> Result<(), ApplyError> {
        if pending.is_empty() {
            return Ok(());
        }
        let (futs, checks): (Vec<_>, Vec<_>) =
            pending.drain(..).map(|(f, e, l)| (f, (e, l))).unzip();
        let results = join_all(futs).await;
        for (result, (expect, end_lsn)) in results.into_iter().zip(checks) {
            let table = tables[&expect.relation].dest.clone();
            match result {
                Ok(1) => {}
                Ok(_) => {
                    let kind = if expect.op == Op::Update {
                        "update_missing"
                    } else {
                        "delete_missing"
                    };
                    let detail = format!("no row with {}", expect.describe_key);
                    return Err(ApplyError::Conflict {
                        table,
                        kind,
                        detail,
                        end_lsn,
                    });
                }
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    let kind = if expect.op == Op::Insert {
                        "insert_exists"
                    } else {
                        "update_key_exists"
                    };
                    let detail = e
                        .as_db_error()
                        .and_then(|d| d.detail())
                        .unwrap_or("a key already exists")
                        .to_owned();
                    return Err(ApplyError::Conflict {
                        table,
                        kind,
                        detail,
                        end_lsn,
                    });
                }
                Err(e) => return Err(ApplyError::pg(format!("applying a change to {table}"))(e)),
            }
        }
        Ok(())
    }
}

fn exec<'a>(client: &'a Client, stmt: Statement, params: Vec<Param<'a>>) -> Pending<'a> {
    Box::pin(async move { client.execute_raw(&stmt, params).await })
}

/// How many changes from the start of `rest` are inserts into `relation` with the same
/// columns present as `first`.
fn insert_run(rest: &[(Change, Lsn)], relation: &Arc<Relation>, first: &Tuple) -> usize {
    let shape = |t: &Tuple| {
        t.iter()
            .map(|v| v == ColumnValue::Unchanged)
            .collect::<Vec<_>>()
    };
    // COPY here speaks the text format: binary values go through statements.
    if first.iter().any(|v| matches!(v, ColumnValue::Binary(_))) {
        return 0;
    }
    let want = shape(first);
    rest.iter()
        .take_while(|(c, _)| match c {
            Change::Insert { relation: r, new } => Arc::ptr_eq(r, relation) && shape(new) == want,
            _ => false,
        })
        .count()
}

/// `(id)=(42)` style text for conflict messages.
fn describe_key(entry: &TableEntry, whr: &[u16], params: &[Param<'_>]) -> String {
    let names: Vec<&str> = whr
        .iter()
        .map(|&i| entry.cols[i as usize].name.as_str())
        .collect();
    let values: Vec<String> = params
        .iter()
        .map(|p| match p {
            Param::Null => "NULL".to_owned(),
            Param::Text(b) => String::from_utf8_lossy(b).chars().take(64).collect(),
            Param::Binary(_) => "<binary>".to_owned(),
        })
        .collect();
    format!("({})=({})", names.join(", "), values.join(", "))
}
