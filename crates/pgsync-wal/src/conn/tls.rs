//! TLS for replication connections, with libpq's `sslmode` semantics, on rustls (ring).
//!
//! ```text
//! client                          server
//!   SSLRequest (8 bytes)  ─────▶
//!                         ◀─────  'S' (go ahead) | 'N' (no TLS here)
//!   TLS handshake         ◀────▶                      (only after 'S')
//!   StartupMessage ...    ─────▶  (inside TLS, or in clear for prefer + 'N')
//! ```
//!
//! | sslmode     | TLS                 | chain checked | host name checked |
//! |-------------|---------------------|---------------|-------------------|
//! | disable     | never               | -             | -                 |
//! | allow       | if plain is refused | no            | no                |
//! | prefer      | if the server has it| no            | no                |
//! | require     | must                | no*           | no                |
//! | verify-ca   | must                | yes           | no                |
//! | verify-full | must                | yes           | yes               |
//!
//! *As in libpq, `require` with an explicit `sslrootcert` behaves like `verify-ca`.
//! Exactly one byte is read after the SSLRequest, so nothing sent in clear by a
//! man-in-the-middle can be mistaken for TLS-protected data.
//!
//! The same [`client_config`] serves the ordinary SQL sessions (see `crate::dsn::sql`),
//! so both kinds of connection trust and check exactly the same things.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::socket::Socket;
use crate::dsn::{ConnInfo, Endpoint, SslMode};
use crate::error::WalError;

/// Negotiates TLS on a fresh TCP connection as `config.ssl_mode` asks.
///
/// Not cancel-safe (a half-done handshake leaves the socket unusable; drop it).
pub(crate) async fn negotiate(mut tcp: TcpStream, config: &ConnInfo) -> Result<Socket, WalError> {
    let target = config.target();
    // `allow` tries clear text first (`ReplicationConnection::connect` retries with TLS).
    if matches!(config.ssl_mode, SslMode::Disable | SslMode::Allow) {
        return Ok(Socket::Tcp(tcp));
    }
    // Build the TLS settings first: a verify mode without roots fails before any I/O.
    let tls = client_config(config.ssl_mode, config.ssl_root_cert.as_deref(), &target)?;
    let mut request = bytes::BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut request);
    tcp.write_all(&request)
        .await
        .map_err(|e| WalError::io("sending SSLRequest", e))?;
    let answer = tcp
        .read_u8()
        .await
        .map_err(|e| WalError::io("reading the answer to SSLRequest", e))?;
    match answer {
        b'S' => {}
        b'N' if config.ssl_mode == SslMode::Prefer => return Ok(Socket::Tcp(tcp)),
        b'N' => {
            return Err(WalError::Tls {
                target,
                reason: format!(
                    "the server does not accept TLS connections but sslmode={} requires TLS; \
                     turn on ssl in postgresql.conf or lower sslmode",
                    config.ssl_mode
                ),
            });
        }
        other => {
            return Err(WalError::protocol(format!(
                "unexpected answer {other:#04x} to SSLRequest"
            )));
        }
    }
    let name = server_name(config)?;
    TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map(|s| Socket::Tls(Box::new(s)))
        .map_err(|e| WalError::Tls {
            target,
            reason: handshake_reason(&e, config.ssl_mode),
        })
}

/// Why a handshake failed, and what to change.
pub(crate) fn handshake_reason(e: &std::io::Error, mode: SslMode) -> String {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the server certificate is not valid for this host name ({e}); connect with a \
             name the certificate lists, or use sslmode=verify-ca (sslmode={mode} now)"
        ),
        Some(rustls::Error::InvalidCertificate(_)) => format!(
            "the server certificate did not verify ({e}); check sslrootcert names the CA \
             that signed it"
        ),
        _ => format!("handshake failed: {e}"),
    }
}

fn server_name(config: &ConnInfo) -> Result<ServerName<'static>, WalError> {
    let host = match &config.endpoint {
        Endpoint::Tcp { host, .. } => host.clone(),
        Endpoint::Unix(_) => return Err(WalError::Config("TLS over a Unix socket".into())),
    };
    ServerName::try_from(host.clone())
        .map_err(|_| WalError::Config(format!("{host:?} is not a valid host name for TLS")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls settings for `mode`: which roots are trusted and what is checked.
pub(crate) fn client_config(
    mode: SslMode,
    root_cert: Option<&Path>,
    target: &str,
) -> Result<rustls::ClientConfig, WalError> {
    let provider = provider();
    let tls_err = |reason: String| WalError::Tls {
        target: target.to_owned(),
        reason,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let mode = match (mode, root_cert) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (m, _) => m,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies() {
        let roots = Arc::new(load_roots(root_cert, mode, target)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| tls_err(format!("cannot use the root certificates: {e}")))?;
        if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        }
    } else {
        Arc::new(EncryptOnly(provider))
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn load_roots(
    root_cert: Option<&Path>,
    mode: SslMode,
    target: &str,
) -> Result<RootCertStore, WalError> {
    let target = target.to_owned();
    let path = match root_cert {
        Some(p) if p == Path::new("system") => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
            .unwrap_or_default(),
    };
    let missing = || WalError::Tls {
        target: target.clone(),
        reason: format!(
            "sslmode={} needs trusted root certificates, and {} cannot be read: set \
             sslrootcert=<PEM file of the CA> (or sslrootcert=system)",
            mode,
            path.display()
        ),
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|_| missing())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WalError::Tls {
            target: target.clone(),
            reason: format!("{} is not a PEM certificate file: {e}", path.display()),
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(missing());
    }
    Ok(roots)
}

/// `verify-ca`: the chain must verify; the name in the certificate is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` / `require`: encryption without authentication of the server, as libpq does.
/// The handshake signatures are still checked (the peer must hold the certificate's key).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
