//! The replication connection: a small client for PostgreSQL's replication sub-protocol.
//!
//! tokio-postgres cannot enter CopyBoth mode, so this speaks the protocol itself with
//! `postgres-protocol`'s message builders and parser:
//!
//! ```text
//! connect ─▶ [SSLRequest ─▶ TLS] ─▶ StartupMessage(replication=database) ─▶ auth
//!         ─▶ simple queries: IDENTIFY_SYSTEM, SHOW, CREATE/DROP_REPLICATION_SLOT
//!         ─▶ START_REPLICATION ─▶ CopyBoth ─▶ ReplicationStream (crate::stream)
//! ```
//!
//! Commands are simple queries; their replies are a few rows of text, returned as
//! [`Row`]s. Ordinary SQL (catalog reads, snapshot import) belongs on tokio-postgres.

mod commands;
mod framed;
mod socket;
mod startup;
mod tls;

use std::collections::HashMap;
use std::fmt;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

pub use crate::dsn::{Endpoint, SslMode};
pub use commands::{
    CreateSlot, CreatedSlot, SlotSnapshot, StartOptions, Streaming, SystemIdentity,
};

/// The settings of a replication connection: a [`ConnInfo`](crate::dsn::ConnInfo), parsed
/// from the same DSN as the SQL sessions (the connection always asks for
/// `replication=database`).
pub type ReplicationConfig = crate::dsn::ConnInfo;

pub(crate) use tls::{client_config, handshake_reason};

pub(crate) use framed::{Backend, FrameReader};
pub(crate) use socket::Socket;

use crate::error::{ServerError, SqlState, WalError};

/// An open replication connection (`replication=database`), before streaming.
pub struct ReplicationConnection {
    pub(crate) reader: FrameReader<ReadHalf<Socket>>,
    pub(crate) writer: WriteHalf<Socket>,
    out: BytesMut,
    target: String,
    tls: bool,
    params: HashMap<String, String>,
    major: u32,
}

impl fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("target", &self.target)
            .field("tls", &self.tls)
            .field("server_major", &self.major)
            .finish_non_exhaustive()
    }
}

/// One result row of a replication command, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    columns: std::sync::Arc<[String]>,
    values: Vec<Option<String>>,
}

impl Row {
    /// The value of column `name` (None for NULL or no such column).
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == name)?;
        self.values.get(i)?.as_deref()
    }

    /// The value at `index`.
    pub fn get_index(&self, index: usize) -> Option<&str> {
        self.values.get(index)?.as_deref()
    }
}

impl ReplicationConnection {
    /// Connects, negotiates TLS as `config` asks, and authenticates.
    ///
    /// Not cancel-safe: dropping it mid-way leaves nothing usable (nothing leaks either).
    pub async fn connect(config: &ReplicationConfig) -> Result<Self, WalError> {
        if config.ssl_mode != SslMode::Allow {
            return Self::connect_once(config).await;
        }
        // libpq's `allow`: clear text first, TLS when pg_hba.conf refuses that.
        match Self::connect_once(&config.clone().ssl_mode(SslMode::Disable)).await {
            Err(e) if e.sqlstate() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) => {
                Self::connect_once(&config.clone().ssl_mode(SslMode::Require)).await
            }
            other => other,
        }
    }

    async fn connect_once(config: &ReplicationConfig) -> Result<Self, WalError> {
        let socket = startup::open(config).await?;
        let tls = socket.is_tls();
        let (read, writer) = tokio::io::split(socket);
        let mut conn = Self {
            reader: FrameReader::new(read),
            writer,
            out: BytesMut::new(),
            target: config.target(),
            tls,
            params: HashMap::new(),
            major: 0,
        };
        startup::startup(&mut conn, config).await?;
        let version = conn
            .params
            .get("server_version")
            .cloned()
            .unwrap_or_default();
        conn.major = parse_major(&version).ok_or_else(|| {
            WalError::protocol(format!("server_version {version:?} has no major version"))
        })?;
        Ok(conn)
    }

    /// The server's major version (14, 15, ...).
    pub fn server_major(&self) -> u32 {
        self.major
    }

    /// A parameter the server reported at startup (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Runs one replication command or `SHOW` and returns its rows.
    ///
    /// Not cancel-safe: dropped mid-way, the connection is out of step; drop it too.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, WalError> {
        tracing::debug!(target: "pgsync_wal::conn", %sql, "replication command");
        frontend::query(sql, &mut self.out)
            .map_err(|e| WalError::Config(format!("command text: {e}")))?;
        self.flush(sql).await?;
        let mut rows = Vec::new();
        let mut columns: std::sync::Arc<[String]> = std::sync::Arc::new([]);
        let mut failure = None;
        loop {
            match self.reader.next(sql).await? {
                Backend::Message(Message::RowDescription(body)) => {
                    columns = body
                        .fields()
                        .map(|f| Ok(f.name().to_owned()))
                        .collect::<Vec<_>>()
                        .map_err(|e| WalError::protocol(format!("RowDescription: {e}")))?
                        .into();
                }
                Backend::Message(Message::DataRow(body)) => {
                    let buf = body.buffer();
                    let values = body
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                        .collect::<Vec<_>>()
                        .map_err(|e| WalError::protocol(format!("DataRow: {e}")))?;
                    rows.push(Row {
                        columns: columns.clone(),
                        values,
                    });
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    failure = Some(server_error(&body, &describe(sql)));
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
                Backend::Message(
                    Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::ParameterStatus(_),
                ) => {}
                other => {
                    return Err(WalError::protocol(format!(
                        "unexpected {other:?} in reply to {}",
                        describe(sql)
                    )));
                }
            }
        }
    }

    /// `SHOW name`. Not cancel-safe.
    pub async fn show(&mut self, name: &str) -> Result<String, WalError> {
        let sql = format!("SHOW {}", pgsync_names::sql::Ident(name));
        let rows = self.simple_query(&sql).await?;
        rows.first()
            .and_then(|r| r.get_index(0))
            .map(str::to_owned)
            .ok_or_else(|| WalError::protocol(format!("{sql} returned no value")))
    }

    /// Sends `Terminate` and closes the socket. Not cancel-safe (dropped, the socket just
    /// closes without the goodbye, which the server tolerates).
    pub async fn close(mut self) -> Result<(), WalError> {
        frontend::terminate(&mut self.out);
        self.flush("closing the connection").await?;
        let _ = self.writer.shutdown().await;
        Ok(())
    }

    /// Writes the queued messages. Not cancel-safe: a partial write leaves the connection
    /// out of step.
    pub(crate) async fn flush(&mut self, during: &str) -> Result<(), WalError> {
        self.writer
            .write_all(&self.out)
            .await
            .map_err(|e| WalError::io(describe(during), e))?;
        self.out.clear();
        self.writer
            .flush()
            .await
            .map_err(|e| WalError::io(describe(during), e))
    }

    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn set_param(&mut self, name: String, value: String) {
        self.params.insert(name, value);
    }

    /// Takes the socket halves (and any bytes already read) for the stream.
    pub(crate) fn into_parts(self) -> (FrameReader<ReadHalf<Socket>>, WriteHalf<Socket>) {
        (self.reader, self.writer)
    }
}

/// The first word of a command, for messages.
fn describe(sql: &str) -> String {
    format!(
        "running {}",
        sql.split_whitespace().next().unwrap_or("a command")
    )
}

fn parse_major(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Turns an ErrorResponse into a typed error.
pub(crate) fn server_error(body: &ErrorResponseBody, during: &str) -> WalError {
    let mut e = ServerError {
        code: SqlState::INTERNAL_ERROR,
        severity: "ERROR".into(),
        message: String::new(),
        detail: None,
        hint: None,
        during: during.to_owned(),
    };
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => e.code = SqlState::from_code(&v),
            b'V' => e.severity = v,
            b'S' if e.severity == "ERROR" => e.severity = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    WalError::Server(Box::new(e))
}

pub(crate) fn log_notice(body: &postgres_protocol::message::backend::NoticeResponseBody) {
    let mut fields = body.fields();
    let mut message = String::new();
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == b'M' {
            message = String::from_utf8_lossy(f.value_bytes()).into_owned();
        }
    }
    tracing::info!(target: "pgsync_wal::conn", %message, "server notice");
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CopyData(b) => write!(f, "CopyData({} bytes)", b.len()),
            Self::CopyBothResponse => f.write_str("CopyBothResponse"),
            Self::Message(m) => f.write_str(message_name(m)),
        }
    }
}

pub(crate) fn message_name(m: &Message) -> &'static str {
    match m {
        Message::AuthenticationOk => "AuthenticationOk",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::NoticeResponse(_) => "NoticeResponse",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "a backend message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_come_from_the_leading_digits() {
        assert_eq!(parse_major("15.8 (Debian 15.8-1.pgdg120+1)"), Some(15));
        assert_eq!(parse_major("18.6"), Some(18));
        assert_eq!(parse_major("19devel"), Some(19));
        assert_eq!(parse_major(""), None);
    }
}
