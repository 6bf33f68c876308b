//! One error type for schema sync and full copy.
//!
//! Every server error keeps its SQLSTATE and says which side (source or destination) and
//! what pgsync was doing. The cases a user can fix get their own variant with the fix in
//! the message: a table that exists on the destination in `error` mode, a permission
//! problem, a snapshot that can no longer be imported, a selection that splits a
//! partitioned table, a mapping that cannot be applied to an object's body.
//! [`SnapshotError::is_retryable`] decides transient versus definite in one place.

use std::fmt;

use pgsync_names::QualifiedName;
use tokio_postgres::error::SqlState;

/// Which server an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server being copied from.
    Source,
    /// The server being copied to.
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Destination => "destination",
        })
    }
}

/// What went wrong during schema sync or full copy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The server could not be reached or refused the login.
    #[error("cannot connect to the {side}: {source}")]
    Connect {
        /// Which server.
        side: Side,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed on the server.
    #[error("{side}: {context}: {}{}", describe(.source), hint(.code.as_ref()))]
    Db {
        /// Which server.
        side: Side,
        /// What pgsync was doing.
        context: String,
        /// The SQLSTATE, when the server sent one.
        code: Option<SqlState>,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The exported snapshot cannot be imported (the exporting session ended, or the name
    /// is wrong).
    #[error(
        "cannot import snapshot {name:?} on the source: {}. Keep the session (or replication \
         connection) that exported it open until the copy reports that every worker has \
         imported it",
        describe(.source)
    )]
    SnapshotImport {
        /// The snapshot name that was given.
        name: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `existing = error` and selected tables already exist on the destination.
    #[error(
        "{} table(s) already exist on the destination: {}. Drop them, choose other \
         destination names in the mapping, or run with existing tables = ignore (keeps them \
         and their rows; copied rows that clash on a key are skipped)",
        .tables.len(), list(.tables)
    )]
    TablesExist {
        /// Destination names of the tables that exist.
        tables: Vec<QualifiedName>,
    },
    /// A table named in the selection or needed by the copy does not exist.
    #[error("{side}: table {table} does not exist: {what_to_do}")]
    MissingTable {
        /// Which server.
        side: Side,
        /// The table.
        table: QualifiedName,
        /// How to fix it.
        what_to_do: &'static str,
    },
    /// A selection takes part of a partitioned table.
    #[error(
        "the selection takes {taken} but not {left_out}: a partitioned table and all its \
         partitions are synced together; include both or exclude both"
    )]
    PartialPartitionTree {
        /// The selected member of the tree.
        taken: QualifiedName,
        /// The member left out.
        left_out: QualifiedName,
    },
    /// The mapping renames something an object's stored body refers to, and that body
    /// cannot be rewritten safely without a SQL parser.
    #[error(
        "cannot apply the mapping to {object}: {reason}. Remove the rename of the objects \
         it uses, or exclude it and create it on the destination by hand"
    )]
    UnsupportedMapping {
        /// The object (kind and source name).
        object: String,
        /// Why.
        reason: String,
    },
    /// Options that cannot work together.
    #[error("invalid full-sync options: {0}")]
    InvalidOptions(String),
    /// The sync task itself stopped (panicked or was cancelled).
    #[error("the full sync stopped unexpectedly: {0}")]
    Aborted(String),
}

impl SnapshotError {
    /// A server error with what pgsync was doing; permission errors and unknown tables
    /// get their own explanation through the SQLSTATE hint.
    pub(crate) fn db(
        side: Side,
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| Self::Db {
            side,
            context,
            code: source.code().cloned(),
            source,
        }
    }

    /// The SQLSTATE of a server error, if any.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Db { code, .. } => code.as_ref(),
            Self::Connect { source, .. } | Self::SnapshotImport { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether trying again later (new connections, a new snapshot) may succeed: lost
    /// connections, server shutdowns, serialization failures, deadlocks, lack of
    /// resources. Everything else needs a change by the user first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Aborted(_) => true,
            Self::Db { source, code, .. } => match code {
                None => source.is_closed() || source.as_db_error().is_none(),
                Some(c) => is_transient(c),
            },
            Self::SnapshotImport { .. } => false,
            _ => false,
        }
    }
}

fn is_transient(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("53")
        || c.starts_with("57P")
        || c == SqlState::T_R_SERIALIZATION_FAILURE.code()
        || c == SqlState::T_R_DEADLOCK_DETECTED.code()
        || c == SqlState::LOCK_NOT_AVAILABLE.code()
}

/// The server's message and detail, or the driver's text for non-server errors.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(". ");
                s.push_str(d);
            }
            if let Some(h) = db.hint() {
                s.push_str(". Hint: ");
                s.push_str(h);
            }
            s
        }
        None => e.to_string(),
    }
}

/// What to do about the errors users meet most.
fn hint(code: Option<&SqlState>) -> &'static str {
    match code {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            ". The role lacks a privilege: on the source it needs SELECT on the selected \
             tables and USAGE on their schemas; on the destination it must own (or be able to \
             create) the objects, and setting session_replication_role needs superuser or, on \
             PostgreSQL 15+, GRANT SET ON PARAMETER session_replication_role"
        }
        Some(c) if *c == SqlState::UNDEFINED_TABLE => {
            ". A table pgsync expected is missing: check the selection and the mapping, and \
             that schema sync ran (or create the table on the destination)"
        }
        Some(c) if *c == SqlState::UNDEFINED_FILE || *c == SqlState::FEATURE_NOT_SUPPORTED => {
            ". The destination may lack an extension or feature the source uses: install the \
             same extensions (packages) on the destination"
        }
        _ => "",
    }
}

fn list(tables: &[QualifiedName]) -> String {
    tables
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Result alias.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;
