//! Ordinary SQL sessions (tokio-postgres) with TLS as the DSN's `sslmode` asks, over the
//! same rustls settings as the replication connection ([`crate::conn`]'s `client_config`).
//!
//! ```text
//! ConnInfo ─▶ sql_config() ─▶ tokio_postgres::Config ─┐
//!          └▶ tls() ─▶ MakeRustls ─ make_tls_connect(host) ─▶ RustlsConnect ─ connect ─▶ RustlsStream
//! ```
//!
//! tokio-postgres knows three modes (disable, prefer, require) and sends the SSLRequest
//! itself; the connector decides what is trusted: `verify-ca` / `verify-full` check the
//! chain against `sslrootcert` (and the host name), `prefer` / `require` only encrypt.
//! `allow` is carried out here: clear text first, and TLS when the server refuses that
//! (SQLSTATE 28000, e.g. a `hostssl`-only `pg_hba.conf`). Channel binding is not offered
//! (SCRAM without `-PLUS`, which servers accept unless the DSN demands it).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{ChannelBinding as PgChannelBinding, SslMode as PgSslMode};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Connection, Socket};
use tokio_rustls::TlsConnector;

use super::{ConnInfo, Endpoint, SslMode};
use crate::conn::{client_config, handshake_reason};
use crate::error::{SqlState, WalError};

/// A tokio-postgres connection whose socket may be TLS.
pub type SqlConnection = Connection<Socket, RustlsStream<Socket>>;

impl ConnInfo {
    /// The tokio-postgres settings for an SQL session (password included). Use it with
    /// [`tls`](Self::tls) only; [`connect_sql`](Self::connect_sql) does both.
    fn sql_config(&self, mode: PgSslMode) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        match &self.endpoint {
            Endpoint::Tcp { host, hostaddr } => {
                c.host(host);
                if let Some(addr) = hostaddr {
                    c.hostaddr(*addr);
                }
            }
            Endpoint::Unix(dir) => {
                c.host_path(dir);
            }
        }
        c.port(self.port).user(&self.user).dbname(self.dbname());
        if let Some(p) = &self.password {
            c.password(p);
        }
        if let Some(name) = &self.application_name {
            c.application_name(name);
        }
        if let Some(options) = &self.options {
            c.options(options);
        }
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        if let Some(on) = self.keepalives.on {
            c.keepalives(on);
        }
        if let Some(d) = self.keepalives.idle {
            c.keepalives_idle(d);
        }
        if let Some(d) = self.keepalives.interval {
            c.keepalives_interval(d);
        }
        if let Some(n) = self.keepalives.retries {
            c.keepalives_retries(n);
        }
        if self.read_write {
            c.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        if self.channel_binding_off {
            c.channel_binding(PgChannelBinding::Disable);
        }
        c.ssl_mode(mode);
        c
    }

    /// The TLS connector for SQL sessions to this server.
    pub fn tls(&self) -> MakeRustls {
        MakeRustls {
            mode: self.ssl_mode,
            root_cert: self.ssl_root_cert.clone(),
            target: self.target(),
        }
    }

    /// Opens an SQL session with TLS as `sslmode` asks; the caller drives the connection
    /// (usually on a spawned task).
    pub async fn connect_raw(&self) -> Result<(Client, SqlConnection), tokio_postgres::Error> {
        let first = match self.ssl_mode {
            // No TLS over a Unix socket (the server does not offer it there), as libpq.
            _ if matches!(self.endpoint, Endpoint::Unix(_)) => PgSslMode::Disable,
            SslMode::Disable | SslMode::Allow => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        };
        let attempt = self.sql_config(first).connect(self.tls()).await;
        match attempt {
            Err(e)
                if self.ssl_mode == SslMode::Allow
                    && e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) =>
            {
                self.sql_config(PgSslMode::Require)
                    .connect(self.tls())
                    .await
            }
            other => other,
        }
    }

    /// Opens an SQL session with TLS as `sslmode` asks; the connection runs on a spawned
    /// task (needs a tokio runtime).
    pub async fn connect_sql(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = self.connect_raw().await?;
        let target = self.describe();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%target, error = %e, "connection closed");
            }
        });
        Ok(client)
    }
}

/// tokio-postgres' TLS hook for one server: rustls with libpq's `sslmode` semantics.
#[derive(Debug, Clone)]
pub struct MakeRustls {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    target: String,
}

/// TLS could not be set up for an SQL session: what went wrong and how to fix it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("TLS with {target} failed: {reason}")]
pub struct SqlTlsError {
    target: String,
    reason: String,
}

impl From<WalError> for SqlTlsError {
    fn from(e: WalError) -> Self {
        match e {
            WalError::Tls { target, reason } => Self { target, reason },
            other => Self {
                target: String::new(),
                reason: other.to_string(),
            },
        }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = SqlTlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, SqlTlsError> {
        // Disable never reaches the handshake; Allow's second attempt only encrypts.
        let mode = match self.mode {
            SslMode::Disable | SslMode::Allow => SslMode::Require,
            m => m,
        };
        let config = client_config(mode, self.root_cert.as_deref(), &self.target)?;
        Ok(RustlsConnect {
            config: Arc::new(config),
            domain: domain.to_owned(),
            mode,
            target: self.target.clone(),
        })
    }
}

/// One handshake, made by [`MakeRustls`].
#[derive(Debug)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    domain: String,
    mode: SslMode,
    target: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = SqlTlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, SqlTlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let err = |reason: String| SqlTlsError {
                target: self.target.clone(),
                reason,
            };
            let name = ServerName::try_from(self.domain.clone()).map_err(|_| {
                err(format!(
                    "\"{}\" is not a valid host name for TLS",
                    self.domain
                ))
            })?;
            TlsConnector::from(self.config.clone())
                .connect(name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
                .map_err(|e| err(handshake_reason(&e, self.mode)))
        })
    }
}

/// An SQL session's TLS stream.
#[derive(Debug)]
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().0.as_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_shutdown(cx)
    }
}
