//! Names, in one place, for every pgsync crate.
//!
//! * [`sql`]: identifiers are always quoted and literals always escaped; SQL is composed from
//!   these typed pieces, never by pasting a name into a format string.
//! * [`QualifiedName`]: a schema-qualified object name as the catalog spells it.
//! * [`Selection`]: which tables a task covers (`schema.*` / `schema.table` globs with
//!   excludes); the schema sync, the full copy, the stream and DDL replay all ask it.
//! * [`TableFilter`]: per table, which operations travel and which rows (a row filter).
//! * [`Mapping`]: how source names become destination names (schema, table and column
//!   renames, a case policy), and its inverse for the reverse task.

mod filter;
mod mapping;
mod qualified;
mod selection;
pub mod sql;

pub use filter::{Operation, Operations, TableFilter};
pub use mapping::{CasePolicy, Mapping};
pub use qualified::QualifiedName;
pub use selection::{Pattern, Selection};

/// A name or pattern that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The text is not `schema.name` (each part plain or double-quoted).
    #[error(
        "{text:?} is not a schema-qualified name: {reason} (write schema.table, e.g. public.orders or \"My Schema\".\"Orders\")"
    )]
    Malformed {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A mapping sends two source objects to the same destination name.
    #[error("the mapping sends both {first} and {second} to {target}; give them different names")]
    Collision {
        /// One source name.
        first: String,
        /// The other source name.
        second: String,
        /// The shared destination name.
        target: String,
    },
}
