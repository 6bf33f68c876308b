//! From a captured message to the statements to run on the destination.
//!
//! ```text
//!  query text ─ parse (libpg_query) ─ statements
//!     pick: explicit -> all of them; else the seq-th statement whose tag is the message's
//!     check: it is the statement the trigger saw (the table matches the captured objects),
//!            else it ran inside a function or DO block
//!     tables: every table it names, qualified (captured objects first, then the
//!            captured search_path); none selected -> ignored; some -> refused
//!     forms: temporary objects, CREATE TABLE AS, computed defaults, USING with functions
//!     text: as written (identity mapping) or rewritten through the mapping and deparsed
//! ```
//! Pure: no I/O, so every decision is unit-tested.

use pg_query::NodeEnum;
use pgsync_names::{Mapping, QualifiedName, Selection};
use serde::{Deserialize, Serialize};

use crate::message::DdlMessage;
use crate::rewrite;
use crate::statement::{self, Named};

/// What to do with DDL that cannot be replayed faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unsupported {
    /// Stop the task, naming the statement (default).
    #[default]
    Fail,
    /// Leave it out, with a warning; the destination's schema may then differ.
    Skip,
}

/// What the planner decided for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run these statements.
    Replay(Plan),
    /// Nothing of the task's selection is involved.
    Ignore(String),
    /// Cannot be replayed faithfully; the task's `ddl_unsupported` decides.
    Unsupported {
        /// The statement (or the whole query text when it could not be picked out).
        statement: String,
        /// Why.
        reason: String,
    },
}

/// Statements to run on the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `SET LOCAL search_path` to this (destination schema names) first.
    pub search_path: Vec<String>,
    /// The statements, in order, each with destination names.
    pub statements: Vec<String>,
    /// The source tables the statements act on (for the caller's caches).
    pub tables: Vec<QualifiedName>,
    /// The source tables the statements create (destination names: map them).
    pub created: Vec<QualifiedName>,
}

/// Plans the replay of captured DDL for one task.
#[derive(Debug, Clone)]
pub struct Planner {
    selection: Selection,
    mapping: Mapping,
}

/// A statement picked out of the query text.
struct Picked<'q> {
    node: NodeEnum,
    text: &'q str,
}

impl Planner {
    /// For a task with this selection and mapping.
    pub fn new(selection: Selection, mapping: Mapping) -> Self {
        Self { selection, mapping }
    }

    /// Decides what `msg` means for the destination.
    pub fn plan(&self, msg: &DdlMessage) -> Decision {
        let unsupported = |statement: &str, reason: String| Decision::Unsupported {
            statement: statement.trim().to_owned(),
            reason,
        };
        let parsed = match pg_query::parse(&msg.query, 0) {
            Ok(p) => p,
            Err(e) => return unsupported(&msg.query, format!("cannot be parsed: {e}")),
        };
        let mut all = Vec::new();
        for raw in &parsed.protobuf.stmts {
            let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.clone()) else {
                continue;
            };
            let text = statement_text(&msg.query, raw.stmt_location, raw.stmt_len);
            all.push(Picked { node, text });
        }
        let picked: Vec<Picked<'_>> = if msg.explicit {
            all
        } else {
            let nth = all
                .into_iter()
                .filter(|p| statement::command_tag(&p.node) == Some(msg.tag.as_str()))
                .nth(msg.seq as usize);
            match nth {
                Some(p) => vec![p],
                None => {
                    return unsupported(
                        &msg.query,
                        format!(
                            "{} was issued from a function or DO block (the query text does not \
                             hold it); use pgsync.replicate_ddl(text) for such DDL",
                            msg.tag
                        ),
                    );
                }
            }
        };

        let mut tables: Vec<QualifiedName> = Vec::new();
        let mut created: Vec<QualifiedName> = Vec::new();
        let mut statements = Vec::new();
        for p in &picked {
            if !msg.explicit && !self.is_the_fired_statement(msg, &p.node) {
                return unsupported(
                    &msg.query,
                    format!(
                        "{} was issued from a function or DO block (its object is not the one \
                         in the query text); use pgsync.replicate_ddl(text) for such DDL",
                        msg.tag
                    ),
                );
            }
            if let NodeEnum::CreateSchemaStmt(cs) = &p.node {
                match self.plan_schema(cs, p.text) {
                    Ok(Some(text)) => statements.push(text),
                    Ok(None) => {}
                    Err(reason) => return unsupported(p.text, reason),
                }
                continue;
            }
            let named = self.tables_of(msg, &p.node);
            if named.iter().any(|(_, temp)| *temp) || touches_temp(msg) {
                return unsupported(p.text, "acts on a temporary object".into());
            }
            // A new partition goes with its parent (the selection names the parent).
            let partition = match &p.node {
                NodeEnum::CreateStmt(c) if c.partbound.is_some() => {
                    statement::main_table(&p.node).map(|t| self.qualify(msg, &t))
                }
                _ => None,
            };
            let outside: Vec<String> = named
                .iter()
                .filter(|(t, _)| {
                    *t != *INDEX_SELECTED
                        && Some(t) != partition.as_ref()
                        && (t.schema == STATE_SCHEMA || !self.selection.contains(t))
                })
                .map(|(t, _)| t.to_string())
                .collect();
            if named.is_empty() && msg.explicit {
                // pgsync.replicate_ddl: what names no table (a function, a type) is sent
                // as the user wrote it.
                statements.push(p.text.trim().to_owned());
                continue;
            }
            if named.is_empty() || outside.len() == named.len() - usize::from(partition.is_some()) {
                continue;
            }
            if !outside.is_empty() {
                return unsupported(
                    p.text,
                    format!(
                        "touches tables outside the task's selection: {}",
                        outside.join(", ")
                    ),
                );
            }
            let empty = !msg.commands.is_empty()
                && msg
                    .commands
                    .iter()
                    .filter_map(|c| c.relation.as_ref())
                    .all(|r| r.empty == Some(true));
            if let Some(reason) = statement::unsupported_form(&p.node, empty) {
                return unsupported(p.text, reason);
            }
            let text = if self.mapping.is_identity() {
                p.text.trim().to_owned()
            } else {
                match rewrite::mapped(&p.node, &self.mapping, &|n: &Named| self.qualify(msg, n)) {
                    Ok(t) => t,
                    Err(reason) => return unsupported(p.text, reason),
                }
            };
            statements.push(text);
            if let (NodeEnum::CreateStmt(_), Some(t)) = (&p.node, statement::main_table(&p.node)) {
                created.push(self.qualify(msg, &t));
            }
            for (t, _) in named {
                if t != *INDEX_SELECTED && !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
        if statements.is_empty() {
            return Decision::Ignore(format!(
                "{} touches no table of the task's selection",
                if msg.explicit {
                    "replicate_ddl"
                } else {
                    &msg.tag
                }
            ));
        }
        Decision::Replay(Plan {
            search_path: msg
                .search_path
                .iter()
                .map(|s| self.mapping.schema(s))
                .collect(),
            statements,
            tables,
            created,
        })
    }

    /// `CREATE SCHEMA`: replayed when the selection takes tables of that schema (so that
    /// tables created there later have somewhere to go).
    fn plan_schema(
        &self,
        cs: &pg_query::protobuf::CreateSchemaStmt,
        text: &str,
    ) -> Result<Option<String>, String> {
        let covered = cs.schemaname != STATE_SCHEMA
            && self
                .selection
                .include
                .iter()
                .any(|p| p.matches_schema(&cs.schemaname));
        if !covered {
            return Ok(None);
        }
        if !cs.schema_elts.is_empty() {
            return Err(
                "creates objects inside CREATE SCHEMA; create the schema, then its objects".into(),
            );
        }
        if self.mapping.is_identity() {
            return Ok(Some(text.trim().to_owned()));
        }
        let mut cs = cs.clone();
        cs.schemaname = self.mapping.schema(&cs.schemaname);
        NodeEnum::CreateSchemaStmt(cs)
            .deparse(Default::default())
            .map(Some)
            .map_err(|e| format!("cannot be rewritten: {e}"))
    }

    /// Whether `node` is the statement whose objects the trigger reported: the table it
    /// acts on is among the captured ones. DDL run by a function reports the function's
    /// objects while `current_query()` is the caller's text.
    fn is_the_fired_statement(&self, msg: &DdlMessage, node: &NodeEnum) -> bool {
        let captured: Vec<&str> = msg
            .commands
            .iter()
            .filter_map(|c| c.relation.as_ref().map(|r| r.name.as_str()))
            .chain(
                msg.dropped
                    .iter()
                    .filter(|d| d.object_type == "table" || d.object_type == "index")
                    .filter_map(|d| d.names.get(1).map(String::as_str)),
            )
            .collect();
        if captured.is_empty() {
            // IF [NOT] EXISTS that did nothing: nothing to compare.
            return true;
        }
        let mut expected: Vec<String> = Vec::new();
        if let Some((_, new)) = statement::renamed_to(node) {
            expected.push(new);
        } else if let Some(t) = statement::main_table(node) {
            expected.push(t.name);
        }
        expected.extend(statement::dropped_names(node).into_iter().map(|n| n.name));
        expected.is_empty() || expected.iter().any(|e| captured.contains(&e.as_str()))
    }

    /// Every table the statement names, qualified, with whether it is temporary.
    fn tables_of(&self, msg: &DdlMessage, node: &NodeEnum) -> Vec<(QualifiedName, bool)> {
        let mut named: Vec<Named> = statement::range_vars(node);
        named.extend(statement::dropped_names(node));
        let is_index_stmt = matches!(
            node,
            NodeEnum::DropStmt(_) | NodeEnum::RenameStmt(_) | NodeEnum::AlterTableStmt(_)
        ) && statement::command_tag(node).is_some_and(|t| t.ends_with("INDEX"));
        let mut out: Vec<(QualifiedName, bool)> = Vec::new();
        if is_index_stmt {
            // An index statement names the index; its table is in the captured objects.
            for r in msg.commands.iter().filter_map(|c| c.relation.as_ref()) {
                out.push((QualifiedName::new(&r.schema, &r.name), r.persistence == "t"));
            }
            for d in &msg.dropped {
                if d.object_type == "index" && d.names.len() >= 2 {
                    // A dropped index's table is not reported (it is gone from the
                    // catalog by then); the index's schema is its table's, so the index
                    // counts as selected when the selection covers tables of its schema.
                    let schema = &d.names[0];
                    if self
                        .selection
                        .include
                        .iter()
                        .any(|p| p.matches_schema(schema))
                    {
                        out.push((INDEX_SELECTED.clone(), d.temporary));
                    } else {
                        out.push((QualifiedName::new(schema, &d.names[1]), d.temporary));
                    }
                }
            }
            if out.is_empty() {
                // Nothing was captured (IF EXISTS that did nothing): judged by schema.
                for n in &named {
                    out.push((self.qualify(msg, n), n.temporary));
                }
            }
            return dedup(out);
        }
        for n in &named {
            out.push((self.qualify(msg, n), n.temporary));
        }
        if let Some((schema, new)) = statement::renamed_to(node)
            && let Some(old) = statement::main_table(node)
        {
            let old_q = self.qualify(msg, &old);
            let schema = if schema.is_empty() {
                old_q.schema
            } else {
                schema
            };
            out.push((QualifiedName::new(schema, new), false));
        }
        dedup(out)
    }

    /// The source table a name in the statement refers to: as written when qualified;
    /// else the captured object of that name; else the first schema of the captured
    /// search path (where PostgreSQL creates unqualified tables).
    fn qualify(&self, msg: &DdlMessage, n: &Named) -> QualifiedName {
        if !n.schema.is_empty() {
            return QualifiedName::new(&n.schema, &n.name);
        }
        let captured = msg
            .commands
            .iter()
            .filter_map(|c| c.relation.as_ref())
            .map(|r| (r.schema.as_str(), r.name.as_str()))
            .chain(msg.dropped.iter().filter_map(|d| match d.names.as_slice() {
                [schema, name, ..] if d.object_type == "table" => {
                    Some((schema.as_str(), name.as_str()))
                }
                _ => None,
            }))
            .find(|(_, name)| *name == n.name);
        if let Some((schema, _)) = captured {
            return QualifiedName::new(schema, &n.name);
        }
        // A rename reports the new name only; the old one lives in the same schema.
        if msg.tag == "ALTER TABLE"
            && let [only] = msg
                .commands
                .iter()
                .filter_map(|c| c.relation.as_ref())
                .collect::<Vec<_>>()
                .as_slice()
            && !only.schema.is_empty()
            && msg.commands.len() == 1
        {
            return QualifiedName::new(&only.schema, &n.name);
        }
        let schema = msg
            .search_path
            .first()
            .cloned()
            .unwrap_or_else(|| "public".into());
        QualifiedName::new(schema, &n.name)
    }
}

/// pgsync's own schema on every side: never synced, whatever the selection says.
const STATE_SCHEMA: &str = "pgsync";

/// Stands for a dropped index in a schema the selection covers (its table is unknown).
static INDEX_SELECTED: std::sync::LazyLock<QualifiedName> =
    std::sync::LazyLock::new(|| QualifiedName::new("", ""));

/// Whether any captured object is temporary.
fn touches_temp(msg: &DdlMessage) -> bool {
    msg.commands
        .iter()
        .filter_map(|c| c.relation.as_ref())
        .any(|r| r.persistence == "t")
        || msg.dropped.iter().any(|d| d.temporary)
}

fn dedup(v: Vec<(QualifiedName, bool)>) -> Vec<(QualifiedName, bool)> {
    let mut out: Vec<(QualifiedName, bool)> = Vec::with_capacity(v.len());
    for (t, temp) in v {
        match out.iter_mut().find(|(o, _)| *o == t) {
            Some(existing) => existing.1 |= temp,
            None => out.push((t, temp)),
        }
    }
    out
}

/// The text of one statement of `query` (locations are byte offsets; a length of 0 means
/// "to the end").
fn statement_text(query: &str, location: i32, len: i32) -> &str {
    let start = usize::try_from(location).unwrap_or(0).min(query.len());
    let end = match usize::try_from(len) {
        Ok(0) | Err(_) => query.len(),
        Ok(n) => start.saturating_add(n).min(query.len()),
    };
    query.get(start..end).unwrap_or(query)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
