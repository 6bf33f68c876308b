//! From a [`Catalog`] to the statements that recreate it on the destination.
//!
//! ```text
//! pre-data   schemas, extensions, then types / sequences / tables (columns, defaults,
//!            identity, generated, CHECK) / functions / views in pg_depend order
//!            -- one destination transaction
//! data       COPY (see `copy`)
//! post-data  1. index builds, in parallel on several connections: the unique indexes
//!               behind PK/UNIQUE, other indexes, EXCLUDE constraints
//!            2. ADD CONSTRAINT .. USING INDEX (instant), PKs of partitioned tables
//!            3. foreign keys, in parallel
//!            4. materialized view refresh, triggers, rules, OWNED BY, replica identity,
//!               CLUSTER ON, NOT VALID checks, comments, sequence values
//! ```
//! PK and UNIQUE constraints move from pre-data to post-data for tables this run creates:
//! loading into an unindexed heap and building the index once is about twice as fast as
//! maintaining it row by row (see the benchmark notes). Tables kept in `ignore` mode keep
//! their own constraints and are not touched.
//!
//! Every name written goes through the [`Mapping`]; server-printed text is rewritten with
//! `sqltext` when (and only when) the mapping renames something.

mod objects;
mod order;
mod table;

pub use objects::setval_forward;

use std::collections::{HashMap, HashSet};

use pgsync_names::{Mapping, QualifiedName, Selection};

use crate::catalog::{Catalog, ObjectKey};
use crate::error::{Result, SnapshotError};
use crate::sqltext;

/// What to do with selected tables that already exist on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingTables {
    /// Refuse to start, listing them.
    #[default]
    Error,
    /// Keep them (and their rows); copied rows that clash on a key are skipped.
    Ignore,
}

/// One unit of DDL: statements run in one transaction, recorded under `key` once done.
#[derive(Debug, Clone)]
pub struct Step {
    /// Stable identity, used to skip the step when a run resumes.
    pub key: String,
    /// For progress and errors.
    pub what: String,
    /// The statements.
    pub sql: Vec<String>,
    /// In `ignore` mode: a query returning one boolean, true when the object exists.
    pub exists: Option<String>,
}

impl Step {
    fn new(key: impl Into<String>, what: impl Into<String>, sql: Vec<String>) -> Self {
        Self {
            key: key.into(),
            what: what.into(),
            sql,
            exists: None,
        }
    }
}

/// One table whose rows are copied.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Source oid.
    pub oid: u32,
    /// Source name.
    pub source: QualifiedName,
    /// Destination name.
    pub dest: QualifiedName,
    /// Columns read on the source (generated columns left out).
    pub source_columns: Vec<String>,
    /// The same columns' destination names.
    pub dest_columns: Vec<String>,
    /// Heap size on the source, bytes.
    pub bytes: i64,
    /// Row estimate.
    pub estimated_rows: f64,
    /// It existed on the destination before (`ignore` mode): rows are merged, keeping the
    /// destination's row on a key clash.
    pub existed: bool,
    /// A partition: the source name of its tree's root (the tree is copied as of one
    /// snapshot, since changes arrive under the root's name).
    pub tree: Option<QualifiedName>,
    /// Only rows matching this condition (`[[objects.table]] row_filter` of the table or
    /// of its tree's root).
    pub row_filter: Option<String>,
}

/// Post-data steps by stage.
#[derive(Debug, Clone, Default)]
pub struct PostData {
    /// Index builds (parallel).
    pub indexes: Vec<Step>,
    /// Constraints on built indexes, PKs of partitioned tables (sequential).
    pub attach: Vec<Step>,
    /// Foreign keys (parallel).
    pub foreign_keys: Vec<Step>,
    /// Everything else, in order.
    pub last: Vec<Step>,
}

/// The whole schema sync and copy plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Pre-data steps in dependency order.
    pub pre_data: Vec<Step>,
    /// Tables to copy (leaf tables only: a partitioned table's rows live in partitions).
    pub tables: Vec<TablePlan>,
    /// Post-data steps.
    pub post_data: PostData,
    /// Objects left out, with the reason.
    pub skipped: Vec<String>,
}

/// Names on the destination, in one place.
pub(crate) struct Names<'a> {
    pub(crate) cat: &'a Catalog,
    pub(crate) mapping: &'a Mapping,
    pub(crate) relations: HashSet<u32>,
    identity: bool,
}

impl Names<'_> {
    /// Destination name of a synced table or view.
    pub(crate) fn relation(&self, oid: u32) -> Option<QualifiedName> {
        self.cat.relation_name(oid).map(|n| self.mapping.table(n))
    }

    /// Destination name of an object that follows its schema only (types, sequences,
    /// routines, indexes).
    pub(crate) fn in_schema(&self, name: &QualifiedName) -> QualifiedName {
        QualifiedName::new(self.mapping.schema(&name.schema), name.name.clone())
    }

    /// The rename for a qualified name found in server-printed text, if any.
    fn rename(&self, name: &QualifiedName) -> Option<QualifiedName> {
        let rel = self
            .cat
            .tables
            .iter()
            .find(|t| &t.name == name)
            .map(|t| t.oid)
            .or_else(|| {
                self.cat
                    .views
                    .iter()
                    .find(|v| &v.name == name)
                    .map(|v| v.oid)
            });
        let new = match rel {
            Some(oid) if self.relations.contains(&oid) => self.mapping.table(name),
            _ => self.in_schema(name),
        };
        (&new != name).then_some(new)
    }

    /// Server-printed text with qualified names mapped.
    pub(crate) fn qualify(&self, text: &str) -> String {
        if self.identity {
            return text.to_owned();
        }
        sqltext::rewrite_qualified(text, &|n| self.rename(n))
    }

    /// Destination name of a column.
    pub(crate) fn column(&self, table: u32, column: &str) -> String {
        match self.cat.relation_name(table) {
            Some(n) => self.mapping.column(n, column),
            None => column.to_owned(),
        }
    }

    /// Server-printed text about one table with qualified names and its column names
    /// mapped.
    pub(crate) fn qualify_columns(&self, table: u32, text: &str, inside_parens: bool) -> String {
        if self.identity {
            return text.to_owned();
        }
        let qualified = self.qualify(text);
        let Some(t) = self.cat.table(table) else {
            return qualified;
        };
        let map = |c: &str| {
            t.columns.iter().find(|col| col.name == c).and_then(|_| {
                let d = self.mapping.column(&t.name, c);
                (d != c).then_some(d)
            })
        };
        sqltext::rewrite_columns(&qualified, inside_parens, &map)
    }

    /// Whether the mapping renames a relation or any of its columns (other than by a
    /// plain schema rename).
    pub(crate) fn renames_inside(&self, oid: u32) -> bool {
        let Some(name) = self.cat.relation_name(oid) else {
            return false;
        };
        if self.mapping.table(name) != self.in_schema(name) {
            return true;
        }
        self.cat.table(oid).is_some_and(|t| {
            t.columns
                .iter()
                .any(|c| self.mapping.column(name, &c.name) != c.name)
        })
    }
}

impl Plan {
    /// Destination names of the selected tables (to ask the destination which exist).
    pub fn destination_tables(
        cat: &Catalog,
        selection: &Selection,
        mapping: &Mapping,
    ) -> Vec<QualifiedName> {
        cat.tables
            .iter()
            .filter(|t| selection.contains(&t.name))
            .map(|t| mapping.table(&t.name))
            .collect()
    }

    /// Builds the plan. `existing` holds destination names of selected tables that
    /// already exist there.
    pub fn build(
        cat: &Catalog,
        selection: &Selection,
        mapping: &Mapping,
        mode: ExistingTables,
        existing: &HashSet<QualifiedName>,
    ) -> Result<Self> {
        check_named_tables_exist(cat, selection)?;
        check_partition_trees(cat, selection)?;
        let mut relations: HashSet<u32> = cat
            .tables
            .iter()
            .filter(|t| selection.contains(&t.name))
            .map(|t| t.oid)
            .collect();
        relations.extend(
            cat.views
                .iter()
                .filter(|v| selection.contains(&v.name))
                .map(|v| v.oid),
        );
        let names = Names {
            cat,
            mapping,
            relations,
            identity: mapping.is_identity(),
        };
        // A kept partitioned table keeps its own partitions (the destination may partition
        // it differently): the whole tree is kept, and its rows go in through the root.
        let kept: HashSet<u32> = cat
            .tables
            .iter()
            .filter(|t| {
                names.relations.contains(&t.oid)
                    && (existing.contains(&mapping.table(&t.name))
                        || existing.contains(&mapping.table(&root_of(cat, t).name)))
            })
            .map(|t| t.oid)
            .collect();
        if mode == ExistingTables::Error && !kept.is_empty() {
            let mut tables: Vec<QualifiedName> =
                kept.iter().filter_map(|o| names.relation(*o)).collect();
            tables.sort();
            return Err(SnapshotError::TablesExist { tables });
        }
        check_collisions(&names)?;

        let mut plan = Plan::default();
        let nodes = pre_data_nodes(&names, &kept, &mut plan.skipped);
        let ordered = order::sort(&nodes, &cat.depends);
        let node_set: HashSet<ObjectKey> = ordered.iter().copied().collect();
        for key in &ordered {
            objects::pre_data_step(&names, *key, &mut plan)?;
        }
        for t in cat
            .tables
            .iter()
            .filter(|t| names.relations.contains(&t.oid))
        {
            let created = !kept.contains(&t.oid);
            if created {
                table::post_data(&names, t, &mut plan)?;
            }
            if !t.partitioned {
                let root = root_of(cat, t);
                let tree = (root.oid != t.oid).then(|| root.name.clone());
                // Into the root when the destination's tree is its own.
                let into = if tree.is_some() && !created { root } else { t };
                plan.tables.push(TablePlan {
                    oid: t.oid,
                    source: t.name.clone(),
                    dest: mapping.table(&into.name),
                    tree,
                    row_filter: selection
                        .filter_of(&root.name)
                        .and_then(|f| f.row_filter.clone()),
                    source_columns: copy_columns(t).map(|c| c.name.clone()).collect(),
                    dest_columns: copy_columns(t)
                        .map(|c| mapping.column(&t.name, &c.name))
                        .collect(),
                    bytes: t.bytes,
                    estimated_rows: t.estimated_rows,
                    existed: !created,
                });
            }
        }
        objects::post_data(&names, &node_set, &kept, &mut plan)?;
        Ok(plan)
    }
}

/// Columns that COPY reads and writes: generated columns are computed by the destination.
fn copy_columns(t: &crate::catalog::Table) -> impl Iterator<Item = &crate::catalog::Column> {
    t.columns.iter().filter(|c| c.generated.is_none())
}

/// Pre-data objects, minus those that depend on relations left out of the selection.
fn pre_data_nodes(
    names: &Names<'_>,
    kept: &HashSet<u32>,
    skipped: &mut Vec<String>,
) -> Vec<ObjectKey> {
    let cat = names.cat;
    let mut nodes: Vec<ObjectKey> = cat
        .schemas
        .iter()
        .map(|s| ObjectKey::Schema(s.oid))
        .collect();
    let schema_names: HashSet<&str> = cat.schemas.iter().map(|s| s.name.as_str()).collect();
    nodes.extend(
        cat.extensions
            .iter()
            .filter(|e| {
                cat.needed_extensions.contains(&e.oid) || schema_names.contains(e.schema.as_str())
            })
            .map(|e| ObjectKey::Extension(e.oid)),
    );
    nodes.extend(cat.types.iter().map(|t| ObjectKey::Type(t.oid)));
    nodes.extend(
        cat.sequences
            .iter()
            .filter(|s| !s.identity)
            .map(|s| ObjectKey::Sequence(s.oid)),
    );
    nodes.extend(
        cat.tables
            .iter()
            .filter(|t| names.relations.contains(&t.oid) && !kept.contains(&t.oid))
            .map(|t| ObjectKey::Table(t.oid)),
    );
    nodes.extend(cat.functions.iter().map(|f| ObjectKey::Function(f.oid)));
    nodes.extend(
        cat.views
            .iter()
            .filter(|v| names.relations.contains(&v.oid))
            .map(|v| ObjectKey::View(v.oid)),
    );
    // Anything that needs a relation outside the selection is left out, transitively.
    let mut out: HashSet<ObjectKey> = HashSet::new();
    for (from, to) in &cat.depends {
        if let ObjectKey::Table(o) | ObjectKey::View(o) = to
            && !names.relations.contains(o)
        {
            out.insert(*from);
        }
    }
    let mut changed = true;
    while changed {
        changed = false;
        for (from, to) in &cat.depends {
            if out.contains(to) && out.insert(*from) {
                changed = true;
            }
        }
    }
    let mut by_key: HashMap<ObjectKey, String> = HashMap::new();
    for k in &out {
        by_key.insert(*k, describe(cat, *k));
    }
    nodes.retain(|k| match by_key.get(k) {
        Some(d) if !matches!(k, ObjectKey::Table(_)) => {
            skipped.push(format!("{d}: depends on a relation outside the selection"));
            false
        }
        _ => true,
    });
    nodes
}

/// A readable name for an object key.
pub(crate) fn describe(cat: &Catalog, key: ObjectKey) -> String {
    let name = |n: Option<&QualifiedName>| n.map(ToString::to_string).unwrap_or_default();
    match key {
        ObjectKey::Schema(o) => format!(
            "schema {}",
            cat.schemas
                .iter()
                .find(|s| s.oid == o)
                .map(|s| s.name.as_str())
                .unwrap_or("?")
        ),
        ObjectKey::Extension(o) => format!(
            "extension {}",
            cat.extensions
                .iter()
                .find(|e| e.oid == o)
                .map(|e| e.name.as_str())
                .unwrap_or("?")
        ),
        ObjectKey::Type(o) => format!(
            "type {}",
            name(cat.types.iter().find(|t| t.oid == o).map(|t| &t.name))
        ),
        ObjectKey::Sequence(o) | ObjectKey::Table(o) | ObjectKey::View(o) => {
            format!("relation {}", name(cat.relation_name(o)))
        }
        ObjectKey::Function(o) => format!(
            "function {}",
            name(cat.functions.iter().find(|f| f.oid == o).map(|f| &f.name))
        ),
    }
}

/// An include pattern without wildcards names one table (or view); it must exist.
fn check_named_tables_exist(cat: &Catalog, selection: &Selection) -> Result<()> {
    for p in &selection.include {
        let text = p.to_string();
        if text.contains(['*', '?']) {
            continue;
        }
        let Ok(name) = QualifiedName::parse(&text) else {
            continue;
        };
        let found =
            cat.tables.iter().any(|t| t.name == name) || cat.views.iter().any(|v| v.name == name);
        if !found {
            return Err(SnapshotError::MissingTable {
                side: crate::error::Side::Source,
                table: name,
                what_to_do: "check its schema and spelling (mixed-case names need double quotes in \
                             the selection, e.g. \"Sales\".\"Orders\"), or remove it from the selection",
            });
        }
    }
    Ok(())
}

/// The root of a partition's tree (the table itself when it is not a partition).
fn root_of<'a>(cat: &'a Catalog, t: &'a crate::catalog::Table) -> &'a crate::catalog::Table {
    let mut at = t;
    // Bounded by the tree's depth; the limit only guards against a cyclic catalog read.
    for _ in 0..64 {
        match at.partition_of.as_ref().and_then(|(p, _)| cat.table(*p)) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    at
}

/// A partitioned table and all its partitions are synced together (MISSION S6).
fn check_partition_trees(cat: &Catalog, selection: &Selection) -> Result<()> {
    for t in &cat.tables {
        if let Some((parent, _)) = &t.partition_of
            && let Some(p) = cat.table(*parent)
        {
            let (child_in, parent_in) = (selection.contains(&t.name), selection.contains(&p.name));
            if child_in != parent_in {
                let (taken, left_out) = if child_in {
                    (&t.name, &p.name)
                } else {
                    (&p.name, &t.name)
                };
                return Err(SnapshotError::PartialPartitionTree {
                    taken: taken.clone(),
                    left_out: left_out.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Two selected relations, or two columns of one table, mapped to one name.
fn check_collisions(names: &Names<'_>) -> Result<()> {
    let mut seen: HashMap<QualifiedName, QualifiedName> = HashMap::new();
    for oid in &names.relations {
        let (Some(src), Some(dst)) = (names.cat.relation_name(*oid), names.relation(*oid)) else {
            continue;
        };
        if let Some(other) = seen.insert(dst.clone(), src.clone()) {
            return Err(SnapshotError::InvalidOptions(format!(
                "the mapping sends both {other} and {src} to {dst}; give them different names"
            )));
        }
        if let Some(t) = names.cat.table(*oid) {
            let mut cols = HashSet::new();
            for c in &t.columns {
                if !cols.insert(names.mapping.column(src, &c.name)) {
                    return Err(SnapshotError::InvalidOptions(format!(
                        "the mapping gives two columns of {src} the same name {:?}",
                        names.mapping.column(src, &c.name)
                    )));
                }
            }
        }
    }
    Ok(())
}
