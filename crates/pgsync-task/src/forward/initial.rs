//! The initial sync: publication, slot, schema and full copy under the slot's snapshot.
//!
//! First run: the permanent slot is created with an exported snapshot, the copy reads
//! under it, and every table's rows are as of the slot's consistent point, where the
//! stream begins. After a crash during the copy that snapshot is gone: the slot is kept
//! (its changes since the first consistent point are all still there), a temporary slot
//! exports a new snapshot, and the copy resumes under it — tables complete before the
//! crash are kept, partial ones are recopied, and each table records the snapshot LSN it
//! was copied at (`pgsync.copy_state.snapshot_lsn`). The stream then skips, per table,
//! the transactions already contained in that table's copy, as PostgreSQL's own
//! tablesync does.

use std::collections::HashMap;

use pgsync_names::QualifiedName;
use pgsync_names::sql::{Ident, quote_literal};
use pgsync_snapshot::{Endpoint as SnapEndpoint, FullSync, SyncOptions};
use pgsync_wal::{CreateSlot, Lsn, ReplicationConfig, ReplicationConnection};
use tokio_postgres::Client;

use super::{Shutdown, filters};
use crate::error::TaskError;
use crate::names::{Direction, TaskNames};
use crate::spec::{ExistingTables, TaskSpec};
use crate::state::{self, Phase};

/// What the copy shares with the operations side (crate::ops): the `[throttle]` bucket
/// and progress events (metrics, progress bars).
#[derive(Debug)]
pub(super) struct CopyOps {
    pub(super) throttle: std::sync::Arc<pgsync_snapshot::Throttle>,
    pub(super) progress: tokio::sync::mpsc::UnboundedSender<pgsync_snapshot::Progress>,
}

pub(super) async fn run(
    spec: &TaskSpec,
    names: &TaskNames,
    admin: &Client,
    shutdown: &mut Shutdown,
    copy: CopyOps,
) -> Result<(), TaskError> {
    let source = spec
        .source
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the source"))?;
    let tables = ensure_publication(&source, spec, names).await?;
    tracing::info!(tables = tables.len(), publication = %names.publication, "publication ready");
    if spec.sync.ddl {
        // Before the slot: DDL from the snapshot on is captured at its place in the stream.
        let task = pgsync_ddl::CaptureTask {
            task: &spec.name,
            publication: &names.publication,
            selection: &spec.objects,
        };
        pgsync_ddl::capture::install(&source, &task).await?;
        tracing::info!("DDL capture installed on the source");
    }
    pgsync_apply::ensure_origin(admin, &names.origin).await?;
    if spec.sync.two_way {
        prepare_reverse(spec, &source).await?;
    }

    let slot_exists = source
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&names.slot],
        )
        .await
        .map_err(TaskError::sql("looking for the slot"))?
        .is_some();
    let mut conn = ReplicationConnection::connect(&replication_config(spec)?).await?;
    if !spec.sync.full {
        // Changes only: the tables exist on the destination already (the precheck
        // checked), and streaming starts where the slot is created.
        if !slot_exists {
            conn.create_slot(
                &CreateSlot::new(&names.slot).snapshot(pgsync_wal::SlotSnapshot::Nothing),
            )
            .await?;
        }
        conn.close().await?;
        return finish(spec, names, admin, &source, &tables).await;
    }
    let exported = if slot_exists {
        let temp = format!("{}_resync", names.slot);
        tracing::info!(slot = %names.slot, "resuming an interrupted initial sync with a new snapshot");
        conn.create_slot(&CreateSlot::new(temp).temporary(true))
            .await?
    } else {
        conn.create_slot(&CreateSlot::new(&names.slot)).await?
    };
    let snapshot = exported
        .snapshot_name
        .clone()
        .ok_or(TaskError::NoSnapshot)?;
    state::set_phase(admin, &spec.name, Direction::Forward, Phase::Schema).await?;

    let mut options = SyncOptions::new(&spec.name);
    options.selection = spec.objects.clone();
    options.mapping = spec.mapping.clone();
    options.workers = usize::from(spec.sync.copy_workers);
    options.existing = match spec.sync.existing_tables {
        ExistingTables::Error if spec.sync.schema => pgsync_snapshot::ExistingTables::Error,
        _ => pgsync_snapshot::ExistingTables::Ignore,
    };
    options.snapshot_lsn = Some(exported.consistent_point);
    // Two-way: rows the copy writes on B carry pgsync origins, so B's reader drops them.
    options.origin_prefix = spec.sync.two_way.then(|| names.origin.clone());
    options.throttle = copy.throttle;
    options.progress = Some(copy.progress);
    let sync = FullSync::new(
        SnapEndpoint::new(spec.source.conninfo().clone()),
        SnapEndpoint::new(spec.destination.conninfo().clone()),
        options,
    );
    let mut handle = sync.start(snapshot);
    let imported = tokio::select! {
        r = handle.snapshot_imported() => r,
        () = shutdown.wait() => {
            tracing::info!("stopping during the initial sync; it resumes at the next start");
            return Ok(());
        }
    };
    // The snapshot may go now; a temporary slot goes with its session.
    conn.close().await?;
    if let Err(e) = imported {
        return Err(handle.finish().await.err().unwrap_or(e).into());
    }
    state::set_phase(admin, &spec.name, Direction::Forward, Phase::Full).await?;
    let report = handle.finish().await?;
    tracing::info!(
        rows = report.copy.rows,
        bytes = report.copy.bytes,
        seconds = report.timings.iter().map(|d| d.as_secs_f64()).sum::<f64>(),
        "initial sync done"
    );
    finish(spec, names, admin, &source, &tables).await
}

/// After the copy (or without one): the reverse publication lists the tables, the origin
/// starts where the slot does, and the task moves to streaming.
async fn finish(
    spec: &TaskSpec,
    names: &TaskNames,
    admin: &Client,
    source: &Client,
    tables: &[QualifiedName],
) -> Result<(), TaskError> {
    if spec.sync.two_way {
        let b = spec
            .destination
            .connect()
            .await
            .map_err(TaskError::sql("connecting to the destination"))?;
        let reverse = TaskNames::new(&spec.name, Direction::Reverse);
        let all: bool = b
            .query_opt(
                "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                &[&reverse.publication],
            )
            .await
            .map_err(TaskError::sql("reading the reverse publication"))?
            .is_some_and(|r| r.get(0));
        if !all {
            let mapped: Vec<QualifiedName> = tables.iter().map(|t| spec.mapping.table(t)).collect();
            ensure_publication_on(&b, &reverse.publication, &mapped).await?;
        }
    }

    // Streaming starts where the permanent slot begins.
    let start: String = source
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&names.slot],
        )
        .await
        .map_err(TaskError::sql("reading the slot's start"))?
        .get(0);
    admin
        .batch_execute(&format!(
            "SELECT pg_replication_origin_advance({}, {}::pg_lsn)",
            quote_literal(&names.origin),
            quote_literal(&start)
        ))
        .await
        .map_err(TaskError::sql("setting the origin's start"))?;
    state::set_phase(admin, &spec.name, Direction::Forward, Phase::Incremental).await?;
    Ok(())
}

/// Creates (or brings up to date) the publications over the selected tables; returns
/// them (partitioned tables by their root).
async fn ensure_publication(
    source: &Client,
    spec: &TaskSpec,
    names: &TaskNames,
) -> Result<Vec<QualifiedName>, TaskError> {
    let rows = source
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsync')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(TaskError::sql("listing the source's tables"))?;
    let tables: Vec<QualifiedName> = rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|t| spec.objects.contains(t))
        .collect();
    let slot_exists = source
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&names.slot],
        )
        .await
        .map_err(TaskError::sql("looking for the slot"))?
        .is_some();
    let publications = filters::publications(&spec.objects, names, &tables);
    for p in &publications {
        filters::ensure(source, p, slot_exists).await?;
    }
    filters::drop_unused(source, names, &publications).await?;
    Ok(tables)
}

/// Creates `publication` over `tables`, or sets its tables to them (changes of
/// partitions published as their root's).
async fn ensure_publication_on(
    c: &Client,
    publication: &str,
    tables: &[QualifiedName],
) -> Result<(), TaskError> {
    let p = filters::Publication {
        name: publication.to_owned(),
        operations: pgsync_names::Operations::all(),
        tables: tables.iter().map(|t| (t.clone(), None)).collect(),
    };
    filters::ensure(c, &p, false).await
}

/// Two-way bootstrap, before the forward copy starts: the reverse slot on B exists (so
/// everything applications write on B from now on is kept for A), and the reverse
/// origin on A (so rows applied there are recognised and not sent back).
async fn prepare_reverse(spec: &TaskSpec, source: &Client) -> Result<(), TaskError> {
    let reverse = TaskNames::new(&spec.name, Direction::Reverse);
    pgsync_apply::ensure_origin(source, &reverse.origin).await?;
    let b = spec
        .destination
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the destination"))?;
    let exists = b
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&reverse.slot],
        )
        .await
        .map_err(TaskError::sql("looking for the reverse slot"))?
        .is_some();
    if !exists {
        // Decoding looks publications up as of each change, so the publication must be
        // older than the slot: made here with the mapped tables B already has; those the
        // schema sync creates join it after the copy.
        let has_pub = b
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&reverse.publication],
            )
            .await
            .map_err(TaskError::sql("looking for the reverse publication"))?
            .is_some();
        if !has_pub {
            let present: Vec<QualifiedName> = crate::forward::link::selected_columns(spec, source)
                .await?
                .into_iter()
                .map(|(t, _)| spec.mapping.table(&t))
                .collect();
            let mut existing = Vec::new();
            for t in present {
                let found: bool = b
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.to_string()])
                    .await
                    .map_err(TaskError::sql("looking for tables on the destination"))?
                    .get(0);
                if found {
                    existing.push(t);
                }
            }
            let superuser: bool = b
                .query_one(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await
                .map_err(TaskError::sql("reading the destination role"))?
                .get(0);
            // FOR ALL TABLES covers the tables the schema sync is about to create from
            // their first row on (the reverse applier keeps only the selected ones).
            // Without it, rows written on B before the publication lists a new table
            // would not reach A: a window the precheck warns about.
            let sql = if superuser {
                format!(
                    "CREATE PUBLICATION {} FOR ALL TABLES WITH (publish_via_partition_root = true)",
                    Ident(&reverse.publication)
                )
            } else {
                String::new()
            };
            if sql.is_empty() {
                ensure_publication_on(&b, &reverse.publication, &existing).await?;
            } else {
                b.batch_execute(&sql)
                    .await
                    .map_err(TaskError::sql("creating the reverse publication"))?;
            }
        }
        let mut conn =
            ReplicationConnection::connect(&spec.destination.replication_config()?).await?;
        conn.create_slot(
            &CreateSlot::new(&reverse.slot).snapshot(pgsync_wal::SlotSnapshot::Nothing),
        )
        .await?;
        conn.close().await?;
        tracing::info!(slot = %reverse.slot, "reverse slot created on the destination");
    }
    Ok(())
}

/// The replication connection's settings: the source DSN's target and credentials.
pub(super) fn replication_config(spec: &TaskSpec) -> Result<ReplicationConfig, TaskError> {
    Ok(spec.source.replication_config()?)
}

/// Per source table, the LSN its copy is as of: the stream skips that table's changes up
/// to it.
pub(super) async fn copied_at(
    admin: &Client,
    source: &Client,
    task: &str,
) -> Result<HashMap<QualifiedName, Lsn>, TaskError> {
    let exists: bool = admin
        .query_one("SELECT to_regclass('pgsync.copy_state') IS NOT NULL", &[])
        .await
        .map_err(TaskError::sql("looking for pgsync.copy_state"))?
        .get(0);
    if !exists {
        return Ok(HashMap::new());
    }
    let rows = admin
        .query(
            "SELECT table_schema, table_name, max(snapshot_lsn)::text FROM pgsync.copy_state
             WHERE task = $1 AND snapshot_lsn IS NOT NULL GROUP BY 1, 2",
            &[&task],
        )
        .await
        .map_err(TaskError::sql("reading pgsync.copy_state"))?;
    let mut at: HashMap<QualifiedName, Lsn> = rows
        .iter()
        .filter_map(|r| {
            let lsn: Lsn = r.get::<_, &str>(2).parse().ok()?;
            Some((
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                lsn,
            ))
        })
        .collect();
    // Changes of partitions arrive under their root's name (publish_via_partition_root),
    // and a tree is copied as of one snapshot: the root gets its partitions' LSN.
    let copied: Vec<String> = at.keys().map(ToString::to_string).collect();
    let roots = source
        .query(
            "SELECT l, rn.nspname::text, r.relname::text FROM unnest($1::text[]) l
             JOIN pg_class c ON c.oid = to_regclass(l) AND c.relispartition
             JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
             JOIN pg_namespace rn ON rn.oid = r.relnamespace",
            &[&copied],
        )
        .await
        .map_err(TaskError::sql(
            "reading the partition roots of copied tables",
        ))?;
    for r in roots {
        let Ok(leaf) = QualifiedName::parse(r.get::<_, &str>(0)) else {
            continue;
        };
        let root = QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2));
        if let Some(lsn) = at.get(&leaf).copied() {
            let e = at.entry(root).or_insert(lsn);
            *e = (*e).max(lsn);
        }
    }
    Ok(at)
}
