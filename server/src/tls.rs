//! TLS for both listeners, with rustls and its `ring` provider: the certificate and key of
//! `--tls-cert`/`--tls-key`, and with `--client-ca` client-certificate authentication (mTLS) of
//! the broker.
//!
//! Invariants: the files are read and checked once, at startup, before any listener accepts, so a
//! missing, unreadable or malformed file stops the service with an error naming its flag; with a
//! client CA, a peer that presents no certificate, or one not signed by that CA, fails the
//! handshake and never reaches a handler. The key's bytes are never logged or put in an error.

use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The TLS settings as given: PEM file paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The server certificate chain (`--tls-cert`), leaf first.
    pub cert: PathBuf,
    /// The server's private key (`--tls-key`), PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
    /// The CA that signs brokers' client certificates (`--client-ca`); `None`: no client auth.
    pub client_ca: Option<PathBuf>,
}

/// Loaded TLS settings for both listeners.
#[derive(Clone)]
pub struct Tls {
    /// The rustls configuration of the HTTP listeners (ALPN `http/1.1`).
    pub http: Arc<ServerConfig>,
    /// The same identity and client CA for tonic's own TLS.
    pub grpc: tonic::transport::ServerTlsConfig,
    /// Whether clients must present a certificate signed by the client CA.
    pub mutual: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("mutual", &self.mutual).finish()
    }
}

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process-wide default rustls provider (tonic builds its configuration with the
/// default). Harmless when called again.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("`{flag}` {}: cannot be read: {e}", path.display())))
}

fn certs(flag: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(Error::Config(format!(
            "`{flag}` {}: holds no PEM certificate",
            path.display()
        ))),
        Err(e) => Err(Error::Config(format!(
            "`{flag}` {}: not a valid PEM certificate: {e}",
            path.display()
        ))),
    }
}

impl Tls {
    /// Reads and checks the files, naming the flag at fault in any error.
    pub fn load(paths: &TlsPaths) -> Result<Tls> {
        let cert_pem = read("--tls-cert", &paths.cert)?;
        let key_pem = read("--tls-key", &paths.key)?;
        let chain = certs("--tls-cert", &paths.cert, &cert_pem)?;
        // The error of a bad key is not passed on: it could quote part of the key.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            Error::Config(format!(
                "`--tls-key` {}: not a valid PEM private key (PKCS#8, PKCS#1 or SEC1)",
                paths.key.display()
            ))
        })?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let mut grpc = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem));
        let builder = match &paths.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let ca_pem = read("--client-ca", ca_path)?;
                let mut roots = RootCertStore::empty();
                for c in certs("--client-ca", ca_path, &ca_pem)? {
                    roots.add(c).map_err(|e| {
                        Error::Config(format!(
                            "`--client-ca` {}: not a usable CA certificate: {e}",
                            ca_path.display()
                        ))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            Error::Config(format!("`--client-ca` {}: {e}", ca_path.display()))
                        })?;
                grpc = grpc.client_ca_root(tonic::transport::Certificate::from_pem(&ca_pem));
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut http = builder.with_single_cert(chain, key).map_err(|e| {
            Error::Config(format!(
                "`--tls-cert` {} and `--tls-key` {}: {e}",
                paths.cert.display(),
                paths.key.display()
            ))
        })?;
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            http: Arc::new(http),
            grpc,
            mutual: paths.client_ca.is_some(),
        })
    }
}
