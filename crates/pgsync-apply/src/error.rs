//! What can go wrong while applying, classified for the task's retry logic.

use pgsync_names::QualifiedName;

/// Applying a transaction failed; the destination transaction was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The destination refused a statement or the connection broke.
    #[error("{context}: {}", describe(source))]
    Postgres {
        /// What the applier was doing.
        context: String,
        /// The driver's error (SQLSTATE inside).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The destination did not hold what the source change expects (a missing row, an
    /// existing key): a conflict. The careful path decides what to do; without one, the
    /// task stops here and nothing after this transaction is applied.
    #[error("conflict in {table}: {kind} ({detail}); source transaction ending at {end_lsn}")]
    Conflict {
        /// The destination table.
        table: QualifiedName,
        /// What kind: `insert_exists`, `update_missing`, `delete_missing`.
        kind: &'static str,
        /// The key or row, and what was found.
        detail: String,
        /// The source transaction's end LSN.
        end_lsn: pgsync_wal::Lsn,
    },
    /// The destination has no table the source sends changes for.
    #[error(
        "the destination has no table {table} (source table {source_table}); create it, or let schema sync or DDL sync create it"
    )]
    MissingTable {
        /// The destination table name the mapping produced.
        table: QualifiedName,
        /// The source table.
        source_table: QualifiedName,
    },
    /// The destination table does not have a column the source sends.
    #[error(
        "{table} on the destination has no column {column:?} (source column {source_column:?}); add it or map the column"
    )]
    MissingColumn {
        /// The destination table.
        table: QualifiedName,
        /// The destination column name the mapping produced.
        column: String,
        /// The source column.
        source_column: String,
    },
    /// A custom conflict resolver failed or chose a decision that cannot be carried out.
    #[error(transparent)]
    Resolve(#[from] pgsync_conflict::ResolveError),
    /// Reading the transaction's changes (e.g. from its spill file) failed.
    #[error(transparent)]
    Changes(#[from] pgsync_wal::txn::TxnError),
    /// Source DDL that cannot be replayed faithfully (`ddl_unsupported = "fail"`), or a
    /// DDL message that cannot be read.
    #[error(
        "DDL not replayed: {reason}; statement: {statement}; source transaction ending at {end_lsn} (run it on the destination yourself and set ddl_unsupported = \"skip\" to pass it, or use pgsync.replicate_ddl)"
    )]
    Ddl {
        /// The statement (or the source's whole query text).
        statement: String,
        /// Why it is not replayed.
        reason: String,
        /// The source transaction's end LSN.
        end_lsn: pgsync_wal::Lsn,
    },
}

impl ApplyError {
    pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| ApplyError::Postgres { context, source }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ApplyError::Postgres { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether trying again later can succeed without anyone changing anything: a broken
    /// connection, a server shutting down or in recovery, a serialization failure or
    /// deadlock, too many connections. Conflicts and schema mismatches are definite.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApplyError::Postgres { source, .. } => match source.code() {
                None => true,
                Some(code) => {
                    let c = code.code();
                    c.starts_with("08") // connection exception
                        || c.starts_with("57P") // operator intervention: shutdown, crash, cannot connect now
                        || c == "40001" || c == "40P01" // serialization failure, deadlock
                        || c == "53300" // too many connections
                        || c == "55P03" // lock not available
                }
            },
            ApplyError::Changes(e) => e.is_retryable(),
            ApplyError::Resolve(e) => e.is_retryable(),
            ApplyError::Conflict { .. }
            | ApplyError::Ddl { .. }
            | ApplyError::MissingTable { .. }
            | ApplyError::MissingColumn { .. } => false,
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(e) {
                s.push_str(&format!(": {src}"));
            }
            s
        }
    }
}
