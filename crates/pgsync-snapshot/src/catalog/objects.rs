//! Schemas, extensions, types, routines, triggers, rules and comments.

use pgsync_names::{QualifiedName, Selection};
use tokio_postgres::Client;

use super::{
    Catalog, Comment, Extension, Function, ObjectKey, Rule, Schema, Trigger, TypeDef, TypeKind, ch,
    oid, opt_name, src, text_array,
};
use crate::error::Result;

const NOT_EXTENSION_MEMBER: &str = "NOT EXISTS (SELECT FROM pg_catalog.pg_depend e \
     WHERE e.objid = x.oid AND e.deptype = 'e')";

/// Schemas that an include pattern can match; system schemas and `pgsync` never.
pub(super) async fn schemas(client: &Client, selection: &Selection) -> Result<Vec<Schema>> {
    let rows = client
        .query(
            "SELECT x.oid, x.nspname::text FROM pg_catalog.pg_namespace x
             WHERE x.nspname !~ '^pg_' AND x.nspname <> 'information_schema'
               AND x.nspname <> 'pgsync'
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.objid = x.oid
                               AND e.deptype = 'e')
             ORDER BY x.nspname",
            &[],
        )
        .await
        .map_err(src("reading schemas"))?;
    Ok(rows
        .iter()
        .map(|r| Schema {
            oid: oid(r, 0),
            name: r.get(1),
        })
        .filter(|s| selection.include.iter().any(|p| p.matches_schema(&s.name)))
        .collect())
}

pub(super) async fn extensions(client: &Client) -> Result<Vec<Extension>> {
    let rows = client
        .query(
            "SELECT x.oid, x.extname::text, n.nspname::text
             FROM pg_catalog.pg_extension x JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace
             WHERE x.extname <> 'plpgsql' ORDER BY x.oid",
            &[],
        )
        .await
        .map_err(src("reading extensions"))?;
    Ok(rows
        .iter()
        .map(|r| Extension {
            oid: oid(r, 0),
            name: r.get(1),
            schema: r.get(2),
        })
        .collect())
}

pub(super) async fn types(client: &Client, schemas: &[String], major: u32) -> Result<Vec<TypeDef>> {
    let multirange = if major >= 14 {
        "(SELECT mn.nspname::text FROM pg_catalog.pg_type m JOIN pg_catalog.pg_namespace mn
              ON mn.oid = m.typnamespace WHERE m.oid = r.rngmultitypid),
         (SELECT m.typname::text FROM pg_catalog.pg_type m WHERE m.oid = r.rngmultitypid)"
    } else {
        "NULL::text, NULL::text"
    };
    let sql = format!(
        "SELECT x.oid, n.nspname::text, x.typname::text, x.typtype::text,
                ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = x.oid
                      ORDER BY e.enumsortorder),
                pg_catalog.format_type(x.typbasetype, x.typtypmod), x.typnotnull,
                pg_catalog.pg_get_expr(x.typdefaultbin, 0),
                CASE WHEN x.typcollation <> 0 AND x.typcollation <> bt.typcollation
                     THEN cn.nspname::text END,
                CASE WHEN x.typcollation <> 0 AND x.typcollation <> bt.typcollation
                     THEN co.collname::text END,
                pg_catalog.format_type(r.rngsubtype, NULL),
                CASE WHEN NOT oc.opcdefault THEN ocn.nspname::text END,
                CASE WHEN NOT oc.opcdefault THEN oc.opcname::text END,
                rcn.nspname::text, rco.collname::text,
                NULLIF(r.rngsubdiff::oid, 0)::pg_catalog.regproc::text,
                {multirange}
         FROM pg_catalog.pg_type x
         JOIN pg_catalog.pg_namespace n ON n.oid = x.typnamespace
         LEFT JOIN pg_catalog.pg_type bt ON bt.oid = x.typbasetype
         LEFT JOIN pg_catalog.pg_collation co ON co.oid = x.typcollation
         LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
         LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = x.oid
         LEFT JOIN pg_catalog.pg_opclass oc ON oc.oid = r.rngsubopc
         LEFT JOIN pg_catalog.pg_namespace ocn ON ocn.oid = oc.opcnamespace
         LEFT JOIN pg_catalog.pg_collation rco ON rco.oid = r.rngcollation
         LEFT JOIN pg_catalog.pg_namespace rcn ON rcn.oid = rco.collnamespace
         WHERE n.nspname = ANY($1) AND {NOT_EXTENSION_MEMBER}
           AND (x.typtype IN ('e', 'd', 'r')
                OR (x.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c
                                         WHERE c.oid = x.typrelid) = 'c'))
         ORDER BY x.oid"
    );
    let rows = client
        .query(&sql, &[&schemas])
        .await
        .map_err(src("reading types"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let type_oid = oid(r, 0);
        let kind = match ch(r, 3) {
            'e' => TypeKind::Enum(text_array(r, 4)),
            'd' => TypeKind::Domain {
                base: r.get(5),
                not_null: r.get(6),
                default: r.get(7),
                collation: opt_name(r, 8, 9),
                checks: domain_checks(client, type_oid).await?,
            },
            'r' => TypeKind::Range {
                subtype: r.get(10),
                opclass: opt_name(r, 11, 12),
                collation: opt_name(r, 13, 14),
                subtype_diff: r.get(15),
                multirange: opt_name(r, 16, 17),
            },
            _ => TypeKind::Composite(composite_attributes(client, type_oid).await?),
        };
        out.push(TypeDef {
            oid: type_oid,
            name: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            kind,
        });
    }
    Ok(out)
}

async fn domain_checks(client: &Client, type_oid: u32) -> Result<Vec<(String, String, bool)>> {
    let rows = client
        .query(
            "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid), convalidated
             FROM pg_catalog.pg_constraint WHERE contypid = $1 AND contype = 'c' ORDER BY conname",
            &[&type_oid],
        )
        .await
        .map_err(src("reading domain constraints"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

async fn composite_attributes(
    client: &Client,
    type_oid: u32,
) -> Result<Vec<(String, String, Option<QualifiedName>)>> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
                    CASE WHEN a.attcollation <> t.typcollation THEN cn.nspname::text END,
                    CASE WHEN a.attcollation <> t.typcollation THEN co.collname::text END
             FROM pg_catalog.pg_type x
             JOIN pg_catalog.pg_attribute a ON a.attrelid = x.typrelid
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
             LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
             WHERE x.oid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&type_oid],
        )
        .await
        .map_err(src("reading composite type attributes"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), opt_name(r, 2, 3)))
        .collect())
}

pub(super) async fn functions(client: &Client, schemas: &[String]) -> Result<Vec<Function>> {
    let sql = format!(
        "SELECT x.oid, n.nspname::text, x.proname::text, x.prokind::text,
                pg_catalog.pg_get_function_identity_arguments(x.oid),
                CASE WHEN x.prokind <> 'a' THEN pg_catalog.pg_get_functiondef(x.oid) END,
                pg_catalog.pg_get_function_arguments(x.oid), x.proparallel::text,
                a.aggkind::text, a.aggtransfn::text, pg_catalog.format_type(a.aggtranstype, NULL),
                a.aggtransspace, NULLIF(a.aggfinalfn::oid, 0)::pg_catalog.regproc::text,
                a.aggfinalextra, a.aggfinalmodify::text,
                NULLIF(a.aggcombinefn::oid, 0)::pg_catalog.regproc::text,
                NULLIF(a.aggserialfn::oid, 0)::pg_catalog.regproc::text,
                NULLIF(a.aggdeserialfn::oid, 0)::pg_catalog.regproc::text, a.agginitval,
                NULLIF(a.aggmtransfn::oid, 0)::pg_catalog.regproc::text,
                NULLIF(a.aggminvtransfn::oid, 0)::pg_catalog.regproc::text,
                CASE WHEN a.aggmtranstype <> 0 THEN pg_catalog.format_type(a.aggmtranstype, NULL) END,
                a.aggmtransspace, NULLIF(a.aggmfinalfn::oid, 0)::pg_catalog.regproc::text,
                a.aggmfinalextra, a.aggmfinalmodify::text, a.aggminitval,
                NULLIF(a.aggsortop, 0)::pg_catalog.regoper::text
         FROM pg_catalog.pg_proc x
         JOIN pg_catalog.pg_namespace n ON n.oid = x.pronamespace
         LEFT JOIN pg_catalog.pg_aggregate a ON a.aggfnoid = x.oid
         WHERE n.nspname = ANY($1) AND {NOT_EXTENSION_MEMBER}
           -- range and multirange constructors come with their type
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend i
                           WHERE i.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                             AND i.objid = x.oid AND i.deptype = 'i')
         ORDER BY x.oid"
    );
    let rows = client
        .query(&sql, &[&schemas])
        .await
        .map_err(src("reading functions"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let name = QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2));
        let kind = ch(r, 3);
        let definition = match r.get::<_, Option<String>>(5) {
            Some(def) => def,
            None => aggregate_sql(&name, r),
        };
        out.push(Function {
            oid: oid(r, 0),
            name,
            kind,
            identity_args: r.get(4),
            definition,
        });
    }
    Ok(out)
}

/// `CREATE AGGREGATE` from `pg_aggregate` (the server has no `pg_get_aggregatedef`).
fn aggregate_sql(name: &QualifiedName, r: &tokio_postgres::Row) -> String {
    let mut opts = vec![format!("SFUNC = {}", r.get::<_, String>(9))];
    opts.push(format!("STYPE = {}", r.get::<_, String>(10)));
    let mut push_opt = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            opts.push(format!("{key} = {v}"));
        }
    };
    let space: i32 = r.get(11);
    push_opt("SSPACE", (space != 0).then(|| space.to_string()));
    push_opt("FINALFUNC", r.get(12));
    let final_given = r.get::<_, Option<String>>(12).is_some();
    push_opt(
        "FINALFUNC_EXTRA",
        (final_given && r.get::<_, bool>(13)).then(String::new),
    );
    push_opt(
        "FINALFUNC_MODIFY",
        final_given.then(|| modify(ch(r, 14)).to_owned()),
    );
    push_opt("COMBINEFUNC", r.get(15));
    push_opt("SERIALFUNC", r.get(16));
    push_opt("DESERIALFUNC", r.get(17));
    push_opt(
        "INITCOND",
        r.get::<_, Option<String>>(18)
            .map(|v| pgsync_names::sql::quote_literal(&v)),
    );
    let moving = r.get::<_, Option<String>>(19).is_some();
    push_opt("MSFUNC", r.get(19));
    push_opt("MINVFUNC", r.get(20));
    push_opt("MSTYPE", r.get(21));
    let mspace: i32 = r.get(22);
    push_opt(
        "MSSPACE",
        (moving && mspace != 0).then(|| mspace.to_string()),
    );
    push_opt("MFINALFUNC", r.get(23));
    let mfinal = r.get::<_, Option<String>>(23).is_some();
    push_opt(
        "MFINALFUNC_EXTRA",
        (mfinal && r.get::<_, bool>(24)).then(String::new),
    );
    push_opt(
        "MFINALFUNC_MODIFY",
        mfinal.then(|| modify(ch(r, 25)).to_owned()),
    );
    push_opt(
        "MINITCOND",
        r.get::<_, Option<String>>(26)
            .map(|v| pgsync_names::sql::quote_literal(&v)),
    );
    push_opt(
        "SORTOP",
        r.get::<_, Option<String>>(27)
            .map(|op| format!("OPERATOR({op})")),
    );
    push_opt(
        "PARALLEL",
        match ch(r, 7) {
            's' => Some("SAFE".to_owned()),
            'r' => Some("RESTRICTED".to_owned()),
            _ => None,
        },
    );
    if ch(r, 8) == 'h' {
        opts.push("HYPOTHETICAL".to_owned());
    }
    // Options without a value are written as bare keywords.
    let opts: Vec<String> = opts
        .into_iter()
        .map(|o| o.strip_suffix(" = ").map(str::to_owned).unwrap_or(o))
        .collect();
    format!(
        "CREATE AGGREGATE {name}({}) (\n    {}\n)",
        r.get::<_, String>(6),
        opts.join(",\n    ")
    )
}

fn modify(c: char) -> &'static str {
    match c {
        's' => "SHAREABLE",
        'w' => "READ_WRITE",
        _ => "READ_ONLY",
    }
}

pub(super) async fn triggers(client: &Client, rels: &[u32]) -> Result<Vec<Trigger>> {
    let rows = client
        .query(
            "SELECT t.tgrelid, t.tgname::text, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled::text
             FROM pg_catalog.pg_trigger t
             WHERE t.tgrelid = ANY($1) AND NOT t.tgisinternal AND t.tgparentid = 0
             ORDER BY t.tgrelid, t.tgname",
            &[&rels],
        )
        .await
        .map_err(src("reading triggers"))?;
    Ok(rows
        .iter()
        .map(|r| Trigger {
            relation: oid(r, 0),
            name: r.get(1),
            definition: r.get(2),
            enabled: ch(r, 3),
        })
        .collect())
}

pub(super) async fn rules(client: &Client, rels: &[u32]) -> Result<Vec<Rule>> {
    let rows = client
        .query(
            "SELECT r.ev_class, r.rulename::text, pg_catalog.pg_get_ruledef(r.oid)
             FROM pg_catalog.pg_rewrite r
             WHERE r.ev_class = ANY($1) AND r.rulename <> '_RETURN'
             ORDER BY r.ev_class, r.rulename",
            &[&rels],
        )
        .await
        .map_err(src("reading rules"))?;
    Ok(rows
        .iter()
        .map(|r| Rule {
            relation: oid(r, 0),
            name: r.get(1),
            definition: r
                .get::<_, String>(2)
                .trim_end()
                .trim_end_matches(';')
                .to_owned(),
        })
        .collect())
}

/// Comments on synced objects and on their parts (columns, constraints, indexes,
/// triggers, rules), each resolved to the synced object that owns it.
pub(super) async fn comments(client: &Client, cat: &Catalog) -> Result<Vec<Comment>> {
    let rows = client
        .query(
            "SELECT d.classoid::pg_catalog.regclass::text, d.objoid,
                    COALESCE(ix.indrelid, co.conrelid, NULLIF(co.contypid, 0), tg.tgrelid,
                             rw.ev_class, d.objoid),
                    a.type, a.object_names, a.object_args, d.description
             FROM pg_catalog.pg_description d
             CROSS JOIN LATERAL pg_catalog.pg_identify_object_as_address(d.classoid, d.objoid,
                                                                         d.objsubid) a
             LEFT JOIN pg_catalog.pg_index ix ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND ix.indexrelid = d.objoid
             LEFT JOIN pg_catalog.pg_constraint co
                  ON d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND co.oid = d.objoid
             LEFT JOIN pg_catalog.pg_trigger tg
                  ON d.classoid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND tg.oid = d.objoid
             LEFT JOIN pg_catalog.pg_rewrite rw
                  ON d.classoid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND rw.oid = d.objoid
             WHERE d.objoid >= 16384",
            &[],
        )
        .await
        .map_err(src("reading comments"))?;
    let mut out = Vec::new();
    for r in &rows {
        let class: String = r.get(0);
        let object: u32 = oid(r, 1);
        let owner: u32 = oid(r, 2);
        let key = match class.as_str() {
            "pg_namespace" => cat
                .schemas
                .iter()
                .any(|s| s.oid == object)
                .then_some(ObjectKey::Schema(object)),
            "pg_type" => ObjectKey::of_type(cat, object),
            "pg_proc" => cat
                .functions
                .iter()
                .any(|f| f.oid == object)
                .then_some(ObjectKey::Function(object)),
            "pg_extension" => None,
            _ => ObjectKey::of_relation(cat, owner).or_else(|| ObjectKey::of_type(cat, owner)),
        };
        if let Some(owner) = key {
            out.push(Comment {
                owner,
                object_type: r.get(3),
                names: text_array(r, 4),
                args: text_array(r, 5),
                text: r.get(6),
            });
        }
    }
    Ok(out)
}
