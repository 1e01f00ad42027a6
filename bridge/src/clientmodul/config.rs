//! The test Clientmodul's TOML config: where it listens, its own TLS
//! certificate, how it reaches the provider's MTA, and the software keys,
//! certificate directory and trust anchors that stand in for the SMC-B,
//! the VZD and the TSL.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::kim::address::KimAddress;
use crate::kim::tls::{Security, ServerTrust};

/// The whole config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientmodulConfig {
    /// SMTP towards the client system (implicit TLS).
    pub smtp_listen: SocketAddr,
    /// POP3 towards the client system (implicit TLS).
    pub pop3_listen: SocketAddr,
    /// The Clientmodul's own TLS certificate (PEM; clients pin it).
    pub tls_certificate: PathBuf,
    /// Its private key (PEM).
    pub tls_key: PathBuf,
    /// How the MTA named in a username is reached.
    pub mta: MtaConfig,
    /// One entry per mailbox whose keys this Clientmodul holds.
    #[serde(default, rename = "mailbox")]
    pub mailboxes: Vec<MailboxKeyFiles>,
    /// The certificate directory: `<address>.pem` holds the address's
    /// encryption certificate (what the VZD's `userCertificate` gives).
    pub directory: PathBuf,
    /// CA certificates (PEM files) signer certificates must chain to.
    #[serde(default)]
    pub trust_anchors: Vec<PathBuf>,
    /// There is no OCSP responder here: `false` reports a good signature
    /// as `07` (certificate status unknown), `true` as `01`.
    #[serde(default)]
    pub assume_not_revoked: bool,
    /// Largest client mail accepted (EHLO `SIZE`), bytes.
    #[serde(default = "default_max_mail_size")]
    pub max_mail_size: usize,
}

/// The provider side: the host and port come from each username.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaConfig {
    #[serde(default = "default_mta_security")]
    pub security: Security,
    /// The MTA's certificate (pinned) or CA.
    pub trust: Option<ServerTrust>,
}

/// A mailbox's keys: signature (C.HCI.OSIG) and encryption (C.HCI.ENC).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxKeyFiles {
    pub address: KimAddress,
    pub signature: KeyFile,
    pub encryption: KeyFile,
}

/// A certificate with its key, as PEM files or one PKCS#12 file.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum KeyFile {
    Pem { certificate: PathBuf, key: PathBuf },
    Pkcs12 { pkcs12: PathBuf, password: String },
}

fn default_mta_security() -> Security {
    Security::ImplicitTls
}

fn default_max_mail_size() -> usize {
    // KIM 1.0's 15 MiB plus the base64 and S/MIME overhead.
    25 * 1024 * 1024
}

impl ClientmodulConfig {
    /// Reads the file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }
}
