//! One direction of a task as the streaming loop sees it: where changes are read, where
//! they are written, under which names, through which mapping, and what is dropped.
//!
//! | direction | reader | writer | mapping            | tables          | loop filter |
//! |-----------|--------|--------|--------------------|-----------------|-------------|
//! | forward   | A      | B      | the task's         | the selection   | two-way     |
//! | reverse   | B      | A      | its inverse        | the forward     | always      |
//! |           |        |        | (explicit renames) | selection, as   |             |
//! |           |        |        |                    | named on B      |             |

use std::collections::HashSet;

use pgsync_apply::{ConflictHandling, DdlApply};
use pgsync_conflict::NodeId;
use pgsync_loop::{LoopFilter, LoopPrevention};
use pgsync_names::{Mapping, QualifiedName};
use tokio_postgres::Client;

use crate::endpoint::Endpoint;
use crate::error::TaskError;
use crate::names::{Direction, TaskNames};
use crate::ops::hooks::Hooks;
use crate::spec::TaskSpec;

/// One direction's streaming setup.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) direction: Direction,
    /// What the writer does with DDL in the stream.
    pub(crate) ddl: DdlApply,
    pub(crate) task: String,
    pub(crate) reader: Endpoint,
    pub(crate) writer: Endpoint,
    pub(crate) names: TaskNames,
    /// The publications the stream reads (the forward one has one per operation set of
    /// the filters, see `filters`).
    pub(crate) publications: Vec<String>,
    pub(crate) mapping: Mapping,
    /// Reader-side tables whose changes are applied (`None`: all the publication sends).
    pub(crate) only_tables: Option<HashSet<QualifiedName>>,
    /// Drops transactions pgsync wrote itself (two-way only).
    pub(crate) loop_filter: Option<LoopFilter>,
    /// How the writer handles conflicts (careful path, log, policies).
    pub(crate) conflicts: Option<ConflictHandling>,
    /// Metrics and throttle at each group commit (none unless attached).
    pub(crate) hooks: Hooks,
    /// Bytes of WAL the slot must be behind for a catch-up through the SQL decoding
    /// functions (see catchup.rs); `None`: always stream.
    pub(crate) catch_up_min_wal: Option<u64>,
}

impl Link {
    /// A -> B.
    pub(crate) fn forward(spec: &TaskSpec) -> Self {
        Self {
            direction: Direction::Forward,
            ddl: ddl_mode(spec, None),
            task: spec.name.clone(),
            reader: spec.source.clone(),
            writer: spec.destination.clone(),
            names: TaskNames::new(&spec.name, Direction::Forward),
            publications: super::filters::stream_publications(
                &spec.objects,
                &TaskNames::new(&spec.name, Direction::Forward),
            ),
            mapping: spec.mapping.clone(),
            only_tables: None,
            loop_filter: spec
                .sync
                .two_way
                .then(|| LoopFilter::new(spec.sync.loop_prevention)),
            conflicts: conflict_handling(spec, Direction::Forward),
            hooks: Hooks::default(),
            catch_up_min_wal: catch_up_min_wal(spec),
        }
    }

    /// B -> A, over the forward selection as it is named on B, mapped back.
    pub(crate) async fn reverse(spec: &TaskSpec, source: &Client) -> Result<Self, TaskError> {
        let tables = selected_columns(spec, source).await?;
        let inverse = spec
            .mapping
            .inverse_for(tables.iter().map(|(t, c)| (t, c.as_slice())))
            .map_err(|e| TaskError::Mapping(e.to_string()))?;
        let only: HashSet<QualifiedName> =
            tables.iter().map(|(t, _)| spec.mapping.table(t)).collect();
        Ok(Self {
            direction: Direction::Reverse,
            ddl: ddl_mode(spec, Some(&inverse)),
            task: spec.name.clone(),
            reader: spec.destination.clone(),
            writer: spec.source.clone(),
            names: TaskNames::new(&spec.name, Direction::Reverse),
            publications: vec![TaskNames::new(&spec.name, Direction::Reverse).publication],
            mapping: inverse,
            only_tables: Some(only),
            loop_filter: Some(LoopFilter::new(spec.sync.loop_prevention)),
            conflicts: conflict_handling(spec, Direction::Reverse),
            hooks: Hooks::default(),
            catch_up_min_wal: catch_up_min_wal(spec),
        })
    }
}

impl Link {
    /// Gets the reader and the writer ready for conflict handling and marker-mode loop
    /// prevention: the tombstone trigger on the writer's tables (last-write-wins in a
    /// two-way pair), and the marker table in the reader's publication.
    pub(crate) async fn prepare(&self, writer: &Client) -> Result<(), TaskError> {
        let tombstones = self.conflicts.as_ref().is_some_and(|c| c.tombstones);
        let marker = self
            .loop_filter
            .as_ref()
            .is_some_and(|f| f.mode() == LoopPrevention::Marker);
        if !tombstones && !marker {
            return Ok(());
        }
        let reader = self
            .reader
            .connect()
            .await
            .map_err(TaskError::sql("connecting to the reading side"))?;
        if marker {
            reader
                .batch_execute(pgsync_loop::MARKER_DDL)
                .await
                .map_err(TaskError::sql("creating pgsync.loop_marker"))?;
            let missing: bool = reader
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = $1
                       AND NOT p.puballtables AND NOT EXISTS (SELECT 1 FROM pg_publication_tables t
                           WHERE t.pubname = p.pubname AND t.schemaname = 'pgsync'
                             AND t.tablename = 'loop_marker'))",
                    &[&self.names.publication],
                )
                .await
                .map_err(TaskError::sql("reading the publication"))?
                .get(0);
            if missing {
                reader
                    .batch_execute(&format!(
                        "ALTER PUBLICATION {} ADD TABLE pgsync.loop_marker",
                        pgsync_names::sql::Ident(&self.names.publication)
                    ))
                    .await
                    .map_err(TaskError::sql(
                        "adding pgsync.loop_marker to the publication",
                    ))?;
            }
        }
        if tombstones {
            let rows = reader
                .query(
                    "SELECT schemaname::text, tablename::text FROM pg_publication_tables
                     WHERE pubname = $1 AND schemaname <> 'pgsync'",
                    &[&self.names.publication],
                )
                .await
                .map_err(TaskError::sql("listing the published tables"))?;
            let tables: Vec<QualifiedName> = rows
                .iter()
                .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
                .filter(|t| self.only_tables.as_ref().is_none_or(|o| o.contains(t)))
                .map(|t| self.mapping.table(&t))
                .collect();
            pgsync_apply::install_tombstone_triggers(writer, &tables).await?;
        }
        Ok(())
    }
}

/// The conflict handling of one direction: the task's policies; in a two-way pair, last
/// writers compared (node ids `source` for A, `destination` for B) and, with
/// last-write-wins, tombstones; delta columns named on the writing side.
fn conflict_handling(spec: &TaskSpec, direction: Direction) -> Option<ConflictHandling> {
    let policies = spec.sync.conflict_policies().ok()?;
    let (a, b) = (NodeId::new("source"), NodeId::new("destination"));
    let (local, remote) = match direction {
        Direction::Forward => (b, a),
        Direction::Reverse => (a, b),
    };
    let lww = policies.uses_last_write_wins();
    let mut h = ConflictHandling::new(policies, local, remote);
    h.compare_writers = spec.sync.two_way;
    h.tombstones = spec.sync.two_way && lww;
    for (table, cols) in &spec.sync.delta_columns {
        let Ok(source) = QualifiedName::parse(table) else {
            continue;
        };
        let (dest, cols) = match direction {
            Direction::Forward => (
                spec.mapping.table(&source),
                cols.iter()
                    .map(|c| spec.mapping.column(&source, c))
                    .collect(),
            ),
            Direction::Reverse => (source, cols.clone()),
        };
        h.delta_columns.insert(dest, cols);
    }
    Some(h)
}

/// The selected source tables (partitions included) with their column names.
pub(crate) async fn selected_columns(
    spec: &TaskSpec,
    source: &Client,
) -> Result<Vec<(QualifiedName, Vec<String>)>, TaskError> {
    let rows = source
        .query(
            "SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY a.attnum)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsync')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(TaskError::sql("listing the selected tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get::<_, Vec<String>>(2),
            )
        })
        .filter(|(t, _)| spec.objects.contains(t))
        .collect())
}

/// DDL handling of a direction: the forward one replays the source's DDL (when
/// `sync.ddl`); the reverse one never replays any, and with DDL sync on it follows A's
/// renames and dropped columns (`inverse`: B names to A names).
/// `sync.catch_up_min_wal_mb` in bytes.
fn catch_up_min_wal(spec: &TaskSpec) -> Option<u64> {
    match spec.sync.catch_up_min_wal_mb {
        0 => None,
        mb => Some(mb.saturating_mul(1 << 20)),
    }
}

fn ddl_mode(spec: &TaskSpec, inverse: Option<&Mapping>) -> DdlApply {
    if !spec.sync.ddl {
        return DdlApply::Ignore;
    }
    match inverse {
        None => DdlApply::Replay {
            planner: pgsync_ddl::Planner::new(spec.objects.clone(), spec.mapping.clone()),
            unsupported: spec.sync.ddl_unsupported,
            reverse_publication: spec
                .sync
                .two_way
                .then(|| TaskNames::new(&spec.name, Direction::Reverse).publication),
        },
        Some(inverse) => DdlApply::Follow {
            selection: spec.objects.clone(),
            inverse: inverse.clone(),
        },
    }
}
