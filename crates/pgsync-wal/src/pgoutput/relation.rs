//! A published table as the source describes it in Relation messages: the shared
//! description every change refers to.
//!
//! pgoutput sends a Relation message before the first change of a table in a session and
//! again whenever the table changes (also in the middle of a transaction, e.g. after an
//! `ALTER TABLE`), so a change must be read with the description that was current when it
//! arrived, not the latest one. The transaction assembler hands each change an
//! `Arc<Relation>` for that reason.

use pgsync_names::QualifiedName;

/// The table's `REPLICA IDENTITY`: which old values Update and Delete carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing (updates and deletes are not published).
    Nothing,
    /// `f`: the whole row.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// From `pg_class.relreplident`.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'd' => Self::Default,
            b'n' => Self::Nothing,
            b'f' => Self::Full,
            b'i' => Self::Index,
            _ => return None,
        })
    }

    /// As `pg_class.relreplident`.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Default => b'd',
            Self::Nothing => b'n',
            Self::Full => b'f',
            Self::Index => b'i',
        }
    }
}

/// One published column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelationColumn {
    /// Column name, as in the catalog.
    pub name: String,
    /// The column's type OID.
    pub type_oid: u32,
    /// `atttypmod` (e.g. the length of a `varchar(n)`), -1 when none.
    pub type_modifier: i32,
    /// Part of the replica identity (all columns are, with `REPLICA IDENTITY FULL`).
    pub is_key: bool,
}

/// A published table: its OID on the source, name, replica identity and published columns,
/// in the order tuples carry them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    /// The table's OID on the source.
    pub oid: u32,
    /// Schema and table name, as in the source catalog.
    pub name: QualifiedName,
    /// The table's replica identity.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in tuple order.
    pub columns: Vec<RelationColumn>,
}

impl Relation {
    /// The replica identity columns with their positions in a tuple.
    pub fn key_columns(&self) -> impl Iterator<Item = (usize, &RelationColumn)> {
        self.columns.iter().enumerate().filter(|(_, c)| c.is_key)
    }

    /// The position of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}
