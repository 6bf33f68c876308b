//! Checks of the selected objects on the source: whole partition trees, per-table filters,
//! objects pgsync cannot carry faithfully, and the sequences behind SERIAL / IDENTITY
//! columns.
//!
//! Row filters are tried for real: in a transaction that is always rolled back, a probe
//! publication is made with the filter, and an `UPDATE .. WHERE false` / `DELETE .. WHERE
//! false` on the table makes the server apply its own rule (a filter of an UPDATE or
//! DELETE publication may only use replica identity columns), so the user's writes are
//! never the first to meet it. Nothing of it stays behind.

use std::collections::{BTreeMap, BTreeSet};

use pgsync_names::sql::Ident;
use pgsync_names::{Operation, QualifiedName};
use tokio_postgres::Client;

use super::checks::{describe, list};
use super::report::{Report, Side};
use crate::spec::TaskSpec;

const SIDE: Side = Side::Source;

/// Every source-side object check.
pub(super) async fn run(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
) -> Result<(), tokio_postgres::Error> {
    partition_trees(report, spec, a).await?;
    row_filters(report, spec, a).await?;
    unsupported_objects(report, spec, a).await?;
    serial_sequences(report, spec, a).await?;
    Ok(())
}

/// (partition, its parent) for every partition in the database.
async fn partition_edges(
    a: &Client,
) -> Result<Vec<(QualifiedName, QualifiedName)>, tokio_postgres::Error> {
    let rows = a
        .query(
            "SELECT cn.nspname::text, c.relname::text, pn.nspname::text, p.relname::text
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid AND c.relispartition AND c.relkind IN ('r', 'p')
             JOIN pg_namespace cn ON cn.oid = c.relnamespace
             JOIN pg_class p ON p.oid = i.inhparent
             JOIN pg_namespace pn ON pn.oid = p.relnamespace
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3)),
            )
        })
        .collect())
}

/// A partitioned table is synced with all its partitions, through its root (MISSION S6).
async fn partition_trees(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
) -> Result<(), tokio_postgres::Error> {
    let id = "partition_trees";
    let edges = partition_edges(a).await?;
    let sel = &spec.objects;
    let split: Vec<String> = edges
        .iter()
        .filter(|(child, parent)| sel.contains(child) != sel.contains(parent))
        .map(|(child, parent)| {
            if sel.contains(child) {
                format!("{child} without its parent {parent}")
            } else {
                format!("{parent} without its partition {child}")
            }
        })
        .collect();
    let filtered_partitions: Vec<String> = sel
        .tables
        .iter()
        .filter(|f| edges.iter().any(|(child, _)| child == &f.name))
        .map(|f| f.name.to_string())
        .collect();
    let roots: BTreeSet<&QualifiedName> = edges
        .iter()
        .filter(|(_, parent)| sel.contains(parent) && !edges.iter().any(|(c, _)| c == parent))
        .map(|(_, parent)| parent)
        .collect();
    if !split.is_empty() {
        report.fail(
            SIDE,
            id,
            format!("the selection splits partition trees: {}", list(&split)),
            "select each partitioned table with every partition (e.g. include \"schema.orders\" \
             and \"schema.orders_*\"), or exclude the whole tree",
        );
    } else if !filtered_partitions.is_empty() {
        report.fail(
            SIDE,
            id,
            format!(
                "objects.table names partitions: {} (changes travel under the root's name)",
                list(&filtered_partitions)
            ),
            "give the operations and row_filter on the partitioned table itself (its root)",
        );
    } else if roots.is_empty() {
        report.pass(SIDE, id, "no partitioned table selected");
    } else {
        report.pass(
            SIDE,
            id,
            format!(
                "{} partitioned tables selected whole, replicated through their roots",
                roots.len()
            ),
        );
    }
    Ok(())
}

/// Row filters need PostgreSQL 15+ and, for UPDATE and DELETE, replica identity columns.
async fn row_filters(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
) -> Result<(), tokio_postgres::Error> {
    let id = "row_filters";
    let filters: Vec<_> = spec
        .objects
        .tables
        .iter()
        .filter(|f| f.row_filter.is_some())
        .collect();
    if filters.is_empty() {
        return Ok(());
    }
    let major: i32 = a
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await?
        .get(0);
    if major < 15 {
        let names: Vec<String> = filters.iter().map(|f| f.name.to_string()).collect();
        report.fail(
            SIDE,
            id,
            format!(
                "row_filter needs publication row filters (PostgreSQL 15+); the source runs {major}: {}",
                list(&names)
            ),
            "upgrade the source to PostgreSQL 15 or newer, or remove row_filter from these \
             objects.table entries",
        );
        return Ok(());
    }
    let mut bad = Vec::new();
    for f in &filters {
        let Some(w) = &f.row_filter else { continue };
        if let Err(e) = probe(a, &f.name, w, f.operations).await {
            bad.push(format!("{}: {}", f.name, e));
        }
    }
    if bad.is_empty() {
        report.pass(
            SIDE,
            id,
            format!("the row filters of {} tables are accepted", filters.len()),
        );
    } else {
        report.fail(
            SIDE,
            id,
            format!("row filters the source refuses: {}", bad.join("; ")),
            "fix the condition (plain SQL over the table's columns, immutable functions only); \
             a filter of a table that syncs UPDATE or DELETE may only use replica identity \
             columns: use key columns, or ALTER TABLE .. REPLICA IDENTITY FULL",
        );
    }
    Ok(())
}

/// Tries one row filter in a rolled-back transaction; the server's message on refusal.
async fn probe(
    a: &Client,
    table: &QualifiedName,
    filter: &str,
    ops: pgsync_names::Operations,
) -> Result<(), String> {
    // A partitioned table is checked on one of its leaves (the root holds no rows and
    // the server checks the partition that is written).
    let target: Option<(String, String)> = a
        .query_opt(
            "SELECT COALESCE((SELECT format('%I.%I', n.nspname, c.relname) FROM pg_partition_tree($1::text::regclass) t
                      JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE t.isleaf ORDER BY t.level DESC LIMIT 1), $1::text),
                    (SELECT quote_ident(attname) FROM pg_attribute
                      WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                      ORDER BY attnum LIMIT 1)",
            &[&table.to_string()],
        )
        .await
        .map_err(|e| describe(&e))?
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()));
    let Some((leaf, column)) = target else {
        return Err("the table does not exist".into());
    };
    let mut sql = format!(
        "BEGIN; SET LOCAL lock_timeout = '5s';
         CREATE PUBLICATION {} FOR TABLE {table} WHERE ({filter})
           WITH (publish = '{}', publish_via_partition_root = true);",
        Ident("pgsync_precheck_probe"),
        ops.publish()
    );
    if ops.contains(Operation::Update) && !column.is_empty() {
        sql.push_str(&format!(
            "UPDATE ONLY {leaf} SET {column} = {column} WHERE false;"
        ));
    }
    if ops.contains(Operation::Delete) {
        sql.push_str(&format!("DELETE FROM ONLY {leaf} WHERE false;"));
    }
    let result = a.batch_execute(&sql).await.map_err(|e| describe(&e));
    // Always: nothing of the probe stays (and the session is usable again).
    a.batch_execute("ROLLBACK")
        .await
        .map_err(|e| describe(&e))?;
    result
}

/// Objects pgsync cannot carry faithfully.
async fn unsupported_objects(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
) -> Result<(), tokio_postgres::Error> {
    let id = "unsupported_objects";
    let sel = &spec.objects;
    let q = |r: &tokio_postgres::Row, i: usize| {
        QualifiedName::new(r.get::<_, String>(i), r.get::<_, String>(i + 1))
    };
    // Unique indexes over expressions: conflicts on them are not detected by key.
    let rows = a
        .query(
            "SELECT n.nspname::text, c.relname::text, ic.relname::text
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indisunique AND i.indexprs IS NOT NULL ORDER BY 1, 2, 3",
            &[],
        )
        .await?;
    let expression_unique: Vec<String> = rows
        .iter()
        .filter(|r| sel.contains(&q(r, 0)))
        .map(|r| format!("{} (index {})", q(r, 0), r.get::<_, String>(2)))
        .collect();
    // Inheritance (not partitioning) across the selection's edge or across schemas.
    let rows = a
        .query(
            "SELECT cn.nspname::text, c.relname::text, pn.nspname::text, p.relname::text
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid AND NOT c.relispartition
             JOIN pg_namespace cn ON cn.oid = c.relnamespace
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
             WHERE cn.nspname <> pn.nspname ORDER BY 1, 2",
            &[],
        )
        .await?;
    let inheritance: Vec<String> = rows
        .iter()
        .filter(|r| sel.contains(&q(r, 0)) || sel.contains(&q(r, 2)))
        .filter(|r| sel.contains(&q(r, 0)) != sel.contains(&q(r, 2)))
        .map(|r| format!("{} inherits from {}", q(r, 0), q(r, 2)))
        .collect();
    // Schemas an extension owns (its tables are made by CREATE EXTENSION, not synced).
    let rows = a
        .query(
            "SELECT DISTINCT n.nspname::text, e.extname::text FROM pg_namespace n
             JOIN pg_depend d ON d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                              AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid ORDER BY 1",
            &[],
        )
        .await?;
    let extension_schemas: Vec<String> = rows
        .iter()
        .filter(|r| {
            sel.include
                .iter()
                .any(|p| p.matches_schema(r.get::<_, &str>(0)))
        })
        .map(|r| {
            format!(
                "{} (extension {})",
                Ident(r.get::<_, &str>(0)),
                r.get::<_, String>(1)
            )
        })
        .collect();

    if !inheritance.is_empty() {
        report.fail(
            SIDE,
            id,
            format!(
                "inheritance across schemas with only one side selected: {}",
                list(&inheritance)
            ),
            "select parent and child together (or neither), or detach the child: ALTER TABLE \
             child NO INHERIT parent",
        );
    } else if !expression_unique.is_empty() {
        report.fail(
            SIDE,
            id,
            format!(
                "unique indexes over expressions (a clash on them cannot be detected as a \
                 conflict): {}",
                list(&expression_unique)
            ),
            "replace the index by a UNIQUE constraint over columns (e.g. a stored generated \
             column holding the expression), or exclude the table",
        );
    } else if !extension_schemas.is_empty() {
        report.warn(
            SIDE,
            id,
            format!(
                "selected schemas owned by an extension: {} (its objects are left out)",
                list(&extension_schemas)
            ),
            "run CREATE EXTENSION on the destination, and exclude the schema from objects.include",
        );
    } else {
        report.pass(
            SIDE,
            id,
            "no expression unique index, cross-schema inheritance or extension schema selected",
        );
    }
    Ok(())
}

/// The sequence behind each SERIAL / IDENTITY / nextval default of a selected table is
/// synced with it (in a selected schema, or owned by the table).
async fn serial_sequences(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
) -> Result<(), tokio_postgres::Error> {
    let id = "serial_sequences";
    let rows = a
        .query(
            "SELECT tn.nspname::text, t.relname::text, att.attname::text, sn.nspname::text,
                    s.relname::text, (dep.refobjid = t.oid) AS owned
             FROM pg_attrdef ad
             JOIN pg_class t ON t.oid = ad.adrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
             JOIN pg_attribute att ON att.attrelid = t.oid AND att.attnum = ad.adnum
             JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                              AND d.refclassid = 'pg_class'::regclass
             JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
             JOIN pg_namespace sn ON sn.oid = s.relnamespace
             LEFT JOIN pg_depend dep ON dep.classid = 'pg_class'::regclass AND dep.objid = s.oid
                                    AND dep.deptype IN ('a', 'i')
             UNION ALL
             SELECT tn.nspname, t.relname, att.attname, sn.nspname, s.relname, true
             FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' AND d.deptype = 'i'
             JOIN pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
             JOIN pg_attribute att ON att.attrelid = t.oid AND att.attnum = d.refobjsubid
             ORDER BY 1, 2, 3",
            &[],
        )
        .await?;
    // The schema sync takes the sequences of every schema the selection reaches.
    let schema_selected = |schema: &str| {
        spec.objects
            .include
            .iter()
            .any(|p| p.matches_schema(schema))
    };
    let mut covered = 0usize;
    let mut missing: BTreeMap<String, String> = BTreeMap::new();
    for r in &rows {
        let table = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        if !spec.objects.contains(&table) {
            continue;
        }
        let seq = QualifiedName::new(r.get::<_, String>(3), r.get::<_, String>(4));
        let owned: Option<bool> = r.get(5);
        if owned == Some(true) || schema_selected(&seq.schema) {
            covered += 1;
        } else {
            missing.insert(
                seq.to_string(),
                format!("{seq} (default of {table}.{})", Ident(r.get::<_, &str>(2))),
            );
        }
    }
    if missing.is_empty() {
        report.pass(
            SIDE,
            id,
            format!("{covered} sequences of SERIAL/IDENTITY columns are synced with their tables"),
        );
    } else {
        let what: Vec<String> = missing.into_values().collect();
        report.fail(
            SIDE,
            id,
            format!(
                "column defaults use sequences that are not synced (the destination's inserts \
                 would fail or reuse values): {}",
                list(&what)
            ),
            "move each sequence next to its table and tie it to the column (ALTER SEQUENCE s \
             SET SCHEMA <table's schema>; ALTER SEQUENCE s OWNED BY table.column), or select \
             a table of the sequence's schema",
        );
    }
    Ok(())
}
