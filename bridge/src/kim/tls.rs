//! Where the Clientmodul is and how the bridge makes sure it talks to the right one:
//! TLS over rustls, with the Clientmodul's (often self-signed) certificate pinned or a
//! CA file. Shared by [`super::smtp`] and [`super::pop3`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How the connection to the Clientmodul is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connect, then `STARTTLS` (SMTP) / `STLS` (POP3); refused if the server does not offer it.
    StartTls,
    /// TLS from the first byte (SMTPS 465, POP3S 995).
    ImplicitTls,
    /// No TLS at all. Only allowed when the host is a loopback address (Clientmodul on the
    /// same machine, as KIM permits); any other host is refused before connecting.
    PlainLoopbackOnly,
}

/// Which server certificate is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerTrust {
    /// Exactly the certificate(s) in this PEM file (the Clientmodul's own, usually
    /// self-signed); name and chain are not checked, the bytes must match.
    PinnedCertificate(PathBuf),
    /// Certificates chaining to a CA in this PEM file, for the configured server name.
    CaFile(PathBuf),
}

/// The Clientmodul endpoint of one protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Required unless `security` is `plain_loopback_only`.
    #[serde(default)]
    pub trust: Option<ServerTrust>,
    /// Name checked against the certificate with `ca_file` trust; `host` when absent.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Seconds to wait for the TCP connection and the TLS handshake.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for any single read or write.
    #[serde(default = "default_io_timeout_secs")]
    pub io_timeout_secs: u64,
}

fn default_connect_timeout_secs() -> u64 {
    30
}

fn default_io_timeout_secs() -> u64 {
    120
}

/// Why a protected connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot connect to {0}: {1}")]
    Network(String, std::io::Error),
    #[error("TLS with {0} failed: {1}")]
    Tls(String, std::io::Error),
}

impl Endpoint {
    /// `host:port` for messages.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub(crate) fn io_timeout(&self) -> Duration {
        Duration::from_secs(self.io_timeout_secs.max(1))
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.max(1))
    }

    /// Checks the configuration and builds the TLS client (None for loopback plain text).
    pub(crate) fn tls_connector(&self) -> Result<Option<TlsConnector>, ConnectError> {
        if self.security == Security::PlainLoopbackOnly {
            if !is_loopback(&self.host) {
                return Err(ConnectError::Config(format!(
                    "plain text to {} refused: only a loopback Clientmodul may be reached without TLS",
                    self.host
                )));
            }
            return Ok(None);
        }
        let trust = self.trust.as_ref().ok_or_else(|| {
            ConnectError::Config(
                "TLS to the Clientmodul needs a pinned certificate or a CA file".into(),
            )
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let config = match trust {
            ServerTrust::PinnedCertificate(path) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    certificates: read_pem_certificates(path)?,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            ServerTrust::CaFile(path) => {
                let mut roots = RootCertStore::empty();
                for certificate in read_pem_certificates(path)? {
                    roots.add(certificate).map_err(|e| {
                        ConnectError::Config(format!("CA file {}: {e}", path.display()))
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Some(TlsConnector::from(Arc::new(config))))
    }

    /// Opens the TCP connection, within the connect timeout.
    pub(crate) async fn connect_tcp(&self) -> Result<TcpStream, ConnectError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        match tokio::time::timeout(self.connect_timeout(), connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(ConnectError::Network(self.describe(), e)),
            Err(_) => Err(ConnectError::Network(
                self.describe(),
                std::io::ErrorKind::TimedOut.into(),
            )),
        }
    }

    /// Runs the TLS handshake on `tcp`, within the connect timeout.
    pub(crate) async fn handshake(
        &self,
        connector: &TlsConnector,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let name = self.tls_server_name.as_deref().unwrap_or(&self.host);
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| ConnectError::Config(format!("TLS server name {name}: {e}")))?;
        match tokio::time::timeout(self.connect_timeout(), connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(ConnectError::Tls(self.describe(), e)),
            Err(_) => Err(ConnectError::Tls(
                self.describe(),
                std::io::ErrorKind::TimedOut.into(),
            )),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConnectError::Config(format!("certificate file {}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(ConnectError::Config(format!(
            "certificate file {} holds no certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

/// Accepts a server whose end-entity certificate is byte-for-byte one of the pinned ones
/// (the handshake signature is still verified against its key).
#[derive(Debug)]
struct PinnedCertificate {
    certificates: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.certificates.iter().any(|pinned| pinned == end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the pinned Clientmodul certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
