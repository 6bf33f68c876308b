//! Why a validation stopped: a failed statement on one side (its SQLSTATE kept), or a
//! request that names tables the task does not sync.

use tokio_postgres::error::SqlState;

/// A validation could not be carried out (differences are not errors: they are the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// A statement or connection failed on one side.
    #[error("{side}: {context}: {source}")]
    Sql {
        /// `source` or `destination`.
        side: &'static str,
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `--table` named a table the task does not select (or the source does not have).
    #[error(
        "table {0} is not one of the task's tables on the source (objects.include / exclude select them)"
    )]
    NotSelected(String),
}

impl ValidateError {
    /// The SQLSTATE of the failed statement, if the server sent one.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Sql { source, .. } => source.code(),
            Self::NotSelected(_) => None,
        }
    }

    /// Whether running the validation again can succeed without anyone changing anything
    /// (a dropped connection, a server restarting, a serialization failure).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sql { source, .. } => {
                source.is_closed()
                    || source.code().is_none_or(|c| {
                        let c = c.code();
                        c.starts_with("08") || c.starts_with("57P") || c.starts_with("40")
                    })
            }
            Self::NotSelected(_) => false,
        }
    }

    /// Whether the request itself is wrong (as opposed to a failure while running it).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::NotSelected(_))
    }
}
