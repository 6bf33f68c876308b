//! `release`: removes everything a task made, on both sides, so that nothing keeps WAL
//! or names around — slots and publications on the reading sides, replication origins and
//! pgsync state on the writing sides (schema `pgsync` itself once no task uses it).
//!
//! A slot left behind fills the source's disk, so `release` is thorough; and because
//! dropping the slot of a running task would break it, it refuses while a runner holds
//! the task, unless forced (then the runner's sessions are ended first).

use pgsync_names::sql::Ident;
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::TaskError;
use crate::names::{Direction, TaskNames};
use crate::spec::TaskSpec;
use crate::state::{self, StateError};

/// What was removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Released {
    /// Human-readable lines, one per object removed.
    pub removed: Vec<String>,
}

/// Releases `spec`'s task. With `force`, a running runner is stopped first.
pub async fn release(spec: &TaskSpec, force: bool) -> Result<Released, TaskError> {
    let a = spec
        .source
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the source"))?;
    let b = spec
        .destination
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the destination"))?;
    if let Some(pid) = state::holder(&b, &spec.name)
        .await
        .map_err(TaskError::sql("reading the runner lock"))?
    {
        if !force {
            return Err(StateError::Locked {
                task: spec.name.clone(),
                pid,
            }
            .into());
        }
        b.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .map_err(TaskError::sql("ending the runner's session"))?;
        // And every other session of the task (apply sessions hold its origins).
        for side in [&a, &b] {
            side.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid() AND datname = current_database()",
                &[&spec.application_name()],
            )
            .await
            .map_err(TaskError::sql("ending the task's sessions"))?;
        }
    }
    let mut out = Released::default();
    for dir in [Direction::Forward, Direction::Reverse] {
        let names = TaskNames::new(&spec.name, dir);
        let (reader, writer) = match dir {
            Direction::Forward => (&a, &b),
            Direction::Reverse => (&b, &a),
        };
        drop_slot(reader, &names.slot, force, &mut out).await?;
        // The main publication and those of the filters' operation sets.
        let publications: Vec<String> = std::iter::once(names.publication.clone())
            .chain(crate::forward::all_operation_publications(&names))
            .collect();
        let found = reader
            .query(
                "SELECT pubname::text FROM pg_publication WHERE pubname = ANY($1) ORDER BY 1",
                &[&publications],
            )
            .await
            .map_err(TaskError::sql("looking for the publications"))?;
        for r in found {
            let publication: String = r.get(0);
            reader
                .batch_execute(&format!(
                    "DROP PUBLICATION IF EXISTS {}",
                    Ident(&publication)
                ))
                .await
                .map_err(TaskError::sql("dropping the publication"))?;
            out.removed.push(format!("publication {publication}"));
        }
        // The task's origin and those of its copy workers.
        let origins = writer
            .query(
                "SELECT roname FROM pg_replication_origin WHERE roname = $1 OR roname LIKE $1 || '\\_%'",
                &[&names.origin],
            )
            .await
            .map_err(TaskError::sql("listing replication origins"))?;
        let progress_rows: bool = writer
            .query_one(
                "SELECT to_regclass('pgsync.apply_progress') IS NOT NULL",
                &[],
            )
            .await
            .map_err(TaskError::sql("looking for pgsync.apply_progress"))?
            .get(0);
        for r in origins {
            let name: String = r.get(0);
            if progress_rows {
                writer
                    .execute(
                        "DELETE FROM pgsync.apply_progress WHERE origin = $1",
                        &[&name],
                    )
                    .await
                    .map_err(TaskError::sql("clearing pgsync.apply_progress"))?;
            }
            retry_in_use(writer, "SELECT pg_replication_origin_drop($1)", &name)
                .await
                .map_err(TaskError::sql(format!(
                    "dropping replication origin {name}"
                )))?;
            out.removed.push(format!("replication origin {name}"));
        }
    }
    // The DDL capture on the source (its triggers go with the last task using them).
    if pgsync_ddl::capture::uninstall(&a, &spec.name).await? {
        out.removed
            .push("DDL capture registration (event triggers once no task uses them)".into());
    }
    for side in [&a, &b] {
        drop_state(side, &spec.name, &mut out).await?;
    }
    Ok(out)
}

async fn drop_slot(
    c: &Client,
    slot: &str,
    force: bool,
    out: &mut Released,
) -> Result<(), TaskError> {
    let row = c
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(TaskError::sql("looking for the slot"))?;
    let Some(row) = row else { return Ok(()) };
    if let Some(pid) = row.get::<_, Option<i32>>(0) {
        if !force {
            return Err(StateError::Locked {
                task: slot.to_owned(),
                pid,
            }
            .into());
        }
        c.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .map_err(TaskError::sql("ending the walsender of the slot"))?;
    }
    retry_in_use(c, "SELECT pg_drop_replication_slot($1)", slot)
        .await
        .map_err(TaskError::sql(format!("dropping slot {slot}")))?;
    out.removed.push(format!("replication slot {slot}"));
    Ok(())
}

/// Runs `op` until it stops failing with "object in use" (a session that was just ended
/// lets go of its slot or origin a moment later), for at most 30 s.
async fn retry_in_use(c: &Client, sql: &str, name: &str) -> Result<u64, tokio_postgres::Error> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match c.execute(sql, &[&name]).await {
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Deletes the task's rows from pgsync's tables; drops schema `pgsync` once no task is
/// left in it.
async fn drop_state(c: &Client, task: &str, out: &mut Released) -> Result<(), TaskError> {
    let tables: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'pgsync' AND c.relkind = 'r'",
            &[],
        )
        .await
        .map_err(TaskError::sql("listing pgsync's tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        let schema = c
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'pgsync'", &[])
            .await
            .map_err(TaskError::sql("looking for schema pgsync"))?;
        if schema.is_some() {
            c.batch_execute("DROP SCHEMA pgsync")
                .await
                .map_err(TaskError::sql("dropping schema pgsync"))?;
            out.removed.push("schema pgsync".into());
        }
        return Ok(());
    }
    let mut others = 0i64;
    for t in &tables {
        let has_task: bool = c
            .query_one(
                "SELECT count(*) > 0 FROM information_schema.columns
                 WHERE table_schema = 'pgsync' AND table_name = $1 AND column_name = 'task'",
                &[t],
            )
            .await
            .map_err(TaskError::sql("inspecting pgsync's tables"))?
            .get(0);
        if !has_task {
            continue;
        }
        let table = format!("pgsync.{}", Ident(t));
        c.execute(&format!("DELETE FROM {table} WHERE task = $1"), &[&task])
            .await
            .map_err(TaskError::sql(format!("deleting the task from {table}")))?;
        others += c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(TaskError::sql(format!("counting {table}")))?
            .get::<_, i64>(0);
    }
    if others == 0 {
        c.batch_execute("DROP SCHEMA pgsync CASCADE")
            .await
            .map_err(TaskError::sql("dropping schema pgsync"))?;
        out.removed.push("schema pgsync".into());
    } else {
        out.removed.push(format!(
            "task {task}'s rows in schema pgsync (other tasks keep it)"
        ));
    }
    Ok(())
}
