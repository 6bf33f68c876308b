//! What can go wrong in DDL capture and planning.

/// DDL capture or planning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DdlError {
    /// A `pgsync.ddl` message could not be read.
    #[error("malformed pgsync.ddl message: {0}")]
    Message(String),
    /// Installing, removing or reading the capture on the source failed.
    #[error("{context}: {source}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The driver's error (SQLSTATE inside).
        #[source]
        source: tokio_postgres::Error,
    },
}

impl DdlError {
    pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| DdlError::Postgres { context, source }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DdlError::Postgres { source, .. } => source.code().map(|c| c.code()),
            DdlError::Message(_) => None,
        }
    }

    /// Whether trying again later can succeed: a broken connection or a server going away.
    pub fn is_retryable(&self) -> bool {
        match self {
            DdlError::Postgres { source, .. } => {
                source.is_closed()
                    || source
                        .code()
                        .is_none_or(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
            }
            DdlError::Message(_) => false,
        }
    }
}
