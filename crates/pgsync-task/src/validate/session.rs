//! The sessions of a validation: a few per side, each set up so that every value prints
//! the same way on both servers — the comparison is of text, and the text of a date, an
//! interval, a float, a bytea or a money value depends on session settings.
//!
//! Sessions are named `<task's application_name>:validate`, so that they are never taken
//! for the task's own sessions (the lag wait looks for those by name).

use tokio_postgres::Client;

use super::error::ValidateError;
use crate::endpoint::Endpoint;

/// Identical on both sides; `jit = off` because compiling the checksum expression costs
/// more than it saves on chunk-sized scans.
const SETTINGS: &str = "SET datestyle = 'ISO, MDY';
SET intervalstyle = 'postgres';
SET extra_float_digits = 3;
SET timezone = 'UTC';
SET bytea_output = 'hex';
SET lc_monetary = 'C';
SET xmloption = content;
SET jit = off;
SET statement_timeout = 0;
SET idle_in_transaction_session_timeout = 0;";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    /// A, the task's source.
    Source,
    /// B, the task's destination.
    Destination,
}

impl Which {
    pub(super) fn index(self) -> usize {
        match self {
            Self::Source => 0,
            Self::Destination => 1,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }
}

/// The sessions open on one server.
#[derive(Debug)]
pub(super) struct Side {
    pub(super) which: Which,
    clients: Vec<Client>,
}

impl Side {
    /// Opens `sessions` (at least one) sessions to `endpoint`.
    pub(super) async fn connect(
        endpoint: &Endpoint,
        which: Which,
        sessions: usize,
    ) -> Result<Self, ValidateError> {
        let name = endpoint
            .conninfo()
            .get_application_name()
            .unwrap_or("pgsync");
        let info = endpoint
            .conninfo()
            .clone()
            .application_name(format!("{name}:validate"));
        let mut clients = Vec::with_capacity(sessions.max(1));
        for _ in 0..sessions.max(1) {
            let (client, conn) = info
                .connect_raw()
                .await
                .map_err(sql_error(which, "connecting"))?;
            let target = endpoint.describe();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%target, error = %e, "validation session closed");
                }
            });
            client
                .batch_execute(SETTINGS)
                .await
                .map_err(sql_error(which, "setting up the session"))?;
            clients.push(client);
        }
        Ok(Self { which, clients })
    }

    /// Session `i` (modulo their number): spreads concurrent work over the sessions.
    pub(super) fn client(&self, i: usize) -> &Client {
        &self.clients[i % self.clients.len()]
    }

    /// How many sessions.
    pub(super) fn sessions(&self) -> usize {
        self.clients.len()
    }

    /// Maps a driver error to [`ValidateError::Sql`] on this side.
    pub(super) fn err(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> ValidateError {
        sql_error(self.which, context)
    }
}

fn sql_error(
    which: Which,
    context: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> ValidateError {
    let context = context.into();
    move |source| ValidateError::Sql {
        side: which.label(),
        context,
        source,
    }
}
