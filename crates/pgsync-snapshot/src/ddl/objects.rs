//! DDL for everything that is not a table: schemas, extensions, types, sequences,
//! routines, views, comments, sequence values.

use std::collections::HashSet;

use pgsync_names::QualifiedName;
use pgsync_names::sql::{Ident, Literal};

use super::{Names, Plan, Step, table};
use crate::catalog::{Comment, ObjectKey, TypeKind};
use crate::error::{Result, SnapshotError};

fn exists(query: &str, name: &str) -> Option<String> {
    Some(format!(
        "SELECT pg_catalog.{query}({}) IS NOT NULL",
        Literal(name)
    ))
}

/// The pre-data step for one object.
pub(super) fn pre_data_step(names: &Names<'_>, key: ObjectKey, plan: &mut Plan) -> Result<()> {
    let cat = names.cat;
    let step = match key {
        ObjectKey::Schema(oid) => {
            let Some(s) = cat.schemas.iter().find(|s| s.oid == oid) else {
                return Ok(());
            };
            let dest = names.mapping.schema(&s.name);
            Step::new(
                format!("schema {}", s.name),
                format!("schema {dest}"),
                vec![format!("CREATE SCHEMA IF NOT EXISTS {}", Ident(&dest))],
            )
        }
        ObjectKey::Extension(oid) => {
            let Some(e) = cat.extensions.iter().find(|e| e.oid == oid) else {
                return Ok(());
            };
            let schema = names.mapping.schema(&e.schema);
            Step::new(
                format!("extension {}", e.name),
                format!("extension {}", e.name),
                vec![
                    format!("CREATE SCHEMA IF NOT EXISTS {}", Ident(&schema)),
                    format!(
                        "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}",
                        Ident(&e.name),
                        Ident(&schema)
                    ),
                ],
            )
        }
        ObjectKey::Type(oid) => {
            let Some(t) = cat.types.iter().find(|t| t.oid == oid) else {
                return Ok(());
            };
            let dest = names.in_schema(&t.name);
            let mut step = Step::new(
                format!("type {}", t.name),
                format!("type {dest}"),
                type_sql(names, &dest, &t.kind),
            );
            step.exists = exists("to_regtype", &dest.to_string());
            step
        }
        ObjectKey::Sequence(oid) => {
            let Some(s) = cat.sequences.iter().find(|s| s.oid == oid) else {
                return Ok(());
            };
            let dest = names.in_schema(&s.name);
            let mut step = Step::new(
                format!("sequence {}", s.name),
                format!("sequence {dest}"),
                vec![format!(
                    "CREATE SEQUENCE {dest} AS {} {}",
                    names.qualify(&s.data_type),
                    table::sequence_options(s)
                )],
            );
            step.exists = exists("to_regclass", &dest.to_string());
            step
        }
        ObjectKey::Table(oid) => {
            let Some(t) = cat.table(oid) else {
                return Ok(());
            };
            table::create(names, t)
        }
        ObjectKey::Function(oid) => {
            let Some(f) = cat.functions.iter().find(|f| f.oid == oid) else {
                return Ok(());
            };
            let dest = names.in_schema(&f.name);
            let mut step = Step::new(
                format!("function {}({})", f.name, f.identity_args),
                format!("function {dest}({})", f.identity_args),
                vec![names.qualify(&f.definition)],
            );
            step.exists = exists(
                "to_regprocedure",
                &format!("{dest}({})", names.qualify(&f.identity_args)),
            );
            step
        }
        ObjectKey::View(oid) => {
            let Some(v) = cat.views.iter().find(|v| v.oid == oid) else {
                return Ok(());
            };
            if let Some((_, used)) = cat.depends.iter().find(|(from, to)| {
                *from == key
                    && matches!(to, ObjectKey::Table(o) | ObjectKey::View(o) if names.renames_inside(*o))
            }) {
                return Err(SnapshotError::UnsupportedMapping {
                    object: format!("view {}", v.name),
                    reason: format!(
                        "it reads {}, which the mapping renames (or renames columns of); view \
                         bodies are only rewritten for schema renames",
                        super::describe(cat, *used)
                    ),
                });
            }
            let dest = names.mapping.table(&v.name);
            let options = if v.options.is_empty() {
                String::new()
            } else {
                format!(" WITH ({})", v.options.join(", "))
            };
            let body = names.qualify(&v.definition);
            let sql = if v.materialized {
                format!("CREATE MATERIALIZED VIEW {dest}{options} AS\n{body}\nWITH NO DATA")
            } else {
                format!("CREATE VIEW {dest}{options} AS\n{body}")
            };
            let mut step = Step::new(
                format!("view {}", v.name),
                format!("view {dest}"),
                vec![sql],
            );
            step.exists = exists("to_regclass", &dest.to_string());
            step
        }
    };
    plan.pre_data.push(step);
    Ok(())
}

fn type_sql(names: &Names<'_>, dest: &QualifiedName, kind: &TypeKind) -> Vec<String> {
    match kind {
        TypeKind::Enum(labels) => {
            let labels: Vec<String> = labels.iter().map(|l| Literal(l).to_string()).collect();
            vec![format!(
                "CREATE TYPE {dest} AS ENUM ({})",
                labels.join(", ")
            )]
        }
        TypeKind::Composite(attrs) => {
            let attrs: Vec<String> = attrs
                .iter()
                .map(|(n, t, coll)| {
                    let coll = coll
                        .as_ref()
                        .map(|c| format!(" COLLATE {c}"))
                        .unwrap_or_default();
                    format!("{} {}{coll}", Ident(n), names.qualify(t))
                })
                .collect();
            vec![format!(
                "CREATE TYPE {dest} AS (\n    {}\n)",
                attrs.join(",\n    ")
            )]
        }
        TypeKind::Domain {
            base,
            collation,
            default,
            not_null,
            checks,
        } => {
            let mut s = format!("CREATE DOMAIN {dest} AS {}", names.qualify(base));
            if let Some(c) = collation {
                s.push_str(&format!(" COLLATE {c}"));
            }
            if let Some(d) = default {
                s.push_str(&format!(" DEFAULT {}", names.qualify(d)));
            }
            if *not_null {
                s.push_str(" NOT NULL");
            }
            let mut later = Vec::new();
            for (name, def, validated) in checks {
                let c = format!("CONSTRAINT {} {}", Ident(name), names.qualify(def));
                if *validated {
                    s.push(' ');
                    s.push_str(&c);
                } else {
                    later.push(format!("ALTER DOMAIN {dest} ADD {c}"));
                }
            }
            let mut out = vec![s];
            out.extend(later);
            out
        }
        TypeKind::Range {
            subtype,
            opclass,
            collation,
            subtype_diff,
            multirange,
        } => {
            let mut opts = vec![format!("SUBTYPE = {}", names.qualify(subtype))];
            if let Some(o) = opclass {
                opts.push(format!("SUBTYPE_OPCLASS = {}", names.in_schema(o)));
            }
            if let Some(c) = collation {
                opts.push(format!("COLLATION = {c}"));
            }
            if let Some(d) = subtype_diff {
                opts.push(format!("SUBTYPE_DIFF = {}", names.qualify(d)));
            }
            if let Some(m) = multirange {
                opts.push(format!("MULTIRANGE_TYPE_NAME = {}", names.in_schema(m)));
            }
            vec![format!("CREATE TYPE {dest} AS RANGE ({})", opts.join(", "))]
        }
    }
}

/// Post-data for objects other than tables: views' triggers, rules, refreshes and
/// indexes; OWNED BY; sequence values; comments.
pub(super) fn post_data(
    names: &Names<'_>,
    created: &HashSet<ObjectKey>,
    kept: &HashSet<u32>,
    plan: &mut Plan,
) -> Result<()> {
    let cat = names.cat;
    for v in cat
        .views
        .iter()
        .filter(|v| created.contains(&ObjectKey::View(v.oid)))
    {
        let dest = names.mapping.table(&v.name);
        for ix in cat.indexes.iter().filter(|i| i.relation == v.oid) {
            plan.post_data.indexes.push(Step::new(
                format!("index {} on {}", ix.name, v.name),
                format!("index {} on {dest}", ix.name),
                vec![names.qualify(&ix.definition)],
            ));
        }
        if v.materialized {
            plan.post_data.last.push(Step::new(
                format!("refresh {}", v.name),
                format!("refresh materialized view {dest}"),
                vec![format!("REFRESH MATERIALIZED VIEW {dest}")],
            ));
        }
        table::triggers_and_rules(names, v.oid, &dest, plan)?;
    }
    for s in &cat.sequences {
        let synced = s.identity || created.contains(&ObjectKey::Sequence(s.oid));
        if !synced {
            continue;
        }
        let owner = s.owned_by.as_ref().and_then(|(t, c)| {
            names
                .relations
                .contains(t)
                .then(|| (names.relation(*t), names.column(*t, c)))
        });
        let dest = match (&owner, s.identity) {
            (Some((Some(t), _)), true) => QualifiedName::new(t.schema.clone(), s.name.name.clone()),
            (None, true) => continue,
            _ => names.in_schema(&s.name),
        };
        if !s.identity
            && let Some((Some(t), c)) = &owner
            && !s.owned_by.as_ref().is_some_and(|(o, _)| kept.contains(o))
        {
            plan.post_data.last.push(Step::new(
                format!("owned by {}", s.name),
                format!("sequence {dest} owned by {t}.{}", Ident(c)),
                vec![format!("ALTER SEQUENCE {dest} OWNED BY {t}.{}", Ident(c))],
            ));
        }
        plan.post_data.last.push(Step::new(
            format!("setval {}", s.name),
            format!("sequence value of {dest}"),
            vec![setval_forward(&dest, s.last_value, s.start)],
        ));
    }
    for c in &cat.comments {
        let synced = match c.owner {
            ObjectKey::Table(o) => names.relations.contains(&o) && !kept.contains(&o),
            k => created.contains(&k),
        };
        if !synced {
            continue;
        }
        if let Some(target) = comment_target(names, c) {
            plan.post_data.last.push(Step::new(
                format!("comment {} {}", c.object_type, c.names.join(".")),
                format!("comment on {target}"),
                vec![format!("COMMENT ON {target} IS {}", Literal(&c.text))],
            ));
        }
    }
    Ok(())
}

/// Sets the destination sequence `dest` to the source's value (`last_value` handed out,
/// or `start` when nothing was), unless the destination's next value is already at or
/// past the one this would give: a sequence the destination moved on by itself meanwhile
/// (or a kept table's sequence ahead of the source) is never set back. Comparison and
/// `setval` are one statement; next values are compared as `numeric` (no overflow).
/// The task's sequence follower moves sequences with the same statement.
pub fn setval_forward(dest: &QualifiedName, last_value: Option<i64>, start: i64) -> String {
    let (value, called) = match last_value {
        Some(v) => (v, true),
        None => (start, false),
    };
    let name = Literal(&dest.to_string());
    let target = format!("({value}::numeric + CASE WHEN {called} THEN q.seqincrement ELSE 0 END)");
    let now = "(s.last_value::numeric + CASE WHEN s.is_called THEN q.seqincrement ELSE 0 END)";
    format!(
        "SELECT pg_catalog.setval({name}, {value}, {called})
         FROM {dest} AS s, pg_catalog.pg_sequence AS q
         WHERE q.seqrelid = {name}::pg_catalog.regclass
           AND CASE WHEN q.seqincrement > 0 THEN {target} > {now} ELSE {target} < {now} END"
    )
}

/// `COMMENT ON` target from `pg_identify_object_as_address`, with names mapped.
fn comment_target(names: &Names<'_>, c: &Comment) -> Option<String> {
    let n = &c.names;
    let rel = |schema: &str, name: &str| -> QualifiedName {
        let q = QualifiedName::new(schema, name);
        match c.owner {
            ObjectKey::Table(_) | ObjectKey::View(_) => names.mapping.table(&q),
            _ => names.in_schema(&q),
        }
    };
    let args = || -> String {
        c.args
            .iter()
            .map(|a| names.qualify(a))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match (c.object_type.as_str(), n.as_slice()) {
        ("schema", [s]) => format!("SCHEMA {}", Ident(&names.mapping.schema(s))),
        ("table", [s, t]) => format!("TABLE {}", rel(s, t)),
        ("view", [s, t]) => format!("VIEW {}", rel(s, t)),
        ("materialized view", [s, t]) => format!("MATERIALIZED VIEW {}", rel(s, t)),
        ("sequence", [s, t]) => format!("SEQUENCE {}", names.in_schema(&QualifiedName::new(s, t))),
        ("index", [s, i]) => format!("INDEX {}", names.in_schema(&QualifiedName::new(s, i))),
        (kind, [s, t, col]) if kind.ends_with(" column") => {
            let q = QualifiedName::new(s, t);
            format!(
                "COLUMN {}.{}",
                rel(s, t),
                Ident(&names.mapping.column(&q, col))
            )
        }
        ("type" | "composite type", [t]) => format!("TYPE {}", names.qualify(t)),
        ("domain", [t]) => format!("DOMAIN {}", names.qualify(t)),
        ("function" | "procedure" | "aggregate", [s, f]) => format!(
            "{} {}({})",
            c.object_type.to_uppercase(),
            names.in_schema(&QualifiedName::new(s, f)),
            args()
        ),
        ("table constraint", [s, t, con]) => {
            format!("CONSTRAINT {} ON {}", Ident(con), rel(s, t))
        }
        ("domain constraint", [d, con]) => {
            format!("CONSTRAINT {} ON DOMAIN {}", Ident(con), names.qualify(d))
        }
        ("trigger", [s, t, tg]) => format!("TRIGGER {} ON {}", Ident(tg), rel(s, t)),
        ("rule", [s, t, r]) => format!("RULE {} ON {}", Ident(r), rel(s, t)),
        _ => return None,
    })
}
