//! Opening the socket, the startup message and authentication.
//!
//! Authentication supports what PostgreSQL's `pg_hba.conf` methods send to a password
//! client: nothing (`trust`), a cleartext password (`password`), an MD5 challenge (`md5`,
//! also used when an MD5-stored password meets a SCRAM request) and SCRAM-SHA-256 (without
//! channel binding: the client says it does not support it, which servers accept). A
//! request we cannot answer (Kerberos, SSPI, a missing password) is a typed
//! [`WalError::Auth`] naming the method; a wrong password is the server's `28P01`, which
//! keeps its SQLSTATE and says where the password came from.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::net::{TcpStream, UnixStream};

use super::ReplicationConfig;
use super::framed::Backend;
use super::socket::Socket;
use super::tls;
use super::{ReplicationConnection, log_notice, server_error};
use crate::dsn::Endpoint;
use crate::error::WalError;

/// Opens the TCP connection or Unix socket and negotiates TLS. Not cancel-safe (dropping
/// it just drops the half-open socket).
pub(super) async fn open(config: &ReplicationConfig) -> Result<Socket, WalError> {
    let target = config.target();
    let connect = async {
        match &config.endpoint {
            Endpoint::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", config.port));
                UnixStream::connect(&path).await.map(Socket::Unix)
            }
            Endpoint::Tcp { host, hostaddr } => {
                let tcp = match hostaddr {
                    Some(addr) => TcpStream::connect((*addr, config.port)).await?,
                    None => TcpStream::connect((host.as_str(), config.port)).await?,
                };
                tcp.set_nodelay(true)?;
                Ok(Socket::Tcp(tcp))
            }
        }
    };
    let socket = match config.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, connect)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut))),
        None => connect.await,
    }
    .map_err(|source| WalError::Connect {
        target: target.clone(),
        source,
    })?;
    match socket {
        Socket::Tcp(tcp) => tls::negotiate(tcp, config).await,
        other => Ok(other),
    }
}

/// Sends the startup message and authenticates; returns once the server is ready.
/// Not cancel-safe.
pub(super) async fn startup(
    conn: &mut ReplicationConnection,
    config: &ReplicationConfig,
) -> Result<(), WalError> {
    let mut params = vec![
        ("user", config.user.as_str()),
        ("database", config.dbname()),
        ("replication", "database"),
        (
            "application_name",
            config.application_name.as_deref().unwrap_or("pgsync"),
        ),
        ("client_encoding", "UTF8"),
        // pgoutput prints values with the walsender session's settings; these make the
        // text forms unambiguous and exact, whatever the server's defaults (the apply
        // session reads them back with the same settings). As PostgreSQL's own
        // subscriber does.
        ("datestyle", "ISO"),
        ("intervalstyle", "postgres"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
    ];
    if let Some(options) = &config.options {
        params.push(("options", options.as_str()));
    }
    frontend::startup_message(params, conn.out())
        .map_err(|e| WalError::Config(format!("startup parameters: {e}")))?;
    conn.flush("sending the startup message").await?;
    let during = format!("connecting to {} as {}", conn.target(), config.user);
    let mut scram: Option<ScramSha256> = None;
    loop {
        let msg = match conn.reader.next(&during).await? {
            Backend::Message(m) => m,
            other => {
                return Err(WalError::protocol(format!(
                    "unexpected {other:?} during startup"
                )));
            }
        };
        match msg {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                let pw = password(config, conn.target(), "password")?;
                frontend::password_message(pw, conn.out())
                    .map_err(|e| WalError::Config(format!("password: {e}")))?;
                conn.flush("sending the password").await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let pw = password(config, conn.target(), "md5")?;
                let hash = md5_hash(config.user.as_bytes(), pw, body.salt());
                frontend::password_message(hash.as_bytes(), conn.out())
                    .map_err(|e| WalError::Config(format!("password: {e}")))?;
                conn.flush("sending the password").await?;
            }
            Message::AuthenticationSasl(body) => {
                let mut offered = Vec::new();
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms
                    .next()
                    .map_err(|e| WalError::protocol(format!("SASL mechanisms: {e}")))?
                {
                    offered.push(m.to_owned());
                }
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(WalError::Auth {
                        target: conn.target().to_owned(),
                        reason: format!(
                            "the server offers SASL mechanisms {offered:?}; pgsync supports \
                             {SCRAM_SHA_256}"
                        ),
                    });
                }
                let pw = password(config, conn.target(), "scram-sha-256")?;
                let s = ScramSha256::new(pw, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), conn.out())
                    .map_err(|e| WalError::protocol(format!("SASL: {e}")))?;
                conn.flush("authenticating").await?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| WalError::protocol("SASLContinue before SASL"))?;
                s.update(body.data())
                    .map_err(|e| WalError::protocol(format!("SCRAM: {e}")))?;
                frontend::sasl_response(s.message(), conn.out())
                    .map_err(|e| WalError::protocol(format!("SASL: {e}")))?;
                conn.flush("authenticating").await?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let mut s = scram
                    .take()
                    .ok_or_else(|| WalError::protocol("SASLFinal before SASL"))?;
                s.finish(body.data()).map_err(|e| WalError::Auth {
                    target: conn.target().to_owned(),
                    reason: format!("the server's SCRAM proof did not verify: {e}"),
                })?;
            }
            Message::AuthenticationGss
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationSspi
            | Message::AuthenticationGssContinue(_) => {
                return Err(WalError::Auth {
                    target: conn.target().to_owned(),
                    reason: "the server asks for GSSAPI/SSPI/Kerberos authentication, which \
                             pgsync does not support; use scram-sha-256 or md5 in pg_hba.conf"
                        .into(),
                });
            }
            Message::ParameterStatus(body) => {
                let name = body.name().map_err(|e| WalError::protocol(e.to_string()))?;
                let value = body
                    .value()
                    .map_err(|e| WalError::protocol(e.to_string()))?;
                conn.set_param(name.to_owned(), value.to_owned());
            }
            Message::BackendKeyData(_) => {}
            Message::NoticeResponse(body) => log_notice(&body),
            Message::ErrorResponse(body) => return Err(server_error(&body, &during)),
            Message::ReadyForQuery(_) => return Ok(()),
            other => {
                return Err(WalError::protocol(format!(
                    "unexpected {} during startup",
                    super::message_name(&other)
                )));
            }
        }
    }
}

fn password<'a>(
    config: &'a ReplicationConfig,
    target: &str,
    method: &str,
) -> Result<&'a [u8], WalError> {
    config.password.as_deref().ok_or_else(|| WalError::Auth {
        target: target.to_owned(),
        reason: format!(
            "the server asks for a password ({method}) and none is set: put password=... in \
             the connection string, set PGPASSWORD, or add it to ~/.pgpass"
        ),
    })
}
