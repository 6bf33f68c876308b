//! Running DDL steps on the destination.
//!
//! * pre-data: one transaction for all steps, ending with the `pre-data` state row, so a
//!   crash leaves either nothing or everything;
//! * post-data: one transaction per step with its state row, so a resumed run skips what
//!   committed. Index builds and foreign keys run on several connections at once (each
//!   `CREATE INDEX` holds only a SHARE lock, so several indexes of one table build
//!   together); the rest runs in order on one connection.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

use crate::copy::state::RECORD_STEP;
use crate::ddl::{ExistingTables, Step};
use crate::endpoint::{Endpoint, setup_writer};
use crate::error::{Result, Side, SnapshotError};
use crate::progress::{Progress, Reporter};

/// The state key of the pre-data transaction.
pub(crate) const PRE_DATA: &str = "pre-data";

fn step_error(step: &Step) -> impl FnOnce(tokio_postgres::Error) -> SnapshotError {
    let what = step.what.clone();
    SnapshotError::db(Side::Destination, what)
}

/// Runs the pre-data steps in one transaction, plus extra state rows (`kept ..`).
pub(crate) async fn pre_data(
    client: &Client,
    task: &str,
    steps: &[Step],
    mode: ExistingTables,
    extra_keys: &[String],
    reporter: &Reporter,
) -> Result<usize> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(SnapshotError::db(
            Side::Destination,
            "starting the schema transaction",
        ))?;
    let mut applied = 0;
    for step in steps {
        if mode == ExistingTables::Ignore
            && let Some(q) = &step.exists
        {
            let exists: bool = client
                .query_one(q.as_str(), &[])
                .await
                .map_err(step_error(step))?
                .get(0);
            if exists {
                continue;
            }
        }
        for sql in &step.sql {
            client.batch_execute(sql).await.map_err(step_error(step))?;
        }
        applied += 1;
        reporter.send(Progress::StepDone {
            what: step.what.clone(),
        });
    }
    for key in extra_keys.iter().map(String::as_str).chain([PRE_DATA]) {
        client
            .execute(RECORD_STEP, &[&task, &key])
            .await
            .map_err(SnapshotError::db(
                Side::Destination,
                "recording the schema step",
            ))?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(SnapshotError::db(
            Side::Destination,
            "committing the schema",
        ))?;
    Ok(applied)
}

/// Runs one step in its own transaction with its state row.
async fn one(client: &Client, task: &str, step: &Step) -> Result<()> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(step_error(step))?;
    for sql in &step.sql {
        if let Err(e) = client.batch_execute(sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(step_error(step)(e));
        }
    }
    client
        .execute(RECORD_STEP, &[&task, &step.key])
        .await
        .map_err(step_error(step))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(step_error(step))
}

/// Runs steps in order on one connection, skipping those already done.
pub(crate) async fn sequential(
    client: &Client,
    task: &str,
    steps: &[Step],
    done: &HashSet<String>,
    reporter: &Reporter,
) -> Result<usize> {
    let mut n = 0;
    for step in steps.iter().filter(|s| !done.contains(&s.key)) {
        one(client, task, step).await?;
        reporter.send(Progress::StepDone {
            what: step.what.clone(),
        });
        n += 1;
    }
    Ok(n)
}

/// Settings of a post-data connection.
#[derive(Debug, Clone)]
pub(crate) struct BuildSettings {
    pub(crate) connections: usize,
    pub(crate) maintenance_work_mem: String,
}

/// Runs steps on several connections at once, skipping those already done.
pub(crate) async fn parallel(
    dest: &Endpoint,
    task: &str,
    steps: &[Step],
    done: &HashSet<String>,
    settings: &BuildSettings,
    reporter: &Reporter,
) -> Result<usize> {
    let todo: VecDeque<Step> = steps
        .iter()
        .filter(|s| !done.contains(&s.key))
        .cloned()
        .collect();
    let n = todo.len();
    if n == 0 {
        return Ok(0);
    }
    let queue = Arc::new(Mutex::new(todo));
    let mut handles = Vec::new();
    for _ in 0..settings.connections.clamp(1, n) {
        let client = dest.connect(Side::Destination, "post-data").await?;
        setup_writer(&client, None).await?;
        client
            .batch_execute(&format!(
                "SET maintenance_work_mem = {}",
                pgsync_names::sql::Literal(&settings.maintenance_work_mem)
            ))
            .await
            .map_err(SnapshotError::db(
                Side::Destination,
                "setting maintenance_work_mem",
            ))?;
        let queue = Arc::clone(&queue);
        let task = task.to_owned();
        let reporter = reporter.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let step = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(step) = step else {
                    return Ok::<_, SnapshotError>(());
                };
                if let Err(e) = one(&client, &task, &step).await {
                    queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    return Err(e);
                }
                reporter.send(Progress::StepDone { what: step.what });
            }
        }));
    }
    let mut first = None;
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(e) => {
                first.get_or_insert(SnapshotError::Aborted(e.to_string()));
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(n),
    }
}
