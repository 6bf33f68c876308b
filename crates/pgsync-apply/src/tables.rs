//! Source relations resolved against the destination: the mapped table name, and for
//! each source column the destination column and its type. Resolved once per relation
//! layout; a new Relation message (a column added on the source) gives a new layout and
//! is resolved again.

use std::sync::Arc;

use pgsync_names::{Mapping, QualifiedName};
use pgsync_wal::Relation;
use pgsync_wal::pgoutput::ReplicaIdentity;
use tokio_postgres::Client;

use crate::error::ApplyError;
use crate::sql::Col;

/// A source relation and where it lands.
#[derive(Debug)]
pub(crate) struct TableEntry {
    /// The layout this entry was resolved for.
    pub(crate) relation: Arc<Relation>,
    /// The destination table.
    pub(crate) dest: QualifiedName,
    /// Per source column (same index): the destination column.
    pub(crate) cols: Vec<Col>,
    /// Indexes of the replica identity key columns.
    pub(crate) key: Vec<usize>,
    /// Per source column: the destination column is `GENERATED ALWAYS AS IDENTITY`, which
    /// INSERT writes only with `OVERRIDING SYSTEM VALUE` and UPDATE cannot set at all.
    pub(crate) always_identity: Vec<bool>,
    /// Whether rows are matched by the whole old row (REPLICA IDENTITY FULL).
    pub(crate) full_identity: bool,
    /// Changes in source transactions ending at or before this LSN are in the table's
    /// initial copy already.
    pub(crate) copied_at: pgsync_wal::Lsn,
}

impl TableEntry {
    /// Whether an UPDATE writes source column `i`. Not a `GENERATED ALWAYS AS IDENTITY`
    /// column whose value did not change (PostgreSQL lets UPDATE set it only to DEFAULT):
    /// with no old row sent, the key is unchanged and any other identity column is taken
    /// as unchanged too (the source can only move it with `SET col = DEFAULT`).
    pub(crate) fn update_writes(
        &self,
        i: usize,
        old: Option<&pgsync_wal::pgoutput::OldTuple>,
        new: &pgsync_wal::Tuple,
    ) -> bool {
        if !self.always_identity.get(i).copied().unwrap_or(false) {
            return true;
        }
        match old {
            None => false,
            Some(o) => o.tuple().get(i) != new.get(i),
        }
    }

    pub(crate) async fn resolve(
        client: &Client,
        mapping: &Mapping,
        relation: &Arc<Relation>,
    ) -> Result<Self, ApplyError> {
        let dest = mapping.table(&relation.name);
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attidentity = 'a'
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&dest.schema, &dest.name],
            )
            .await
            .map_err(ApplyError::pg(format!("reading the columns of {dest}")))?;
        if rows.is_empty() {
            return Err(ApplyError::MissingTable {
                table: dest,
                source_table: relation.name.clone(),
            });
        }
        let mut cols = Vec::with_capacity(relation.columns.len());
        let mut always_identity = Vec::with_capacity(relation.columns.len());
        for c in &relation.columns {
            let name = mapping.column(&relation.name, &c.name);
            let Some(row) = rows.iter().find(|r| r.get::<_, &str>(0) == name) else {
                return Err(ApplyError::MissingColumn {
                    table: dest,
                    column: name,
                    source_column: c.name.clone(),
                });
            };
            always_identity.push(row.get::<_, bool>(2));
            cols.push(Col {
                name,
                type_name: row.get(1),
            });
        }
        Ok(Self {
            relation: Arc::clone(relation),
            dest,
            cols,
            key: relation.key_columns().map(|(i, _)| i).collect(),
            always_identity,
            full_identity: relation.replica_identity == ReplicaIdentity::Full,
            copied_at: pgsync_wal::Lsn::INVALID,
        })
    }
}
