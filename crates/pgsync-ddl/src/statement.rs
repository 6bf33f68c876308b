//! What one parsed statement is, as far as DDL sync cares: its command tag (to find the
//! statement that fired the trigger), the tables it names, and the forms whose effect on
//! the destination would differ from the source's.
//!
//! Read-only questions (which tables, which functions) walk the statement generically
//! through its serde form: a `RangeVar` is any object with `relname` and `schemaname`.
//! Rewrites (mapping) are typed, in [`crate::rewrite`].

use pg_query::NodeEnum;
use pg_query::protobuf::{AlterTableType, ColumnDef, ConstrType, ObjectType, RangeVar};
use serde_json::Value;

/// A table a statement names: schema as written (may be empty), name, and whether it is
/// declared temporary (`CREATE TEMP TABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) temporary: bool,
}

impl Named {
    pub(crate) fn of(rv: &RangeVar) -> Self {
        Self {
            schema: rv.schemaname.clone(),
            name: rv.relname.clone(),
            temporary: rv.relpersistence == "t",
        }
    }
}

/// The command tag PostgreSQL reports for a statement (`TG_TAG`), for the statements DDL
/// sync captures; `None` for any other statement.
pub(crate) fn command_tag(node: &NodeEnum) -> Option<&'static str> {
    let obj = |t: i32| ObjectType::try_from(t).ok();
    Some(match node {
        NodeEnum::CreateSchemaStmt(_) => "CREATE SCHEMA",
        NodeEnum::CreateStmt(_) => "CREATE TABLE",
        NodeEnum::CreateTableAsStmt(s) if s.is_select_into => "SELECT INTO",
        NodeEnum::CreateTableAsStmt(s) if obj(s.objtype) == Some(ObjectType::ObjectTable) => {
            "CREATE TABLE AS"
        }
        NodeEnum::SelectStmt(s) if s.into_clause.is_some() => "SELECT INTO",
        NodeEnum::IndexStmt(_) => "CREATE INDEX",
        NodeEnum::AlterTableStmt(s) => match obj(s.objtype)? {
            ObjectType::ObjectTable => "ALTER TABLE",
            ObjectType::ObjectIndex => "ALTER INDEX",
            _ => return None,
        },
        NodeEnum::RenameStmt(s) => match obj(s.rename_type)? {
            ObjectType::ObjectTable | ObjectType::ObjectTabconstraint => "ALTER TABLE",
            ObjectType::ObjectColumn if obj(s.relation_type) == Some(ObjectType::ObjectTable) => {
                "ALTER TABLE"
            }
            ObjectType::ObjectIndex => "ALTER INDEX",
            _ => return None,
        },
        NodeEnum::AlterObjectSchemaStmt(s) => match obj(s.object_type)? {
            ObjectType::ObjectTable => "ALTER TABLE",
            _ => return None,
        },
        NodeEnum::DropStmt(s) => match obj(s.remove_type)? {
            ObjectType::ObjectTable => "DROP TABLE",
            ObjectType::ObjectIndex => "DROP INDEX",
            _ => return None,
        },
        _ => return None,
    })
}

/// The table the statement acts on (for a rename: its old name), as written.
pub(crate) fn main_table(node: &NodeEnum) -> Option<Named> {
    match node {
        NodeEnum::CreateStmt(s) => s.relation.as_ref().map(Named::of),
        NodeEnum::AlterTableStmt(s) => s.relation.as_ref().map(Named::of),
        NodeEnum::RenameStmt(s) => s.relation.as_ref().map(Named::of),
        NodeEnum::AlterObjectSchemaStmt(s) => s.relation.as_ref().map(Named::of),
        NodeEnum::IndexStmt(s) => s.relation.as_ref().map(Named::of),
        NodeEnum::CreateTableAsStmt(s) => {
            s.into.as_ref().and_then(|i| i.rel.as_ref()).map(Named::of)
        }
        NodeEnum::SelectStmt(s) => s
            .into_clause
            .as_ref()
            .and_then(|i| i.rel.as_ref())
            .map(Named::of),
        _ => None,
    }
}

/// For a table rename (`ALTER TABLE a RENAME TO b`, `ALTER TABLE a SET SCHEMA s`): the
/// new name and the new schema (empty: unchanged).
pub(crate) fn renamed_to(node: &NodeEnum) -> Option<(String, String)> {
    match node {
        NodeEnum::RenameStmt(s)
            if ObjectType::try_from(s.rename_type) == Ok(ObjectType::ObjectTable) =>
        {
            Some((String::new(), s.newname.clone()))
        }
        NodeEnum::AlterObjectSchemaStmt(s)
            if ObjectType::try_from(s.object_type) == Ok(ObjectType::ObjectTable) =>
        {
            let name = s.relation.as_ref().map(|r| r.relname.clone())?;
            Some((s.newschema.clone(), name))
        }
        _ => None,
    }
}

/// Tables a `DROP TABLE` / `DROP INDEX` names (indexes count as the names given).
pub(crate) fn dropped_names(node: &NodeEnum) -> Vec<Named> {
    let NodeEnum::DropStmt(s) = node else {
        return Vec::new();
    };
    s.objects
        .iter()
        .filter_map(|o| match o.node.as_ref()? {
            NodeEnum::List(l) => {
                let parts: Vec<String> = l
                    .items
                    .iter()
                    .filter_map(|i| match i.node.as_ref()? {
                        NodeEnum::String(s) => Some(s.sval.clone()),
                        _ => None,
                    })
                    .collect();
                match parts.as_slice() {
                    [name] => Some(Named {
                        schema: String::new(),
                        name: name.clone(),
                        temporary: false,
                    }),
                    [.., schema, name] => Some(Named {
                        schema: schema.clone(),
                        name: name.clone(),
                        temporary: false,
                    }),
                    [] => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// Every table the statement names anywhere (`RangeVar`s: the target, `REFERENCES`,
/// `INHERITS`, `LIKE`, ...).
pub(crate) fn range_vars(node: &NodeEnum) -> Vec<Named> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(node) {
        collect_range_vars(&v, &mut out);
    }
    out
}

fn collect_range_vars(v: &Value, out: &mut Vec<Named>) {
    match v {
        Value::Object(map) => {
            if let (Some(Value::String(rel)), Some(schema)) =
                (map.get("relname"), map.get("schemaname"))
            {
                out.push(Named {
                    schema: schema.as_str().unwrap_or_default().to_owned(),
                    name: rel.clone(),
                    temporary: map.get("relpersistence").and_then(Value::as_str) == Some("t"),
                });
            }
            for child in map.values() {
                collect_range_vars(child, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_range_vars(child, out);
            }
        }
        _ => {}
    }
}

/// Whether the serde form of `v` holds a node of one of `kinds` (e.g. `FuncCall`).
fn contains_kind(v: &Value, kinds: &[&str]) -> bool {
    match v {
        Value::Object(map) => map
            .iter()
            .any(|(k, child)| kinds.contains(&k.as_str()) || contains_kind(child, kinds)),
        Value::Array(items) => items.iter().any(|c| contains_kind(c, kinds)),
        _ => false,
    }
}

/// Column names an expression reads (`ColumnRef`s, last field).
pub(crate) fn column_refs(node: &NodeEnum) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(node) {
        collect_column_refs(&v, &mut out);
    }
    out
}

fn collect_column_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(cr)) = map.get("ColumnRef")
                && let Some(Value::Array(fields)) = cr.get("fields")
                && let Some(last) = fields.last()
                && let Some(name) = last.pointer("/node/String/sval").and_then(Value::as_str)
            {
                out.push(name.to_owned());
            }
            for child in map.values() {
                collect_column_refs(child, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_column_refs(child, out);
            }
        }
        _ => {}
    }
}

/// Nodes that make a value depend on when or where it is computed.
const NOT_CONSTANT: &[&str] = &[
    "FuncCall",
    "SqlvalueFunction",
    "SubLink",
    "ColumnRef",
    "ParamRef",
    "NextValueExpr",
];

/// Nodes that make a rewrite's result depend on where it runs.
const NOT_DETERMINISTIC: &[&str] = &["FuncCall", "SqlvalueFunction", "SubLink", "ParamRef"];

/// Serial pseudo-types: adding such a column numbers the existing rows in physical
/// order, which differs between source and destination.
const SERIAL_TYPES: &[&str] = &[
    "serial",
    "serial2",
    "serial4",
    "serial8",
    "smallserial",
    "bigserial",
];

/// Why replaying the statement on the destination would not give the source's result,
/// if it would not.
/// `empty`: the target table holds no rows (a computed default then fills nothing).
pub(crate) fn unsupported_form(node: &NodeEnum, empty: bool) -> Option<String> {
    match node {
        NodeEnum::CreateTableAsStmt(_) => Some(CREATE_AS.into()),
        NodeEnum::SelectStmt(s) if s.into_clause.is_some() => Some(CREATE_AS.into()),
        NodeEnum::AlterTableStmt(s) => s.cmds.iter().find_map(|c| match c.node.as_ref()? {
            NodeEnum::AlterTableCmd(cmd) if !empty => alter_cmd_problem(cmd),
            _ => None,
        }),
        _ => None,
    }
}

const CREATE_AS: &str = "creates a table from a query: its rows are not in the change stream (create the \
     table, then INSERT ... SELECT)";

fn alter_cmd_problem(cmd: &pg_query::protobuf::AlterTableCmd) -> Option<String> {
    let def = cmd.def.as_ref().and_then(|d| d.node.as_ref());
    match AlterTableType::try_from(cmd.subtype).ok()? {
        AlterTableType::AtAddColumn => match def? {
            NodeEnum::ColumnDef(col) => added_column_problem(col),
            _ => None,
        },
        AlterTableType::AtAlterColumnType => match def? {
            NodeEnum::ColumnDef(col) => {
                let using = col.raw_default.as_ref()?;
                let v = serde_json::to_value(using.as_ref()).ok()?;
                contains_kind(&v, NOT_DETERMINISTIC).then(|| {
                    format!(
                        "changes the type of column {:?} with a USING expression that calls \
                         functions: the rewritten rows are not in the change stream and the \
                         destination could compute other values",
                        col.colname
                    )
                })
            }
            _ => None,
        },
        _ => None,
    }
}

fn added_column_problem(col: &ColumnDef) -> Option<String> {
    let type_name = col
        .type_name
        .as_ref()
        .and_then(|t| t.names.last())
        .and_then(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.to_lowercase()),
            _ => None,
        })
        .unwrap_or_default();
    if SERIAL_TYPES.contains(&type_name.as_str()) {
        return Some(format!(
            "adds {type_name} column {:?}: existing rows are numbered in physical order, which \
             differs between the databases",
            col.colname
        ));
    }
    let mut defaults: Vec<&pg_query::protobuf::Node> =
        col.raw_default.iter().map(|b| &**b).collect();
    for c in &col.constraints {
        if let Some(NodeEnum::Constraint(k)) = c.node.as_ref() {
            match ConstrType::try_from(k.contype) {
                Ok(ConstrType::ConstrIdentity) => {
                    return Some(format!(
                        "adds identity column {:?}: existing rows are numbered in physical \
                         order, which differs between the databases",
                        col.colname
                    ));
                }
                Ok(ConstrType::ConstrDefault) => defaults.extend(k.raw_expr.as_deref()),
                _ => {}
            }
        }
    }
    for d in defaults {
        let v = serde_json::to_value(d).ok()?;
        if contains_kind(&v, NOT_CONSTANT) {
            return Some(format!(
                "adds column {:?} with a default that is not a constant: existing rows get it \
                 computed on each database at a different time (add the column, then UPDATE)",
                col.colname
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(sql: &str) -> NodeEnum {
        let parsed = pg_query::parse(sql, 0).unwrap();
        parsed.protobuf.stmts[0]
            .stmt
            .as_ref()
            .unwrap()
            .node
            .clone()
            .unwrap()
    }

    #[test]
    fn command_tags_match_what_postgresql_reports() {
        let cases = [
            ("create table t (a int)", Some("CREATE TABLE")),
            ("create temp table t (a int)", Some("CREATE TABLE")),
            ("alter table t rename to u", Some("ALTER TABLE")),
            ("alter table t rename column a to b", Some("ALTER TABLE")),
            ("alter table t set schema s", Some("ALTER TABLE")),
            ("alter table t add column b int", Some("ALTER TABLE")),
            ("alter index i rename to j", Some("ALTER INDEX")),
            ("drop table t, u cascade", Some("DROP TABLE")),
            ("drop index i", Some("DROP INDEX")),
            ("create unique index on t (a)", Some("CREATE INDEX")),
            ("create table t2 as select 1", Some("CREATE TABLE AS")),
            ("select 1 into t3", Some("SELECT INTO")),
            ("create schema if not exists s", Some("CREATE SCHEMA")),
            ("create view v as select 1", None),
            ("insert into t values (1)", None),
        ];
        for (sql, tag) in cases {
            assert_eq!(command_tag(&first(sql)), tag, "{sql}");
        }
    }

    #[test]
    fn every_table_a_statement_names_is_found() {
        let names: Vec<String> = range_vars(&first(
            "create table s.c (id int references p (id), like tpl) inherits (base)",
        ))
        .into_iter()
        .map(|n| format!("{}.{}", n.schema, n.name))
        .collect();
        for want in ["s.c", ".p", ".tpl", ".base"] {
            assert!(names.contains(&want.to_owned()), "{want} in {names:?}");
        }
        let dropped = dropped_names(&first("drop table if exists a, s.b cascade"));
        assert_eq!(dropped.len(), 2);
        assert_eq!(
            (dropped[1].schema.as_str(), dropped[1].name.as_str()),
            ("s", "b")
        );
    }

    #[test]
    fn constant_defaults_are_fine_and_computed_ones_are_not() {
        for ok in [
            "alter table t add column c int default 0",
            "alter table t add column c text default 'x'::text",
            "alter table t add column c int default -1 not null",
            "alter table t alter column c type bigint using c::bigint",
            "alter table t alter column c set default now()",
        ] {
            assert_eq!(unsupported_form(&first(ok), false), None, "{ok}");
        }
        for bad in [
            "alter table t add column c timestamptz default now()",
            "alter table t add column c timestamptz default current_timestamp",
            "alter table t add column c float default random()",
            "alter table t add column c bigserial",
            "alter table t add column c int generated always as identity",
            "alter table t alter column c type text using md5(random()::text)",
            "create table t2 as select * from t",
        ] {
            assert!(unsupported_form(&first(bad), false).is_some(), "{bad}");
            if bad.starts_with("alter") {
                assert_eq!(
                    unsupported_form(&first(bad), true),
                    None,
                    "{bad} on an empty table"
                );
            }
        }
    }
}
