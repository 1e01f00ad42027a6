//! The test KIM Clientmodul (`kim_bridge::clientmodul`) in front of the test
//! mail server, with a throwaway PKI made here with the `openssl` crate: a
//! CA, per mailbox a signature (OSIG) and an encryption (ENC) key pair, a
//! certificate directory, and the Clientmodul's own TLS certificate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kim_bridge::clientmodul::RunningClientmodul;
use kim_bridge::clientmodul::config::ClientmodulConfig;
use kim_bridge::kim::address::KimAddress;
use kim_bridge::kim::pop3::{Pop3Auth, Pop3Config};
use kim_bridge::kim::smtp::SmtpConfig;
use kim_bridge::kim::tls::{Endpoint, Security, ServerTrust};
use kim_bridge::smime::MailboxKey;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

use super::mail_server::mail_server;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A test CA that issues certificates.
pub struct TestCa {
    pub cert: X509,
    key: PKey<Private>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rsa_key();
        let cert = build_cert(name, &key, None, true, &[]);
        Self { cert, key }
    }

    /// A new key pair and its certificate for `name`.
    pub fn issue(&self, name: &str, alt_names: &[&str]) -> (X509, PKey<Private>) {
        let key = rsa_key();
        let cert = build_cert(name, &key, Some((&self.cert, &self.key)), false, alt_names);
        (cert, key)
    }
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("PKey")
}

fn build_cert(
    name: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
    alt_names: &[&str],
) -> X509 {
    let mut subject = X509NameBuilder::new().expect("name");
    subject.append_entry_by_text("CN", name).expect("CN");
    let subject = subject.build();
    let mut builder = X509Builder::new().expect("builder");
    builder.set_version(2).expect("v3");
    let serial = BigNum::from_u32(rand::random::<u32>() >> 1)
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    builder.set_serial_number(&serial).expect("serial");
    builder.set_subject_name(&subject).expect("subject");
    let issuer_name = issuer.map_or(&*subject, |(cert, _)| cert.subject_name());
    builder.set_issuer_name(issuer_name).expect("issuer");
    builder.set_pubkey(key).expect("key");
    builder
        .set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    builder
        .set_not_after(&Asn1Time::days_from_now(2).expect("time"))
        .expect("not after");
    if ca {
        let constraints = BasicConstraints::new().critical().ca().build().expect("bc");
        builder.append_extension(constraints).expect("bc");
    }
    if !alt_names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for alt in alt_names {
            if alt.parse::<std::net::IpAddr>().is_ok() {
                san.ip(alt);
            } else {
                san.dns(alt);
            }
        }
        let san = san
            .build(&builder.x509v3_context(issuer.map(|(c, _)| &**c), None))
            .expect("san");
        builder.append_extension(san).expect("san");
    }
    let signing_key = issuer.map_or(key, |(_, k)| k);
    builder
        .sign(signing_key, MessageDigest::sha256())
        .expect("sign");
    builder.build()
}

fn write_pem(path: &Path, cert: &X509, key: &PKey<Private>) -> (PathBuf, PathBuf) {
    let cert_path = path.with_extension("pem");
    let key_path = path.with_extension("key");
    std::fs::write(&cert_path, cert.to_pem().expect("pem")).expect("writing a certificate");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().expect("pem")).expect("writing a key");
    (cert_path, key_path)
}

/// A mailbox's keys as the test keeps them (to check what the Clientmodul made).
pub struct TestMailbox {
    pub encryption: MailboxKey,
}

/// A running test Clientmodul and its files.
pub struct TestClientmodul {
    pub running: Option<RunningClientmodul>,
    pub config: ClientmodulConfig,
    pub ca: TestCa,
    /// The Clientmodul's TLS certificate (clients pin it).
    pub certificate: PathBuf,
    pub mailboxes: BTreeMap<KimAddress, TestMailbox>,
    dir: tempfile::TempDir,
}

impl TestClientmodul {
    /// Holds the keys of `with_keys` (listed in the directory too) and lists
    /// `directory_only` in the directory (mailboxes served elsewhere).
    /// `assume_not_revoked` as in the config.
    pub async fn start(
        with_keys: &[&KimAddress],
        directory_only: &[&KimAddress],
        assume_not_revoked: bool,
    ) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let server = mail_server();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("KIM test CA");
        let (cert, key) = ca.issue("localhost", &["localhost", "127.0.0.1"]);
        let (tls_cert, tls_key) = write_pem(&dir.path().join("tls"), &cert, &key);
        let directory = dir.path().join("directory");
        std::fs::create_dir(&directory).expect("directory");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert.to_pem().expect("pem")).expect("ca");
        let mut toml = format!(
            "smtp_listen = \"127.0.0.1:0\"\npop3_listen = \"127.0.0.1:0\"\n\
             tls_certificate = \"{}\"\ntls_key = \"{}\"\ndirectory = \"{}\"\n\
             trust_anchors = [\"{}\"]\nassume_not_revoked = {assume_not_revoked}\n\
             [mta]\nsecurity = \"implicit_tls\"\ntrust = {{ pinned_certificate = \"{}\" }}\n",
            tls_cert.display(),
            tls_key.display(),
            directory.display(),
            ca_path.display(),
            server.certificate.display(),
        );
        let mut mailboxes = BTreeMap::new();
        for (index, address) in with_keys.iter().chain(directory_only).enumerate() {
            let (enc_cert, enc_key) = ca.issue(&format!("mailbox {index} ENC"), &[]);
            std::fs::write(
                directory.join(format!("{address}.pem")),
                enc_cert.to_pem().expect("pem"),
            )
            .expect("directory entry");
            if index >= with_keys.len() {
                continue;
            }
            let (osig_cert, osig_key) = ca.issue(&format!("mailbox {index} OSIG"), &[]);
            let (osig_pem, osig_key_pem) = write_pem(
                &dir.path().join(format!("osig-{index}")),
                &osig_cert,
                &osig_key,
            );
            let (enc_pem, enc_key_pem) = write_pem(
                &dir.path().join(format!("enc-{index}")),
                &enc_cert,
                &enc_key,
            );
            toml.push_str(&format!(
                "[[mailbox]]\naddress = \"{address}\"\n\
                 signature = {{ certificate = \"{}\", key = \"{}\" }}\n\
                 encryption = {{ certificate = \"{}\", key = \"{}\" }}\n",
                osig_pem.display(),
                osig_key_pem.display(),
                enc_pem.display(),
                enc_key_pem.display(),
            ));
            mailboxes.insert(
                (*address).clone(),
                TestMailbox {
                    encryption: MailboxKey {
                        email: address.to_string(),
                        cert: enc_cert,
                        key: enc_key,
                    },
                },
            );
        }
        let config: ClientmodulConfig = toml::from_str(&toml).expect("the Clientmodul's config");
        let running = RunningClientmodul::start(config.clone())
            .await
            .expect("starting the test Clientmodul");
        Self {
            running: Some(running),
            config,
            ca,
            certificate: tls_cert,
            mailboxes,
            dir,
        }
    }

    /// Starts it again with the same config and files (new ports).
    pub async fn restart(mut self) -> Self {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        self.running = Some(
            RunningClientmodul::start(self.config.clone())
                .await
                .expect("restarting the test Clientmodul"),
        );
        self
    }

    fn running(&self) -> &RunningClientmodul {
        self.running.as_ref().expect("the Clientmodul runs")
    }

    fn endpoint(&self, port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
            security: Security::ImplicitTls,
            trust: Some(ServerTrust::PinnedCertificate(self.certificate.clone())),
            tls_server_name: None,
            connect_timeout_secs: 10,
            io_timeout_secs: 60,
        }
    }

    /// The client system's SMTP config for `address` (`#` username naming
    /// the test mail server's SMTPS port).
    pub fn smtp(&self, address: &KimAddress) -> SmtpConfig {
        self.smtp_as(&self.smtp_username(address), &mail_server().password)
    }

    pub fn smtp_username(&self, address: &KimAddress) -> String {
        format!("{address}#127.0.0.1:{}#1#KIM#1", mail_server().smtps_port)
    }

    /// SMTP with any username and password.
    pub fn smtp_as(&self, username: &str, password: &str) -> SmtpConfig {
        SmtpConfig {
            endpoint: self.endpoint(self.running().smtp_address.port()),
            username: username.into(),
            password: password.into(),
            ehlo_name: "kim-bridge.test".into(),
        }
    }

    pub fn pop3_username(&self, address: &KimAddress) -> String {
        format!(
            "{address}#127.0.0.1:{}#1#KIM#1#*#*",
            mail_server().pop3s_port
        )
    }

    /// The client system's POP3 config for `address`.
    pub fn pop3(&self, address: &KimAddress) -> Pop3Config {
        Pop3Config {
            endpoint: self.endpoint(self.running().pop3_address.port()),
            username: self.pop3_username(address),
            password: mail_server().password.clone(),
            auth: Pop3Auth::UserPass,
            max_message_size: 32 * 1024 * 1024,
        }
    }

    /// Points a bridge config (TOML) at this Clientmodul as `address`.
    pub fn configure_bridge(&self, document: &mut toml_edit::DocumentMut, address: &KimAddress) {
        let mailbox = &mut document["mailbox"];
        mailbox["address"] = toml_edit::value(address.as_str());
        let running = self.running();
        for (protocol, port, username) in [
            (
                "smtp",
                running.smtp_address.port(),
                self.smtp_username(address),
            ),
            (
                "pop3",
                running.pop3_address.port(),
                self.pop3_username(address),
            ),
        ] {
            let endpoint = &mut mailbox[protocol];
            endpoint["host"] = toml_edit::value("127.0.0.1");
            endpoint["port"] = toml_edit::value(i64::from(port));
            endpoint["security"] = toml_edit::value("implicit_tls");
            let mut trust = toml_edit::InlineTable::new();
            trust.insert(
                "pinned_certificate",
                self.certificate.display().to_string().into(),
            );
            endpoint["trust"] = toml_edit::value(trust);
            endpoint["username"] = toml_edit::value(username);
            endpoint["password"] = toml_edit::value(mail_server().password.as_str());
        }
    }

    /// Where the scratch files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `mail` (an outer KOM-LE mail) with one byte in the middle of its
/// AuthEnvelopedData flipped: inside the ciphertext for any mail of some size.
pub fn tamper_ciphertext(mail: &[u8]) -> Vec<u8> {
    let (headers, body) = split_mail(mail);
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let mut der = BASE64.decode(clean).expect("a base64 body");
    let middle = der.len() / 2;
    der[middle] ^= 0x01;
    let mut out = headers.to_vec();
    for line in BASE64.encode(der).as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `mail` with its outer Message-ID changed after signing.
pub fn tamper_outer_header(mail: &[u8]) -> Vec<u8> {
    let (headers, body) = split_mail(mail);
    let headers = String::from_utf8(headers.to_vec()).expect("ASCII headers");
    let changed: String = headers
        .split_inclusive("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("message-id:") {
                format!(
                    "Message-ID: <{}@changed.kim.telematik-test>\r\n",
                    uuid::Uuid::new_v4()
                )
            } else {
                line.to_owned()
            }
        })
        .collect();
    [changed.as_bytes(), body].concat()
}

/// (headers with the empty line, body).
fn split_mail(mail: &[u8]) -> (&[u8], &[u8]) {
    let at = mail
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block")
        + 4;
    mail.split_at(at)
}
