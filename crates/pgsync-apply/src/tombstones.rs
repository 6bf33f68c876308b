//! Tombstones of local deletes, so that last-write-wins can tell "deleted here after the
//! incoming change" from "never here" (the rule and its proof are in pgsync-conflict's
//! crate docs and `tombstone.rs`).
//!
//! ```text
//!   application: DELETE FROM t WHERE id = 7            (ordinary session on this node)
//!     └─ trigger pgsync_tombstone (AFTER DELETE OR UPDATE, per row)
//!          └─ upsert pgsync.tombstones (table_name, key = {"id": 7})
//!   the tombstone row's xmin is the deleting transaction, so
//!   pg_xact_commit_timestamp_origin(xmin) is the delete's exact commit time
//! ```
//!
//! The trigger is an ordinary (`ENABLE`d) trigger: it fires for applications but not in
//! pgsync's apply session (`session_replication_role = replica`), so deletes applied from
//! the other node leave none — that node's later changes arrive after them anyway. An
//! update that changes the key leaves a tombstone for the old key.
//!
//! Keys are `jsonb` objects of the primary key columns, built by the same conversion on
//! both ends (`to_jsonb(OLD)` in the trigger, `jsonb_build_object(name, $n::type)` in the
//! look-up), so they compare equal whatever the type.
//!
//! **Retention.** After each careful group, tombstones whose delete committed more than a
//! second (the margin) before the last applied change from the other node are deleted: no
//! change still to come from it can be older ([`pgsync_conflict::TombstoneRetention`]).
//! The fast path asks once per group whether any tombstone is newer than the group's
//! earliest change; only then do the group's inserts go through the careful path.

use pgsync_conflict::{Absence, CommitTime, NodeId, WriteStamp};
use pgsync_names::QualifiedName;
use pgsync_names::sql::Literal;
use pgsync_wal::pgoutput::ColumnValue;
use pgsync_wal::{Lsn, Transaction, Tuple};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::error::ApplyError;
use crate::param::Param;
use crate::tables::TableEntry;

/// Microseconds of the retention margin.
const MARGIN_MICROS: i64 = 1_000_000;

/// The table and the trigger function.
const SETUP: &str = r#"CREATE SCHEMA IF NOT EXISTS pgsync;
CREATE TABLE IF NOT EXISTS pgsync.tombstones (
    table_name text NOT NULL,
    key jsonb NOT NULL,
    PRIMARY KEY (table_name, key)
);
CREATE OR REPLACE FUNCTION pgsync.record_tombstone() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    old_key jsonb;
BEGIN
    SELECT jsonb_object_agg(c, to_jsonb(OLD) -> c) INTO old_key FROM unnest(TG_ARGV) AS c;
    IF TG_OP = 'UPDATE' AND old_key =
        (SELECT jsonb_object_agg(c, to_jsonb(NEW) -> c) FROM unnest(TG_ARGV) AS c) THEN
        RETURN NULL;
    END IF;
    INSERT INTO pgsync.tombstones (table_name, key)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, old_key)
    ON CONFLICT (table_name, key) DO UPDATE SET key = EXCLUDED.key;
    RETURN NULL;
END
$fn$;"#;

pub(crate) async fn setup(client: &Client) -> Result<(), ApplyError> {
    client
        .batch_execute(SETUP)
        .await
        .map_err(ApplyError::pg("creating pgsync.tombstones"))
}

/// Installs the tombstone trigger on each of `tables` that has a primary key (tables
/// without one are matched by whole rows and need none). Idempotent.
pub async fn install_triggers(client: &Client, tables: &[QualifiedName]) -> Result<(), ApplyError> {
    // Not captured as DDL on this side (event triggers stay quiet in replica role), when
    // the role may set it; the apply session sets it anyway.
    let _ = client
        .batch_execute("SET session_replication_role = replica")
        .await;
    setup(client).await?;
    for t in tables {
        let row = client
            .query_opt(
                "SELECT array_agg(a.attname::text ORDER BY k.ord),
                        EXISTS (SELECT 1 FROM pg_trigger
                                WHERE tgrelid = i.indrelid AND tgname = 'pgsync_tombstone')
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary
                 GROUP BY i.indrelid",
                &[&t.to_string()],
            )
            .await
            .map_err(ApplyError::pg(format!("reading the primary key of {t}")))?;
        let Some(row) = row else { continue };
        if row.get::<_, bool>(1) {
            continue;
        }
        let cols: Vec<String> = row.get(0);
        let args: Vec<String> = cols.iter().map(|c| Literal(c).to_string()).collect();
        let ddl = format!(
            "CREATE TRIGGER pgsync_tombstone AFTER DELETE OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION pgsync.record_tombstone({})",
            args.join(", ")
        );
        client
            .batch_execute(&ddl)
            .await
            .map_err(ApplyError::pg(format!(
                "creating the tombstone trigger on {t}"
            )))?;
    }
    Ok(())
}

/// What the tombstones know about the key `key_cols` of `t` in `entry`'s table.
pub(crate) async fn absence(
    client: &Client,
    entry: &TableEntry,
    t: &Tuple,
    key_cols: &[usize],
    local: &NodeId,
) -> Result<Absence, ApplyError> {
    let mut pairs = Vec::new();
    let mut params: Vec<Param<'_>> = Vec::new();
    for &i in key_cols {
        let Some(p) = t.get(i).and_then(Param::from_column) else {
            return Ok(Absence::NEVER_DELETED);
        };
        let col = &entry.cols[i];
        params.push(p);
        pairs.push(format!(
            "{}, ${}::{}",
            Literal(&col.name),
            params.len() + 1,
            col.type_name
        ));
    }
    let text = format!(
        "SELECT ((extract(epoch FROM w.ts) - 946684800) * 1000000)::bigint
         FROM pgsync.tombstones s
         LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(s.xmin) AS w(ts, origin) ON true
         WHERE s.table_name = $1 AND s.key = jsonb_build_object({})",
        pairs.join(", ")
    );
    let name = format!("{}.{}", entry.dest.schema, entry.dest.name);
    let mut refs: Vec<&(dyn ToSql + Sync)> = vec![&name];
    refs.extend(params.iter().map(|p| p as &(dyn ToSql + Sync)));
    let row = client
        .query_opt(&text, &refs)
        .await
        .map_err(ApplyError::pg("reading pgsync.tombstones"))?;
    Ok(match row.and_then(|r| r.get::<_, Option<i64>>(0)) {
        Some(ts) => Absence::Tombstone(WriteStamp::new(
            CommitTime::from_pg_micros(ts),
            local.clone(),
        )),
        None => Absence::NEVER_DELETED,
    })
}

/// The inserts of a fast-path group, for one question: does any of them land on a key
/// deleted here after its transaction? Keys are compared as text (`jsonb_each_text` of
/// the tombstone against the values as the source sent them) when every key column has
/// a type whose text form is the same in both (integers, numeric, text, varchar, uuid);
/// otherwise any newer tombstone of the table counts.
#[derive(Debug, Default)]
pub(crate) struct Inserts {
    tables: Vec<String>,
    keys: Vec<Option<String>>,
    times: Vec<i64>,
    lsns: Vec<Lsn>,
}

/// Key columns of these types print the same through pgoutput and `jsonb_each_text`.
const TEXT_EXACT: [&str; 7] = [
    "integer",
    "bigint",
    "smallint",
    "text",
    "uuid",
    "numeric",
    "character varying",
];

/// The key of `new` as a JSON object of text values, when every key column's text form
/// is the same as in `jsonb_each_text` of the tombstone.
fn text_key(entry: &TableEntry, new: &Tuple) -> Option<String> {
    if entry.key.is_empty() {
        return None;
    }
    let mut key = serde_json::Map::new();
    for &i in &entry.key {
        let col = &entry.cols[i];
        if !TEXT_EXACT.iter().any(|t| col.type_name.starts_with(t)) {
            return None;
        }
        let Some(ColumnValue::Text(b)) = new.get(i) else {
            return None;
        };
        key.insert(
            col.name.clone(),
            serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        );
    }
    Some(serde_json::Value::Object(key).to_string())
}

impl Inserts {
    /// An insert into `dest` (its row, when the table is resolved) by `txn`.
    pub(crate) fn push(
        &mut self,
        dest: &QualifiedName,
        row: Option<(&TableEntry, &Tuple)>,
        txn: &Transaction,
    ) {
        self.tables.push(format!("{}.{}", dest.schema, dest.name));
        self.keys
            .push(row.and_then(|(entry, new)| text_key(entry, new)));
        self.times.push(txn.commit_time.0);
        self.lsns.push(txn.end_lsn);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The end LSN of the first transaction with an insert a newer tombstone refuses.
    pub(crate) async fn first_refused(&self, client: &Client) -> Result<Option<Lsn>, ApplyError> {
        let row = client
            .query_one(
                "SELECT min(q.i) FROM unnest($1::text[], $2::text[], $3::bigint[])
                     WITH ORDINALITY AS q(t, k, ts, i)
                 WHERE EXISTS (SELECT 1 FROM pgsync.tombstones s
                     WHERE s.table_name = q.t
                       AND (q.k IS NULL OR q.k::jsonb =
                            (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each_text(s.key) e))
                       AND pg_xact_commit_timestamp(s.xmin)
                           >= TIMESTAMPTZ '2000-01-01 00:00:00+00' + q.ts * INTERVAL '1 microsecond')",
                &[&self.tables, &self.keys, &self.times],
            )
            .await
            .map_err(ApplyError::pg("reading pgsync.tombstones"))?;
        let first: Option<i64> = row.get(0);
        Ok(first
            .and_then(|i| usize::try_from(i - 1).ok())
            .and_then(|i| self.lsns.get(i).copied()))
    }
}

/// Deletes the tombstones no change still to come can be older than, given the commit
/// time of the last applied change (PostgreSQL micros).
pub(crate) async fn prune(client: &Client, applied_through: Option<i64>) -> Result<(), ApplyError> {
    let Some(t) = applied_through else {
        return Ok(());
    };
    let cutoff = t.saturating_sub(MARGIN_MICROS);
    client
        .execute(
            "DELETE FROM pgsync.tombstones s
             WHERE pg_xact_commit_timestamp(s.xmin)
                   < TIMESTAMPTZ '2000-01-01 00:00:00+00' + $1::bigint * INTERVAL '1 microsecond'",
            &[&cutoff],
        )
        .await
        .map_err(ApplyError::pg("pruning pgsync.tombstones"))?;
    Ok(())
}
