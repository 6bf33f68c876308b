//! Statements in flight: sent together, then each one's result checked in order. A
//! statement that touched no row, or hit an existing key, is a conflict naming the table
//! and key; the first failure wins (later statements of the group fail with it).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures_util::future::join_all;
use pgsync_wal::Lsn;
use tokio_postgres::{Client, Statement};

use crate::applier::Op;
use crate::error::ApplyError;
use crate::param::Param;
use crate::tables::TableEntry;

/// What one pipelined statement must report.
#[derive(Debug)]
pub(crate) struct Expect {
    pub(crate) op: Op,
    pub(crate) relation: u32,
    pub(crate) describe_key: String,
    /// Rows the statement must touch (more than one for a keyed run).
    pub(crate) rows: u64,
}

pub(crate) type Pending<'a> =
    Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// A statement in flight, with what it must report (`None`: only success).
pub(crate) type InFlight<'a> = (Pending<'a>, Option<Expect>, Lsn);

/// Waits for every pending statement and checks what each reported.
pub(crate) async fn drain(
    pending: &mut Vec<InFlight<'_>>,
    tables: &HashMap<u32, TableEntry>,
) -> Result<(), ApplyError> {
    if pending.is_empty() {
        return Ok(());
    }
    let (futs, checks): (Vec<_>, Vec<_>) = pending.drain(..).map(|(f, e, l)| (f, (e, l))).unzip();
    let results = join_all(futs).await;
    for (result, (expect, end_lsn)) in results.into_iter().zip(checks) {
        let Some(expect) = expect else {
            result.map_err(ApplyError::pg("starting or ending the group"))?;
            continue;
        };
        let table = tables[&expect.relation].dest.clone();
        match result {
            Ok(n) if n == expect.rows => {}
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

pub(crate) fn exec<'a>(client: &'a Client, stmt: Statement, params: Vec<Param<'a>>) -> Pending<'a> {
    Box::pin(async move { client.execute_raw(&stmt, params).await })
}

/// `(id)=(42)` style text for conflict messages.
pub(crate) fn describe_key(entry: &TableEntry, whr: &[u16], params: &[Param<'_>]) -> String {
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
            Param::Int8(v) => v.to_string(),
        })
        .collect();
    format!("({})=({})", names.join(", "), values.join(", "))
}
