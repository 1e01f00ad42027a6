//! What a real Clientmodul gets from the SMC-B (through the Konnektor), the
//! VZD and the TSL, here from files: each mailbox's software keys, a
//! directory of encryption certificates keyed by address, and the CA
//! certificates signatures must chain to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::config::{ClientmodulConfig, KeyFile};
use crate::kim::address::KimAddress;
use crate::smime::{MailboxKey, RecipientCert, SignerIdentity};

/// The keys of one mailbox.
pub struct Mailbox {
    /// Signs what the mailbox sends.
    pub signer: SignerIdentity,
    /// Decrypts what it receives.
    pub decryption: MailboxKey,
}

/// Keys, directory and trust anchors, loaded once at start (the directory
/// is read per lookup, so tests can add certificates while it runs).
pub struct Keystore {
    mailboxes: HashMap<KimAddress, Arc<Mailbox>>,
    directory: PathBuf,
    trust_anchors: Arc<Vec<X509>>,
}

impl Keystore {
    pub fn load(config: &ClientmodulConfig) -> anyhow::Result<Self> {
        let mut mailboxes = HashMap::new();
        for entry in &config.mailboxes {
            let (signature_cert, signature_key) = read_key_file(&entry.signature)
                .with_context(|| format!("signature key of {}", entry.address))?;
            let (encryption_cert, encryption_key) = read_key_file(&entry.encryption)
                .with_context(|| format!("encryption key of {}", entry.address))?;
            let email = entry.address.as_str().to_owned();
            let mailbox = Mailbox {
                signer: SignerIdentity {
                    email: email.clone(),
                    cert: signature_cert,
                    key: signature_key,
                    encryption_cert: encryption_cert.clone(),
                },
                decryption: MailboxKey {
                    email,
                    cert: encryption_cert,
                    key: encryption_key,
                },
            };
            if mailboxes
                .insert(entry.address.clone(), Arc::new(mailbox))
                .is_some()
            {
                bail!("{} is configured twice", entry.address);
            }
        }
        let mut trust_anchors = Vec::new();
        for path in &config.trust_anchors {
            trust_anchors.extend(read_certificates(path)?);
        }
        Ok(Self {
            mailboxes,
            directory: config.directory.clone(),
            trust_anchors: Arc::new(trust_anchors),
        })
    }

    /// The keys of `address`, when this Clientmodul holds them.
    pub fn mailbox(&self, address: &KimAddress) -> Option<Arc<Mailbox>> {
        self.mailboxes.get(address).cloned()
    }

    /// The encryption certificate the directory lists for `address`.
    pub fn encryption_certificate(&self, address: &KimAddress) -> Option<RecipientCert> {
        let path = self.directory.join(format!("{}.pem", address.as_str()));
        let pem = std::fs::read(path).ok()?;
        let cert = X509::from_pem(&pem).ok()?;
        Some(RecipientCert {
            email: address.as_str().to_owned(),
            cert,
        })
    }

    /// The CA certificates signatures are checked against.
    pub fn trust_anchors(&self) -> Arc<Vec<X509>> {
        self.trust_anchors.clone()
    }
}

fn read_key_file(file: &KeyFile) -> anyhow::Result<(X509, PKey<Private>)> {
    match file {
        KeyFile::Pem { certificate, key } => {
            let cert = read_certificates(certificate)?
                .into_iter()
                .next()
                .with_context(|| format!("{} holds no certificate", certificate.display()))?;
            let pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            let key = PKey::private_key_from_pem(&pem)
                .with_context(|| format!("{} is no PEM private key", key.display()))?;
            Ok((cert, key))
        }
        KeyFile::Pkcs12 { pkcs12, password } => {
            let der =
                std::fs::read(pkcs12).with_context(|| format!("reading {}", pkcs12.display()))?;
            let parsed = Pkcs12::from_der(&der)
                .and_then(|p| p.parse2(password))
                .with_context(|| format!("opening {}", pkcs12.display()))?;
            match (parsed.cert, parsed.pkey) {
                (Some(cert), Some(key)) => Ok((cert, key)),
                _ => bail!("{} lacks a certificate or key", pkcs12.display()),
            }
        }
    }
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<X509>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    X509::stack_from_pem(&pem).with_context(|| format!("{} is no PEM certificate", path.display()))
}
