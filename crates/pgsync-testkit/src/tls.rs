//! TLS for test servers: a throwaway CA with a `localhost` certificate it signed, and a
//! server that lets TCP clients in only over TLS. The connection code's `sslmode` handling
//! (replication and SQL sessions alike) is tested against these.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::cluster::Cluster;
use crate::error::{Result, TestkitError};

/// A CA and a server certificate for `localhost` signed by it, as PEM.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA's certificate (what clients trust: `sslrootcert`).
    pub ca_pem: String,
    /// The server's certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

impl TestCertificates {
    /// A new CA and a server certificate for `localhost` signed by it.
    pub fn generate() -> Result<Self> {
        let failed = |e: rcgen::Error| TestkitError::Certificates(e.to_string());
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pgsync test CA");
        let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(failed)?;
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).map_err(failed)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = leaf.signed_by(&key, &issuer).map_err(failed)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA certificate to `path` (for `sslrootcert`) and returns the path.
    pub fn write_ca(&self, path: &Path) -> Result<PathBuf> {
        std::fs::write(path, &self.ca_pem)
            .map_err(TestkitError::io(format!("writing {}", path.display())))?;
        Ok(path.to_owned())
    }
}

impl Cluster {
    /// Serves `certs` with `ssl = on`, from the next (re)start; pg_hba.conf is left as it
    /// is, so clients may still come in clear text.
    pub fn serve_tls(&self, certs: &TestCertificates) -> Result<()> {
        let cert_file = self.write_server_file("server.crt", certs.cert_pem.as_bytes())?;
        let key_file = self.write_server_file("server.key", certs.key_pem.as_bytes())?;
        self.append_settings(&[
            ("ssl", "on"),
            ("ssl_cert_file", &cert_file.display().to_string()),
            ("ssl_key_file", &key_file.display().to_string()),
        ])
    }

    /// [`Self::serve_tls`], and TCP clients come in only over TLS, with SCRAM passwords
    /// (`hostssl` lines for 127.0.0.1 and ::1, databases and replication); the Unix socket
    /// stays open (`trust`) for the test's own sessions. Restarts the server.
    pub async fn require_tls(&mut self, certs: &TestCertificates) -> Result<()> {
        self.serve_tls(certs)?;
        let mut hba = String::from("local all all trust\nlocal replication all trust\n");
        for addr in ["127.0.0.1/32", "::1/128"] {
            hba.push_str(&format!(
                "hostssl all all {addr} scram-sha-256\nhostssl replication all {addr} scram-sha-256\n"
            ));
        }
        let path = self.data_dir().join("pg_hba.conf");
        std::fs::write(&path, hba)
            .map_err(TestkitError::io(format!("writing {}", path.display())))?;
        self.restart().await
    }
}
