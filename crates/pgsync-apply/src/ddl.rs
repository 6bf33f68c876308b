//! DDL in the change stream, on the destination side of each direction.
//!
//! **Forward (replay).** A `pgsync.ddl` message arrives at its place among the changes of
//! its source transaction. What is already on its way is sent first (open COPY, held-back
//! inserts, the pipelined chunk), then, in the same destination transaction:
//! ```text
//!  SET LOCAL search_path TO <captured, mapped>; <statement(s)>; SET LOCAL search_path TO DEFAULT
//! ```
//! and every cached table layout and prepared statement is dropped: the next change of any
//! table resolves against the altered destination (pgoutput sends a new Relation after an
//! ALTER; an unchanged one must also be looked up again, e.g. after a rename).
//! Unsupported DDL stops the task naming the statement (`fail`) or is left out (`skip`).
//!
//! **Reverse (follow).** The reverse direction never replays DDL, but rows written on B
//! under the old shape of a table can arrive after A changed it (B had not replayed the
//! DDL yet). Each B relation layout is translated once into A's current names: the
//! inverse mapping, then the renames the capture wrote down on A (`pgsync.ddl_renames`),
//! and columns dropped on A (`pgsync.ddl_dropped_columns`, and gone from A's catalog)
//! left out of the rows. The selection is applied to A's current name, so renamed and
//! new tables are followed. A layout translated before A's DDL that then fails on A
//! (undefined table or column) is reported by [`Applier::schema_may_have_moved`]; the task
//! reconnects and translates again.

use std::collections::HashMap;
use std::sync::Arc;

use pgsync_ddl::{DdlMessage, Decision, NameHistory, Planner, Unsupported};
use pgsync_names::sql::{Ident, ident_list};
use pgsync_names::{Mapping, Selection};
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Relation, Tuple};

use super::{Applier, Batch};
use crate::error::ApplyError;

/// What the applier does with DDL.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum DdlApply {
    /// Messages are dropped; rows are applied as they come (DDL sync off, or the reverse
    /// direction of a task without DDL sync).
    #[default]
    Ignore,
    /// Replay captured DDL (the forward direction).
    Replay {
        /// The task's planner (selection and mapping).
        planner: Planner,
        /// What happens to DDL that cannot be replayed faithfully.
        unsupported: Unsupported,
        /// Two-way: the reverse publication on the destination. When it lists tables
        /// (not `FOR ALL TABLES`), tables created by replayed DDL join it in the same
        /// transaction, so rows written there reach the source from the first one.
        reverse_publication: Option<String>,
    },
    /// Drop DDL, and follow the writer's DDL history (the reverse direction of a task
    /// with DDL sync): the applier's own mapping must then be the identity, as names are
    /// translated here.
    Follow {
        /// The forward selection, in the writer's (A's) names.
        selection: Selection,
        /// Reader (B) names to writer (A) names.
        inverse: Mapping,
    },
}

/// The applier's DDL state.
#[derive(Debug, Default)]
pub(super) struct DdlState {
    /// Per reader relation OID: the layout seen, and what it becomes (`None`: dropped).
    follow: HashMap<u32, (Arc<Relation>, Option<Translated>)>,
}

/// A reader relation in the writer's current names.
#[derive(Debug)]
struct Translated {
    relation: Arc<Relation>,
    /// Reader column positions kept, in order; `None` when all are.
    keep: Option<Vec<usize>>,
    /// Whether anything differs from the reader's relation.
    changed: bool,
}

impl Applier {
    /// Whether `change` goes through [`Self::ddl_hook`] (a cheap test, run per change).
    pub(super) fn ddl_hooks(&self, change: &Change) -> bool {
        matches!(change, Change::Message { .. })
            || matches!(self.config.ddl, DdlApply::Follow { .. })
    }

    /// Replays a DDL message (returns `None`), or translates a row change of the reverse
    /// direction (`None`: not applied). `b` is the fast path's batch (`None` on the
    /// careful path, whose transaction is open already).
    pub(super) async fn ddl_hook(
        &mut self,
        change: Change,
        end_lsn: Lsn,
        b: Option<&mut Batch>,
    ) -> Result<Option<Change>, ApplyError> {
        if let Change::Message {
            prefix, content, ..
        } = &change
        {
            if prefix == pgsync_ddl::PREFIX
                && let DdlApply::Replay {
                    planner,
                    unsupported,
                    ..
                } = &self.config.ddl
            {
                let msg = DdlMessage::decode(content).map_err(|e| ApplyError::Ddl {
                    statement: String::new(),
                    reason: e.to_string(),
                    end_lsn,
                })?;
                let decision = planner.plan(&msg);
                let unsupported = *unsupported;
                self.replay(decision, unsupported, end_lsn, b).await?;
            }
            return Ok(None);
        }
        if matches!(self.config.ddl, DdlApply::Follow { .. }) {
            return self.follow(change).await;
        }
        Ok(Some(change))
    }

    async fn replay(
        &mut self,
        decision: Decision,
        unsupported: Unsupported,
        end_lsn: Lsn,
        b: Option<&mut Batch>,
    ) -> Result<(), ApplyError> {
        let plan = match decision {
            Decision::Replay(plan) => plan,
            Decision::Ignore(why) => {
                tracing::debug!(%why, "DDL not replayed");
                return Ok(());
            }
            Decision::Unsupported { statement, reason } => {
                return match unsupported {
                    Unsupported::Fail => Err(ApplyError::Ddl {
                        statement,
                        reason,
                        end_lsn,
                    }),
                    Unsupported::Skip => {
                        tracing::warn!(%statement, %reason, "unsupported DDL skipped (ddl_unsupported = \"skip\")");
                        Ok(())
                    }
                };
            }
        };
        // A table copied at a later snapshot has the DDL already (a resumed initial copy).
        if let Some(t) = plan.tables.iter().find(|t| {
            self.config
                .copied_at
                .get(*t)
                .is_some_and(|at| end_lsn <= *at)
        }) {
            tracing::debug!(table = %t, "DDL already contained in the table's copy");
            return Ok(());
        }
        if let Some(b) = b {
            self.finish_active(b).await?;
            self.flush_runs(b).await?;
            self.run_chunk(b).await?;
            if !b.began {
                self.client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(ApplyError::pg("starting a transaction"))?;
                b.began = true;
            }
        }
        let path = ident_list(plan.search_path.iter().map(String::as_str));
        let path = if path.is_empty() {
            "''".to_owned()
        } else {
            path
        };
        self.client
            .batch_execute(&format!("SET LOCAL search_path TO {path}"))
            .await
            .map_err(ApplyError::pg("setting the search path of replayed DDL"))?;
        for statement in &plan.statements {
            tracing::info!(%statement, "replaying DDL");
            self.client
                .batch_execute(statement)
                .await
                .map_err(ApplyError::pg(format!("replaying DDL {statement}")))?;
        }
        self.client
            .batch_execute("SET LOCAL search_path TO DEFAULT")
            .await
            .map_err(ApplyError::pg("resetting the search path"))?;
        if let DdlApply::Replay {
            reverse_publication: Some(publication),
            ..
        } = &self.config.ddl
        {
            for source in &plan.created {
                let table = self.config.mapping.table(source);
                let missing: bool = self
                    .client
                    .query_one(
                        "SELECT to_regclass($1) IS NOT NULL AND EXISTS (
                             SELECT 1 FROM pg_publication p
                             WHERE p.pubname = $2 AND NOT p.puballtables AND NOT EXISTS (
                                 SELECT 1 FROM pg_publication_rel r
                                 WHERE r.prpubid = p.oid AND r.prrelid = to_regclass($1)))",
                        &[&table.to_string(), publication],
                    )
                    .await
                    .map_err(ApplyError::pg("reading the reverse publication"))?
                    .get(0);
                if missing {
                    let sql = format!("ALTER PUBLICATION {} ADD TABLE {table}", Ident(publication));
                    self.client
                        .batch_execute(&sql)
                        .await
                        .map_err(ApplyError::pg(sql.clone()))?;
                }
            }
        }
        self.tables.clear();
        self.statements.clear();
        self.copies.clear();
        // The careful path's look at the destination (unique indexes, key columns) and
        // its prepared probes may be out of date too.
        self.careful.forget_layouts();
        Ok(())
    }

    /// The reverse direction: `change` in the writer's current names, or `None` when its
    /// table is not (or no longer) selected.
    async fn follow(&mut self, change: Change) -> Result<Option<Change>, ApplyError> {
        match &change {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => self.follow_relation(relation).await?,
            Change::Truncate { relations, .. } => {
                for r in relations {
                    self.follow_relation(r).await?;
                }
            }
            _ => return Ok(None),
        }
        let get = |r: &Arc<Relation>| self.ddl.follow.get(&r.oid).and_then(|(_, t)| t.as_ref());
        Ok(match change {
            Change::Insert { relation, new } => get(&relation).map(|t| Change::Insert {
                relation: t.relation(&relation),
                new: t.tuple(new),
            }),
            Change::Update { relation, old, new } => get(&relation).map(|t| Change::Update {
                relation: t.relation(&relation),
                old: old.map(|o| t.old(o)),
                new: t.tuple(new),
            }),
            Change::Delete { relation, old } => get(&relation).map(|t| Change::Delete {
                relation: t.relation(&relation),
                old: t.old(old),
            }),
            Change::Truncate { relations, options } => {
                let kept: Vec<Arc<Relation>> = relations
                    .iter()
                    .filter_map(|r| get(r).map(|t| t.relation(r)))
                    .collect();
                (!kept.is_empty()).then_some(Change::Truncate {
                    relations: kept,
                    options,
                })
            }
            _ => None,
        })
    }

    /// Translates `r` unless its layout was translated already (the common case: one
    /// map lookup).
    async fn follow_relation(&mut self, r: &Arc<Relation>) -> Result<(), ApplyError> {
        let fresh = self
            .ddl
            .follow
            .get(&r.oid)
            .is_some_and(|(seen, _)| Arc::ptr_eq(seen, r) || **seen == **r);
        if !fresh {
            let t = self.translate(r).await?;
            self.ddl.follow.insert(r.oid, (Arc::clone(r), t));
        }
        Ok(())
    }

    /// One reader layout in the writer's current names (reads the writer's DDL history
    /// and the table's columns: once per layout).
    async fn translate(&self, r: &Relation) -> Result<Option<Translated>, ApplyError> {
        let DdlApply::Follow { selection, inverse } = &self.config.ddl else {
            return Ok(None);
        };
        let history = NameHistory::read(&self.client).await.map_err(|e| match e {
            // Keeps the SQLSTATE, so that the error is classified as any other.
            pgsync_ddl::DdlError::Postgres { context, source } => {
                ApplyError::Postgres { context, source }
            }
            other => ApplyError::Ddl {
                statement: String::new(),
                reason: other.to_string(),
                end_lsn: Lsn::INVALID,
            },
        })?;
        let original = inverse.table(&r.name);
        let now = history.current_name(&original);
        if now.schema == "pgsync" || !selection.contains(&now) {
            return Ok(None);
        }
        let present: Vec<String> = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&now.schema, &now.name],
            )
            .await
            .map_err(ApplyError::pg(format!("reading the columns of {now}")))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if present.is_empty() && history.table_dropped(&now) {
            // B wrote to it before B replayed the DROP: the table is gone on A.
            tracing::warn!(table = %now, "rows written on the destination to a table the source dropped are not applied");
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(r.columns.len());
        let mut keep = Vec::with_capacity(r.columns.len());
        for (i, c) in r.columns.iter().enumerate() {
            let mut name = inverse.column(&r.name, &c.name);
            if !present.contains(&name) {
                // Renamed on A since B wrote the row.
                name = history.current_column(&now, &name);
            }
            if !present.contains(&name) && history.column_dropped(&now, &name) {
                continue;
            }
            keep.push(i);
            let mut c = c.clone();
            c.name = name;
            columns.push(c);
        }
        let all = keep.len() == r.columns.len();
        let relation = Relation {
            oid: r.oid,
            name: now,
            replica_identity: r.replica_identity,
            columns,
        };
        let changed = relation != *r;
        Ok(Some(Translated {
            relation: Arc::new(relation),
            keep: (!all).then_some(keep),
            changed,
        }))
    }

    /// Whether `e` may come from a reverse layout translated before the writer's DDL (a
    /// table or column that is gone): reconnecting translates again.
    pub fn schema_may_have_moved(&self, e: &ApplyError) -> bool {
        matches!(self.config.ddl, DdlApply::Follow { .. })
            && (matches!(
                e,
                ApplyError::MissingTable { .. } | ApplyError::MissingColumn { .. }
            ) || matches!(e.sqlstate(), Some("42P01" | "42703")))
    }
}

impl Translated {
    fn relation(&self, original: &Arc<Relation>) -> Arc<Relation> {
        if self.changed {
            Arc::clone(&self.relation)
        } else {
            Arc::clone(original)
        }
    }

    fn tuple(&self, t: Tuple) -> Tuple {
        let Some(keep) = &self.keep else { return t };
        let values: Vec<ColumnValue<'_>> = keep
            .iter()
            .map(|&i| t.get(i).unwrap_or(ColumnValue::Null))
            .collect();
        Tuple::from_values(values).unwrap_or_else(|| t.clone())
    }

    fn old(&self, o: OldTuple) -> OldTuple {
        match o {
            OldTuple::Key(t) => OldTuple::Key(self.tuple(t)),
            OldTuple::Full(t) => OldTuple::Full(self.tuple(t)),
        }
    }
}
