//! Tables (columns, constraints, partitioning), sequences, views and indexes.

use std::collections::HashMap;

use pgsync_names::QualifiedName;
use tokio_postgres::Client;

use super::{
    Column, Constraint, ConstraintKind, Index, Sequence, Table, View, ch, oid, opt_name, src,
    text_array,
};
use crate::error::Result;

/// Excludes objects that belong to an extension.
const NOT_EXTENSION_MEMBER: &str = "NOT EXISTS (SELECT FROM pg_catalog.pg_depend e \
     WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = c.oid \
     AND e.deptype = 'e')";

pub(super) async fn tables(client: &Client, schemas: &[String]) -> Result<Vec<Table>> {
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text,
                CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
                CASE WHEN c.relispartition THEN
                    (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid) END,
                CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
                CASE WHEN NOT c.relispartition THEN ARRAY(SELECT i.inhparent FROM pg_catalog.pg_inherits i
                    WHERE i.inhrelid = c.oid ORDER BY i.inhseqno) END,
                c.reloptions::text[], c.relreplident::text,
                pg_catalog.pg_relation_size(c.oid), c.reltuples::float8
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1) AND {NOT_EXTENSION_MEMBER}
         ORDER BY c.oid"
    );
    let rows = client
        .query(&sql, &[&schemas])
        .await
        .map_err(src("reading tables"))?;
    let mut tables: Vec<Table> = rows
        .iter()
        .map(|r| Table {
            oid: oid(r, 0),
            name: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            partitioned: ch(r, 3) == 'p',
            unlogged: ch(r, 4) == 'u',
            columns: Vec::new(),
            partition_key: r.get(5),
            partition_of: match (r.get::<_, Option<u32>>(6), r.get::<_, Option<String>>(7)) {
                (Some(p), Some(b)) => Some((p, b)),
                _ => None,
            },
            inherits: r.get::<_, Option<Vec<u32>>>(8).unwrap_or_default(),
            constraints: Vec::new(),
            options: text_array(r, 9),
            replica_identity: ch(r, 10),
            bytes: r.get(11),
            estimated_rows: r.get(12),
        })
        .collect();
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let mut columns = columns(client, &oids).await?;
    let mut constraints = constraints(client, &oids).await?;
    for t in &mut tables {
        t.columns = columns.remove(&t.oid).unwrap_or_default();
        t.constraints = constraints.remove(&t.oid).unwrap_or_default();
    }
    Ok(tables)
}

async fn columns(client: &Client, rels: &[u32]) -> Result<HashMap<u32, Vec<Column>>> {
    let rows = client
        .query(
            "SELECT a.attrelid, a.attnum, a.attname::text,
                    pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    a.attgenerated::text, a.attidentity::text, a.attislocal,
                    CASE WHEN a.attcollation <> t.typcollation THEN cn.nspname::text END,
                    CASE WHEN a.attcollation <> t.typcollation THEN co.collname::text END,
                    pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
             LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
             LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
             WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attrelid, a.attnum",
            &[&rels],
        )
        .await
        .map_err(src("reading columns"))?;
    let mut out: HashMap<u32, Vec<Column>> = HashMap::new();
    for r in &rows {
        let generated = ch(r, 5);
        let expr: Option<String> = r.get(10);
        let identity = match ch(r, 6) {
            'a' => Some(true),
            'd' => Some(false),
            _ => None,
        };
        let (default, generated) = match generated {
            's' | 'v' => (None, expr.map(|e| (e, generated == 's'))),
            _ => (expr, None),
        };
        out.entry(oid(r, 0)).or_default().push(Column {
            num: r.get(1),
            name: r.get(2),
            type_sql: r.get(3),
            not_null: r.get(4),
            generated,
            identity,
            is_local: r.get(7),
            collation: opt_name(r, 8, 9),
            default,
        });
    }
    Ok(out)
}

async fn constraints(client: &Client, rels: &[u32]) -> Result<HashMap<u32, Vec<Constraint>>> {
    let rows = client
        .query(
            "SELECT co.conrelid, co.oid, co.conname::text, co.contype::text,
                    pg_catalog.pg_get_constraintdef(co.oid), co.conkey, co.confrelid, co.confkey,
                    co.convalidated, NULLIF(co.conindid, 0),
                    co.conparentid <> 0 OR NOT co.conislocal
             FROM pg_catalog.pg_constraint co
             WHERE co.conrelid = ANY($1) AND co.contype IN ('p', 'u', 'c', 'f', 'x')
             ORDER BY co.conrelid, co.conname",
            &[&rels],
        )
        .await
        .map_err(src("reading constraints"))?;
    let mut out: HashMap<u32, Vec<Constraint>> = HashMap::new();
    for r in &rows {
        let kind = match ch(r, 3) {
            'p' => ConstraintKind::PrimaryKey,
            'u' => ConstraintKind::Unique,
            'c' => ConstraintKind::Check,
            'f' => ConstraintKind::ForeignKey,
            _ => ConstraintKind::Exclude,
        };
        let references = match kind {
            ConstraintKind::ForeignKey => Some((
                oid(r, 6),
                r.get::<_, Option<Vec<i16>>>(7).unwrap_or_default(),
            )),
            _ => None,
        };
        out.entry(oid(r, 0)).or_default().push(Constraint {
            oid: oid(r, 1),
            name: r.get(2),
            kind,
            definition: r.get(4),
            columns: r.get::<_, Option<Vec<i16>>>(5).unwrap_or_default(),
            references,
            validated: r.get(8),
            index: r.get(9),
            inherited: r.get(10),
        });
    }
    Ok(out)
}

pub(super) async fn sequences(client: &Client, schemas: &[String]) -> Result<Vec<Sequence>> {
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, pg_catalog.format_type(s.seqtypid, NULL),
                s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                d.refobjid, a.attname::text, d.deptype::text,
                pg_catalog.pg_sequence_last_value(c.oid)
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
         LEFT JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.objid = c.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE c.relkind = 'S' AND n.nspname = ANY($1) AND {NOT_EXTENSION_MEMBER}
         ORDER BY c.oid"
    );
    let rows = client
        .query(&sql, &[&schemas])
        .await
        .map_err(src("reading sequences"))?;
    Ok(rows
        .iter()
        .map(|r| Sequence {
            oid: oid(r, 0),
            name: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            data_type: r.get(3),
            start: r.get(4),
            increment: r.get(5),
            min: r.get(6),
            max: r.get(7),
            cache: r.get(8),
            cycle: r.get(9),
            owned_by: match (r.get::<_, Option<u32>>(10), r.get::<_, Option<String>>(11)) {
                (Some(t), Some(c)) => Some((t, c)),
                _ => None,
            },
            identity: r.get::<_, Option<String>>(12).as_deref() == Some("i"),
            last_value: r.get(13),
        })
        .collect())
}

pub(super) async fn views(client: &Client, schemas: &[String]) -> Result<Vec<View>> {
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind = 'm',
                pg_catalog.pg_get_viewdef(c.oid), c.reloptions::text[]
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY($1) AND {NOT_EXTENSION_MEMBER}
         ORDER BY c.oid"
    );
    let rows = client
        .query(&sql, &[&schemas])
        .await
        .map_err(src("reading views"))?;
    Ok(rows
        .iter()
        .map(|r| View {
            oid: oid(r, 0),
            name: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            materialized: r.get(3),
            definition: r
                .get::<_, String>(4)
                .trim_end()
                .trim_end_matches(';')
                .to_owned(),
            options: text_array(r, 5),
        })
        .collect())
}

pub(super) async fn indexes(client: &Client, rels: &[u32]) -> Result<Vec<Index>> {
    let rows = client
        .query(
            "SELECT i.indexrelid, i.indrelid, c.relname::text,
                    pg_catalog.pg_get_indexdef(i.indexrelid),
                    EXISTS (SELECT FROM pg_catalog.pg_constraint co WHERE co.conindid = i.indexrelid
                            AND co.conrelid = i.indrelid AND co.contype IN ('p', 'u', 'x')),
                    (SELECT h.inhparent FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid),
                    i.indisclustered, i.indisreplident
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = ANY($1)
             ORDER BY i.indrelid, c.relname",
            &[&rels],
        )
        .await
        .map_err(src("reading indexes"))?;
    Ok(rows
        .iter()
        .map(|r| Index {
            oid: oid(r, 0),
            relation: oid(r, 1),
            name: r.get(2),
            definition: r.get(3),
            for_constraint: r.get(4),
            parent: r.get(5),
            clustered: r.get(6),
            replica_identity: r.get(7),
        })
        .collect())
}
