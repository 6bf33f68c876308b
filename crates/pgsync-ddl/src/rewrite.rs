//! A statement with the task's name mapping applied: every table it names qualified and
//! mapped, the columns of the target table mapped, then printed back with libpg_query's
//! deparser. Used only when the mapping is not the identity (otherwise the statement runs
//! as the user wrote it, under the captured search path).
//!
//! Expressions (CHECK, defaults, index expressions) are not rewritten: a statement whose
//! expressions read a column the mapping renames is refused rather than replayed wrong.

use pg_query::NodeEnum;
use pg_query::protobuf::{self, AlterTableType, Node, ObjectType, RangeVar};
use pgsync_names::{Mapping, QualifiedName};

use crate::statement::{self, Named};

type Qualify<'a> = &'a dyn Fn(&Named) -> QualifiedName;

/// The statement's text with destination names.
pub(crate) fn mapped(
    node: &NodeEnum,
    mapping: &Mapping,
    qualify: Qualify<'_>,
) -> Result<String, String> {
    let mut node = node.clone();
    let target = statement::main_table(&node).map(|n| qualify(&n));
    if let Some(t) = &target {
        for c in statement::column_refs(&node) {
            if mapping.column(t, &c) != c {
                return Err(format!(
                    "an expression reads column {c:?}, which the mapping renames; expressions \
                     are not rewritten"
                ));
            }
        }
    }
    let col = |c: &str| match &target {
        Some(t) => mapping.column(t, c),
        None => c.to_owned(),
    };
    match &mut node {
        NodeEnum::CreateStmt(s) => {
            map_rv(s.relation.as_mut(), mapping, qualify);
            for n in &mut s.inh_relations {
                map_node_rv(n, mapping, qualify);
            }
            for e in s.table_elts.iter_mut().chain(s.constraints.iter_mut()) {
                map_element(e, mapping, qualify, &col);
            }
        }
        NodeEnum::AlterTableStmt(s) => {
            map_rv(s.relation.as_mut(), mapping, qualify);
            let is_table = ObjectType::try_from(s.objtype) == Ok(ObjectType::ObjectTable);
            for c in &mut s.cmds {
                if let Some(NodeEnum::AlterTableCmd(cmd)) = c.node.as_mut() {
                    if is_table && names_column(cmd.subtype) && !cmd.name.is_empty() {
                        cmd.name = col(&cmd.name);
                    }
                    if let Some(def) = cmd.def.as_deref_mut() {
                        map_element(def, mapping, qualify, &col);
                    }
                }
            }
        }
        NodeEnum::RenameStmt(s) => {
            let old = s.relation.as_ref().map(|r| qualify(&Named::of(r)));
            map_rv(s.relation.as_mut(), mapping, qualify);
            match ObjectType::try_from(s.rename_type) {
                Ok(ObjectType::ObjectTable) => {
                    if let Some(old) = old {
                        s.newname = mapping
                            .table(&QualifiedName::new(old.schema, &s.newname))
                            .name;
                    }
                }
                Ok(ObjectType::ObjectColumn) => {
                    s.subname = col(&s.subname);
                    s.newname = col(&s.newname);
                }
                _ => {}
            }
        }
        NodeEnum::AlterObjectSchemaStmt(s) => {
            map_rv(s.relation.as_mut(), mapping, qualify);
            s.newschema = mapping.schema(&s.newschema);
        }
        NodeEnum::IndexStmt(s) => {
            map_rv(s.relation.as_mut(), mapping, qualify);
            for p in s
                .index_params
                .iter_mut()
                .chain(s.index_including_params.iter_mut())
            {
                if let Some(NodeEnum::IndexElem(e)) = p.node.as_mut()
                    && !e.name.is_empty()
                {
                    e.name = col(&e.name);
                }
            }
        }
        NodeEnum::DropStmt(s) => {
            let is_table = ObjectType::try_from(s.remove_type) == Ok(ObjectType::ObjectTable);
            for o in &mut s.objects {
                let Some(NodeEnum::List(l)) = o.node.as_mut() else {
                    continue;
                };
                let parts: Vec<String> = l
                    .items
                    .iter()
                    .filter_map(|i| match i.node.as_ref()? {
                        NodeEnum::String(s) => Some(s.sval.clone()),
                        _ => None,
                    })
                    .collect();
                let (schema, name) = match parts.as_slice() {
                    [name] => (String::new(), name.clone()),
                    [.., schema, name] => (schema.clone(), name.clone()),
                    [] => continue,
                };
                let q = qualify(&Named {
                    schema,
                    name: name.clone(),
                    temporary: false,
                });
                let (schema, name) = if is_table {
                    let d = mapping.table(&q);
                    (d.schema, d.name)
                } else {
                    (mapping.schema(&q.schema), name)
                };
                l.items = vec![string_node(schema), string_node(name)];
            }
        }
        _ => {}
    }
    node.deparse(Default::default())
        .map_err(|e| format!("cannot be rewritten: {e}"))
}

fn string_node(s: String) -> Node {
    Node {
        node: Some(NodeEnum::String(protobuf::String { sval: s })),
    }
}

fn map_rv(rv: Option<&mut RangeVar>, mapping: &Mapping, qualify: Qualify<'_>) {
    if let Some(rv) = rv {
        let dest = mapping.table(&qualify(&Named::of(rv)));
        rv.schemaname = dest.schema;
        rv.relname = dest.name;
    }
}

fn map_node_rv(n: &mut Node, mapping: &Mapping, qualify: Qualify<'_>) {
    if let Some(NodeEnum::RangeVar(rv)) = n.node.as_mut() {
        map_rv(Some(rv), mapping, qualify);
    }
}

/// A table element or ALTER TABLE definition: a column, a constraint, `LIKE`.
fn map_element(
    n: &mut Node,
    mapping: &Mapping,
    qualify: Qualify<'_>,
    col: &dyn Fn(&str) -> String,
) {
    match n.node.as_mut() {
        Some(NodeEnum::ColumnDef(c)) => {
            c.colname = col(&c.colname);
            for k in &mut c.constraints {
                map_element(k, mapping, qualify, col);
            }
        }
        Some(NodeEnum::Constraint(k)) => {
            for key in k
                .keys
                .iter_mut()
                .chain(k.fk_attrs.iter_mut())
                .chain(k.including.iter_mut())
            {
                map_string(key, col);
            }
            if let Some(pk) = k.pktable.as_mut() {
                let q = qualify(&Named::of(pk));
                for a in &mut k.pk_attrs {
                    map_string(a, &|c: &str| mapping.column(&q, c));
                }
                map_rv(Some(pk), mapping, qualify);
            }
        }
        Some(NodeEnum::TableLikeClause(l)) => map_rv(l.relation.as_mut(), mapping, qualify),
        _ => {}
    }
}

fn map_string(n: &mut Node, f: &dyn Fn(&str) -> String) {
    if let Some(NodeEnum::String(s)) = n.node.as_mut() {
        s.sval = f(&s.sval);
    }
}

/// ALTER TABLE subcommands whose `name` is a column.
fn names_column(subtype: i32) -> bool {
    use AlterTableType::*;
    matches!(
        AlterTableType::try_from(subtype),
        Ok(AtColumnDefault
            | AtCookedColumnDefault
            | AtDropNotNull
            | AtSetNotNull
            | AtSetExpression
            | AtDropExpression
            | AtSetStatistics
            | AtSetOptions
            | AtResetOptions
            | AtSetStorage
            | AtSetCompression
            | AtDropColumn
            | AtAlterColumnType
            | AtAlterColumnGenericOptions
            | AtAddIdentity
            | AtSetIdentity
            | AtDropIdentity)
    )
}
