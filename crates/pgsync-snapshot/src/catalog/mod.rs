//! The source's schema as pgsync needs it, read inside the exported snapshot.
//!
//! Everything is read in one `REPEATABLE READ` transaction that imported the slot's
//! snapshot, with `search_path = ''` so that `format_type`, `pg_get_expr`,
//! `pg_get_constraintdef`, `pg_get_indexdef`, `pg_get_viewdef`, `pg_get_functiondef`,
//! `pg_get_triggerdef` and `pg_get_ruledef` print every non-`pg_catalog` name with its
//! schema. pgsync never prints a type or an expression itself: the server does, and pgsync
//! only rewrites names in that text when a mapping asks for it.
//!
//! Caveat (as for `pg_dump`): the `pg_get_*def` functions read the system caches, which
//! follow the latest committed catalog rather than the snapshot; a DDL racing with the
//! start of the copy can therefore show up in the definitions. Table lists, columns and
//! row data all come from the snapshot.
//!
//! Objects that belong to an extension are not read (the extension recreates them), and
//! neither are the schemas `pg_*`, `information_schema` and `pgsync` (pgsync's own state).

mod depend;
mod objects;
mod relations;

use pgsync_names::{QualifiedName, Selection};
use tokio_postgres::Client;

use crate::error::{Result, Side, SnapshotError};

pub use depend::ObjectKey;

/// A schema.
#[derive(Debug, Clone)]
pub struct Schema {
    /// `pg_namespace.oid`.
    pub oid: u32,
    /// Its name.
    pub name: String,
}

/// An extension some synced object may need.
#[derive(Debug, Clone)]
pub struct Extension {
    /// `pg_extension.oid`.
    pub oid: u32,
    /// Its name.
    pub name: String,
    /// The schema it was installed into.
    pub schema: String,
}

/// A user-defined type (not a table's row type).
#[derive(Debug, Clone)]
pub struct TypeDef {
    /// `pg_type.oid`.
    pub oid: u32,
    /// Its name.
    pub name: QualifiedName,
    /// What kind of type, with its definition.
    pub kind: TypeKind,
}

/// The definition of a [`TypeDef`].
#[derive(Debug, Clone)]
pub enum TypeKind {
    /// `CREATE TYPE .. AS ENUM`: labels in sort order.
    Enum(Vec<String>),
    /// `CREATE DOMAIN`.
    Domain {
        /// `format_type` of the base type.
        base: String,
        /// A collation other than the base type's, qualified.
        collation: Option<QualifiedName>,
        /// The default expression.
        default: Option<String>,
        /// `NOT NULL`.
        not_null: bool,
        /// CHECK constraints: name, `pg_get_constraintdef`, validated.
        checks: Vec<(String, String, bool)>,
    },
    /// `CREATE TYPE .. AS (..)`: attribute name, type, collation.
    Composite(Vec<(String, String, Option<QualifiedName>)>),
    /// `CREATE TYPE .. AS RANGE`.
    Range {
        /// Subtype (`format_type`).
        subtype: String,
        /// A non-default operator class, qualified.
        opclass: Option<QualifiedName>,
        /// A collation, qualified.
        collation: Option<QualifiedName>,
        /// The subtype difference function (regproc text).
        subtype_diff: Option<String>,
        /// The multirange type's name (14+).
        multirange: Option<QualifiedName>,
    },
}

/// A sequence with its parameters and its value in the snapshot.
#[derive(Debug, Clone)]
pub struct Sequence {
    /// `pg_class.oid`.
    pub oid: u32,
    /// Its name.
    pub name: QualifiedName,
    /// `format_type` of its data type.
    pub data_type: String,
    /// START WITH.
    pub start: i64,
    /// INCREMENT BY.
    pub increment: i64,
    /// MINVALUE.
    pub min: i64,
    /// MAXVALUE.
    pub max: i64,
    /// CACHE.
    pub cache: i64,
    /// CYCLE.
    pub cycle: bool,
    /// The owning column (`SERIAL` or `OWNED BY`): table oid and column name.
    pub owned_by: Option<(u32, String)>,
    /// Whether it backs an identity column (then it is created with the column).
    pub identity: bool,
    /// `last_value` when `nextval` has been called, else `None`.
    pub last_value: Option<i64>,
}

/// A table column.
#[derive(Debug, Clone)]
pub struct Column {
    /// `attnum`.
    pub num: i16,
    /// Its name.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`.
    pub type_sql: String,
    /// A collation other than the type's default, qualified.
    pub collation: Option<QualifiedName>,
    /// `NOT NULL`.
    pub not_null: bool,
    /// The default expression (not for generated columns).
    pub default: Option<String>,
    /// A generated column's expression and whether it is STORED (else VIRTUAL, 18+).
    pub generated: Option<(String, bool)>,
    /// Identity: `true` for ALWAYS, `false` for BY DEFAULT.
    pub identity: Option<bool>,
    /// Defined on this table (not only inherited).
    pub is_local: bool,
}

/// What kind of constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintKind {
    /// PRIMARY KEY.
    PrimaryKey,
    /// UNIQUE.
    Unique,
    /// CHECK.
    Check,
    /// FOREIGN KEY.
    ForeignKey,
    /// EXCLUDE.
    Exclude,
}

/// A table constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// `pg_constraint.oid`.
    pub oid: u32,
    /// Its name.
    pub name: String,
    /// Kind.
    pub kind: ConstraintKind,
    /// `pg_get_constraintdef`.
    pub definition: String,
    /// `conkey` (columns of this table).
    pub columns: Vec<i16>,
    /// FK: referenced table oid and its columns.
    pub references: Option<(u32, Vec<i16>)>,
    /// Validated (a `NOT VALID` constraint is not).
    pub validated: bool,
    /// The index that enforces it (PK, UNIQUE, EXCLUDE).
    pub index: Option<u32>,
    /// Inherited from a parent (partition clone or non-local inherited CHECK).
    pub inherited: bool,
}

/// An index.
#[derive(Debug, Clone)]
pub struct Index {
    /// `pg_class.oid` of the index.
    pub oid: u32,
    /// The indexed table or materialized view.
    pub relation: u32,
    /// Its name.
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// It enforces a constraint (created with it).
    pub for_constraint: bool,
    /// The partitioned index this partition's index is attached to.
    pub parent: Option<u32>,
    /// CLUSTER ON it.
    pub clustered: bool,
    /// REPLICA IDENTITY USING it.
    pub replica_identity: bool,
}

/// An ordinary or partitioned table.
#[derive(Debug, Clone)]
pub struct Table {
    /// `pg_class.oid`.
    pub oid: u32,
    /// Its name.
    pub name: QualifiedName,
    /// Partitioned (`relkind = 'p'`): holds no rows itself.
    pub partitioned: bool,
    /// `UNLOGGED`.
    pub unlogged: bool,
    /// Columns in `attnum` order.
    pub columns: Vec<Column>,
    /// `pg_get_partkeydef` of a partitioned table.
    pub partition_key: Option<String>,
    /// A partition's parent and bound (`FOR VALUES ..` / `DEFAULT`).
    pub partition_of: Option<(u32, String)>,
    /// Parents of a non-partition inheritance child, in order.
    pub inherits: Vec<u32>,
    /// Constraints.
    pub constraints: Vec<Constraint>,
    /// `reloptions` (`name=value`).
    pub options: Vec<String>,
    /// `relreplident`: d, n, f or i.
    pub replica_identity: char,
    /// Heap size in bytes (current, for chunking).
    pub bytes: i64,
    /// `reltuples` estimate.
    pub estimated_rows: f64,
}

/// A view or materialized view.
#[derive(Debug, Clone)]
pub struct View {
    /// `pg_class.oid`.
    pub oid: u32,
    /// Its name.
    pub name: QualifiedName,
    /// Materialized.
    pub materialized: bool,
    /// `pg_get_viewdef` (without the trailing semicolon).
    pub definition: String,
    /// `reloptions`.
    pub options: Vec<String>,
}

/// A function, procedure or aggregate.
#[derive(Debug, Clone)]
pub struct Function {
    /// `pg_proc.oid`.
    pub oid: u32,
    /// Its name.
    pub name: QualifiedName,
    /// `f`, `p`, `a` or `w`.
    pub kind: char,
    /// `pg_get_function_identity_arguments`.
    pub identity_args: String,
    /// The complete `CREATE` statement.
    pub definition: String,
}

/// A trigger (user-defined, not a partition's clone).
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The table or view.
    pub relation: u32,
    /// Its name.
    pub name: String,
    /// `pg_get_triggerdef`.
    pub definition: String,
    /// `tgenabled`: O, D, R or A.
    pub enabled: char,
}

/// A rewrite rule other than a view's `_RETURN`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The table or view.
    pub relation: u32,
    /// Its name.
    pub name: String,
    /// `pg_get_ruledef` without the trailing semicolon.
    pub definition: String,
}

/// A comment on some object.
#[derive(Debug, Clone)]
pub struct Comment {
    /// The object it is on, resolved to a synced object (a column's, constraint's,
    /// index's, trigger's or rule's comment resolves to its table).
    pub owner: ObjectKey,
    /// `pg_identify_object_as_address`: type.
    pub object_type: String,
    /// `pg_identify_object_as_address`: names.
    pub names: Vec<String>,
    /// `pg_identify_object_as_address`: argument types.
    pub args: Vec<String>,
    /// The text.
    pub text: String,
}

/// The source schema, as of the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The source's major version.
    pub server_major: u32,
    /// Schemas covered by the selection.
    pub schemas: Vec<Schema>,
    /// Extensions installed (plpgsql excluded).
    pub extensions: Vec<Extension>,
    /// Enums, domains, composite and range types.
    pub types: Vec<TypeDef>,
    /// Sequences, including those that back identity columns.
    pub sequences: Vec<Sequence>,
    /// Tables of the covered schemas; selection is applied by the plan.
    pub tables: Vec<Table>,
    /// Indexes of tables and materialized views.
    pub indexes: Vec<Index>,
    /// Views and materialized views.
    pub views: Vec<View>,
    /// Functions, procedures, aggregates.
    pub functions: Vec<Function>,
    /// Triggers.
    pub triggers: Vec<Trigger>,
    /// Rules.
    pub rules: Vec<Rule>,
    /// Comments.
    pub comments: Vec<Comment>,
    /// Dependencies between synced objects: (dependent, referenced).
    pub depends: Vec<(ObjectKey, ObjectKey)>,
    /// Extensions that some synced object references.
    pub needed_extensions: Vec<u32>,
}

impl Catalog {
    /// Reads the catalog. `client` should be inside a `REPEATABLE READ` transaction that
    /// imported the snapshot, with `search_path = ''` so that definitions come out
    /// schema-qualified ([`crate::FullSync`] does both); only schemas the selection can
    /// match are read.
    pub async fn read(client: &Client, selection: &Selection) -> Result<Self> {
        let server_major = crate::endpoint::server_major(client, Side::Source).await?;
        if server_major < 13 {
            return Err(SnapshotError::InvalidOptions(format!(
                "the source runs PostgreSQL {server_major}; pgsync needs 13 or later"
            )));
        }
        let mut cat = Catalog {
            server_major,
            ..Catalog::default()
        };
        cat.schemas = objects::schemas(client, selection).await?;
        let schema_names: Vec<String> = cat.schemas.iter().map(|s| s.name.clone()).collect();
        cat.extensions = objects::extensions(client).await?;
        cat.types = objects::types(client, &schema_names, server_major).await?;
        cat.sequences = relations::sequences(client, &schema_names).await?;
        cat.tables = relations::tables(client, &schema_names).await?;
        cat.views = relations::views(client, &schema_names).await?;
        let mut rels: Vec<u32> = cat.tables.iter().map(|t| t.oid).collect();
        rels.extend(cat.views.iter().map(|v| v.oid));
        cat.indexes = relations::indexes(client, &rels).await?;
        cat.functions = objects::functions(client, &schema_names).await?;
        cat.triggers = objects::triggers(client, &rels).await?;
        cat.rules = objects::rules(client, &rels).await?;
        let (depends, needed) = depend::read(client, &cat).await?;
        cat.depends = depends;
        cat.needed_extensions = needed;
        cat.comments = objects::comments(client, &cat).await?;
        Ok(cat)
    }

    /// The table with this oid.
    pub fn table(&self, oid: u32) -> Option<&Table> {
        self.tables.iter().find(|t| t.oid == oid)
    }

    /// The table with this name.
    pub fn table_named(&self, name: &QualifiedName) -> Option<&Table> {
        self.tables.iter().find(|t| &t.name == name)
    }

    /// The name of a table, view or sequence by oid.
    pub fn relation_name(&self, oid: u32) -> Option<&QualifiedName> {
        self.table(oid)
            .map(|t| &t.name)
            .or_else(|| self.views.iter().find(|v| v.oid == oid).map(|v| &v.name))
            .or_else(|| {
                self.sequences
                    .iter()
                    .find(|s| s.oid == oid)
                    .map(|s| &s.name)
            })
    }
}

/// Reads a `text[]` column that may be NULL.
pub(crate) fn text_array(row: &tokio_postgres::Row, idx: usize) -> Vec<String> {
    row.get::<_, Option<Vec<String>>>(idx).unwrap_or_default()
}

/// A qualified name from two nullable text columns.
pub(crate) fn opt_name(
    row: &tokio_postgres::Row,
    schema: usize,
    name: usize,
) -> Option<QualifiedName> {
    match (
        row.get::<_, Option<String>>(schema),
        row.get::<_, Option<String>>(name),
    ) {
        (Some(s), Some(n)) => Some(QualifiedName::new(s, n)),
        _ => None,
    }
}

/// Reads an `oid` column.
pub(crate) fn oid(row: &tokio_postgres::Row, idx: usize) -> u32 {
    row.get::<_, u32>(idx)
}

/// A `"char"` column read as text.
pub(crate) fn ch(row: &tokio_postgres::Row, idx: usize) -> char {
    row.get::<_, String>(idx).chars().next().unwrap_or(' ')
}

pub(crate) fn src(
    context: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> SnapshotError {
    SnapshotError::db(Side::Source, context)
}
