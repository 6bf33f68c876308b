//! Task errors: one enum over the crates a task drives, each classified as transient
//! (reconnect and carry on) or definite (stop and tell the user).

use crate::precheck::Report;
use crate::state::StateError;

/// Why a task stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The precheck found failures; nothing was written.
    #[error("precheck failed:\n{0}")]
    Precheck(Report),
    /// Reading or writing task state, or the runner lock.
    #[error(transparent)]
    State(#[from] StateError),
    /// The replication connection or stream.
    #[error("source replication: {0}")]
    Wal(#[from] pgsync_wal::WalError),
    /// Decoding or assembling the change stream.
    #[error("change stream: {0}")]
    Txn(#[from] pgsync_wal::txn::TxnError),
    /// Schema sync or full copy.
    #[error("initial sync: {0}")]
    Snapshot(#[from] pgsync_snapshot::SnapshotError),
    /// Applying changes on the destination.
    #[error("apply: {0}")]
    Apply(#[from] pgsync_apply::ApplyError),
    /// Installing, removing or reading the DDL capture on the source.
    #[error("DDL capture: {0}")]
    Ddl(#[from] pgsync_ddl::DdlError),
    /// The reverse direction met a table or column the source's DDL renamed or dropped
    /// after the layout was translated: the direction reconnects and translates again.
    #[error("reverse apply met a table changed by DDL (reconnecting): {0}")]
    SchemaMoved(pgsync_apply::ApplyError),
    /// An ordinary SQL session on either side.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The slot was created without an exported snapshot.
    #[error(
        "the source created the slot without exporting a snapshot; the initial copy cannot be consistent"
    )]
    NoSnapshot,
    /// The mapping cannot be inverted for the reverse task.
    #[error("two-way sync needs a mapping that can be inverted: {0}")]
    Mapping(String),
    /// The per-table filters cannot be carried out as configured.
    #[error("objects.table: {0}")]
    Filters(String),
    /// The task's state disappeared while it ran (`pgsync release --force`).
    #[error("the task was released while it ran; it stops rather than start over")]
    Released,
    /// The source ended the replication stream.
    #[error("the source ended the replication stream")]
    StreamEnded,
    /// A transient error lasted longer than its retry window (`[retry]`).
    #[error(
        "gave up after {:.1} minutes of {} errors (the retry window is {:.1} minutes): {source}",
        failing_for.as_secs_f64() / 60.0, class.as_str(), window.as_secs_f64() / 60.0
    )]
    RetriesExhausted {
        /// connection or transient.
        class: crate::ops::retry::ErrorClass,
        /// How long the failures lasted.
        failing_for: std::time::Duration,
        /// The window of that class.
        window: std::time::Duration,
        /// The last failure.
        source: Box<TaskError>,
    },
}

impl TaskError {
    pub(crate) fn sql(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| TaskError::Sql { context, source }
    }

    /// Whether reconnecting and resuming can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            TaskError::Precheck(_) => false,
            TaskError::State(StateError::Postgres(e)) | TaskError::Sql { source: e, .. } => {
                e.is_closed()
                    || e.code()
                        .is_none_or(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
            }
            TaskError::State(_) => false,
            TaskError::Wal(e) => e.is_retryable(),
            TaskError::Txn(e) => e.is_retryable(),
            TaskError::Snapshot(e) => e.is_retryable(),
            TaskError::Apply(e) => e.is_retryable(),
            TaskError::Ddl(e) => e.is_retryable(),
            TaskError::SchemaMoved(_) => true,
            TaskError::StreamEnded => true,
            TaskError::NoSnapshot
            | TaskError::Released
            | TaskError::Mapping(_)
            | TaskError::Filters(_)
            | TaskError::RetriesExhausted { .. } => false,
        }
    }
}
