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

use pgsync_loop::LoopFilter;
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
    pub(crate) task: String,
    pub(crate) reader: Endpoint,
    pub(crate) writer: Endpoint,
    pub(crate) names: TaskNames,
    pub(crate) mapping: Mapping,
    /// Reader-side tables whose changes are applied (`None`: all the publication sends).
    pub(crate) only_tables: Option<HashSet<QualifiedName>>,
    /// Drops transactions pgsync wrote itself (two-way only).
    pub(crate) loop_filter: Option<LoopFilter>,
    /// Metrics and throttle at each group commit (none unless attached).
    pub(crate) hooks: Hooks,
}

impl Link {
    /// A -> B.
    pub(crate) fn forward(spec: &TaskSpec) -> Self {
        Self {
            direction: Direction::Forward,
            task: spec.name.clone(),
            reader: spec.source.clone(),
            writer: spec.destination.clone(),
            names: TaskNames::new(&spec.name, Direction::Forward),
            mapping: spec.mapping.clone(),
            only_tables: None,
            loop_filter: spec
                .sync
                .two_way
                .then(|| LoopFilter::new(spec.sync.loop_prevention)),
            hooks: Hooks::default(),
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
            task: spec.name.clone(),
            reader: spec.destination.clone(),
            writer: spec.source.clone(),
            names: TaskNames::new(&spec.name, Direction::Reverse),
            mapping: inverse,
            only_tables: Some(only),
            loop_filter: Some(LoopFilter::new(spec.sync.loop_prevention)),
            hooks: Hooks::default(),
        })
    }
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
