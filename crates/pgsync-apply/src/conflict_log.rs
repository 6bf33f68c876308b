//! The conflict log on the destination: one row of `pgsync.conflicts` per detected
//! conflict, written in the transaction that applies the change (so a log row exists
//! exactly when its decision was committed). A `fail` decision rolls the change back; its
//! rows are written in a transaction of their own, so the user sees what stopped the task.
//!
//! ```sql
//! SELECT kind, table_name, key, decision, local_row, remote_row
//! FROM pgsync.conflicts ORDER BY id DESC LIMIT 20;
//! ```
//!
//! `origin` names the applier (task and direction, e.g. `pgsync_shop_fwd`); `pgsync status`
//! counts the rows per kind for each direction.

use pgsync_conflict::ConflictRecord;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::error::ApplyError;

/// The log table (created with the apply session).
pub(crate) const CONFLICTS_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS pgsync;
CREATE TABLE IF NOT EXISTS pgsync.conflicts (
    id bigserial PRIMARY KEY,
    logged_at timestamptz NOT NULL DEFAULT now(),
    origin text NOT NULL,
    kind text NOT NULL,
    table_name text NOT NULL,
    key jsonb,
    local_row jsonb,
    remote_row jsonb,
    local_commit_time timestamptz,
    local_origin text,
    local_deleted boolean NOT NULL,
    remote_commit_time timestamptz NOT NULL,
    remote_origin text NOT NULL,
    decision text NOT NULL,
    policy text,
    remote_is_later boolean NOT NULL,
    source_lsn pg_lsn NOT NULL,
    reason text
);
CREATE INDEX IF NOT EXISTS conflicts_origin_kind ON pgsync.conflicts (origin, kind);";

const INSERT: &str = "INSERT INTO pgsync.conflicts (origin, kind, table_name, key, local_row,
        remote_row, local_commit_time, local_origin, local_deleted, remote_commit_time,
        remote_origin, decision, policy, remote_is_later, source_lsn, reason)
    VALUES ($1, $2, $3, $4::text::jsonb, $5::text::jsonb, $6::text::jsonb,
        TIMESTAMPTZ '2000-01-01 00:00:00+00' + $7::bigint * INTERVAL '1 microsecond', $8, $9,
        TIMESTAMPTZ '2000-01-01 00:00:00+00' + $10::bigint * INTERVAL '1 microsecond',
        $11, $12, $13, $14, $15::text::pg_lsn, $16)";

/// The log's INSERT, prepared.
pub(crate) async fn prepare(client: &Client) -> Result<Statement, ApplyError> {
    client
        .prepare(INSERT)
        .await
        .map_err(ApplyError::pg("preparing the conflict log insert"))
}

/// Writes `records` (in the session's current transaction, if one is open) with the
/// prepared INSERT (prepared here when `None`).
pub(crate) async fn write(
    client: &Client,
    prepared: Option<&Statement>,
    origin: &str,
    records: &[ConflictRecord],
) -> Result<(), ApplyError> {
    if records.is_empty() {
        return Ok(());
    }
    let stmt = match prepared {
        Some(s) => s.clone(),
        None => prepare(client).await?,
    };
    for r in records {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(ToString::to_string);
        let (key, local, remote) = (json(&r.key), json(&r.local_row), json(&r.remote_row));
        let local_time = r.local_commit_time.map(|t| t.pg_micros());
        let local_origin = r.local_origin.as_ref().map(|n| n.as_str().to_owned());
        let remote_time = r.remote_commit_time.pg_micros();
        let reason = match &r.decision {
            pgsync_conflict::Decision::Fail { reason } => Some(reason.as_str()),
            _ => None,
        };
        let params: [&(dyn ToSql + Sync); 16] = [
            &origin,
            &r.kind.as_str(),
            &r.table.to_string(),
            &key,
            &local,
            &remote,
            &local_time,
            &local_origin,
            &r.local_deleted,
            &remote_time,
            &r.remote_origin.as_str(),
            &r.decision.as_str(),
            &r.policy.map(|p| p.as_str()),
            &r.remote_is_later,
            &r.source_lsn.to_string(),
            &reason,
        ];
        client
            .execute(&stmt, &params)
            .await
            .map_err(ApplyError::pg("writing the conflict log"))?;
    }
    Ok(())
}
