//! `pgsync precheck --fix`: the one finding pgsync corrects itself, with the user's
//! consent given by the flag — selected tables without a primary key or replica identity
//! get `REPLICA IDENTITY FULL`, so their UPDATEs and DELETEs carry the whole old row and
//! the destination finds the one row they changed. Nothing is ever set silently by `run`.

use pgsync_names::QualifiedName;

use crate::error::TaskError;
use crate::spec::TaskSpec;

/// Sets `REPLICA IDENTITY FULL` on every selected source table that has neither a primary
/// key nor a replica identity; returns them.
pub async fn fix_replica_identity(spec: &TaskSpec) -> Result<Vec<QualifiedName>, TaskError> {
    let a = spec
        .source
        .connect()
        .await
        .map_err(TaskError::sql("connecting to the source"))?;
    let rows = a
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND c.relreplident IN ('d', 'n')
               AND (c.relreplident = 'n'
                    OR NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsync')
               AND n.nspname NOT LIKE 'pg\\_%'
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(TaskError::sql("listing tables without replica identity"))?;
    let mut fixed = Vec::new();
    for r in rows {
        let t = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        if !spec.objects.contains(&t) {
            continue;
        }
        a.batch_execute(&format!("ALTER TABLE {t} REPLICA IDENTITY FULL"))
            .await
            .map_err(TaskError::sql(format!(
                "setting REPLICA IDENTITY FULL on {t}"
            )))?;
        tracing::info!(table = %t, "REPLICA IDENTITY FULL set");
        fixed.push(t);
    }
    Ok(fixed)
}
