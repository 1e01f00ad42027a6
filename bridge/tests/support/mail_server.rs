//! The test mail server (Postfix + Dovecot on loopback, `scripts/mailserver`) that stands
//! where the KIM Clientmodul sits: how to reach it, fresh mailboxes per test, and waiting
//! for mail to arrive.
//!
//! `scripts/test` starts the server and exports `KIM_TEST_*`; when they are missing (a plain
//! `cargo nextest run`), the first test runs `scripts/mailserver` itself (idempotent).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kim_bridge::kim::address::KimAddress;
use kim_bridge::kim::pop3::{Pop3Auth, Pop3Config, Pop3Session};
use kim_bridge::kim::smtp::SmtpConfig;
use kim_bridge::kim::tls::{Endpoint, Security, ServerTrust};
use kim_bridge::kim::username::MailboxContext;

/// Ports, password and certificate of the running test mail server.
#[derive(Debug, Clone)]
pub struct MailServer {
    pub smtp_port: u16,
    pub smtps_port: u16,
    pub pop3s_port: u16,
    pub pop3_port: u16,
    pub password: String,
    /// PEM file of the server's self-signed certificate, which clients pin.
    pub certificate: PathBuf,
}

/// The server, started on first use.
pub fn mail_server() -> &'static MailServer {
    static SERVER: OnceLock<MailServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        if std::env::var_os("KIM_TEST_MAIL_CERT").is_some() {
            return MailServer::from_vars(|name| std::env::var(name).ok());
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/mailserver");
        let up = Command::new(&script)
            .arg("up")
            .status()
            .expect("run scripts/mailserver");
        assert!(up.success(), "scripts/mailserver failed");
        let env = Command::new(&script)
            .arg("env")
            .output()
            .expect("scripts/mailserver env");
        let env = String::from_utf8(env.stdout).expect("env output is UTF-8");
        MailServer::from_vars(|name| {
            env.lines()
                .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_owned())
        })
    })
}

impl MailServer {
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let port = |name: &str| -> u16 {
            var(name)
                .unwrap_or_else(|| panic!("{name} is not set"))
                .parse()
                .unwrap_or_else(|_| panic!("{name} is not a port"))
        };
        Self {
            smtp_port: port("KIM_TEST_SMTP_PORT"),
            smtps_port: port("KIM_TEST_SMTPS_PORT"),
            pop3s_port: port("KIM_TEST_POP3S_PORT"),
            pop3_port: port("KIM_TEST_POP3_PORT"),
            password: var("KIM_TEST_MAIL_PASSWORD").expect("KIM_TEST_MAIL_PASSWORD"),
            certificate: var("KIM_TEST_MAIL_CERT")
                .expect("KIM_TEST_MAIL_CERT")
                .into(),
        }
    }

    /// A mailbox nobody else uses: a random local part in `domain` (e.g. `practice`), so
    /// tests run in parallel against one server.
    pub fn new_mailbox(&self, domain: &str) -> KimAddress {
        let local = format!("t-{}", uuid::Uuid::new_v4().simple());
        KimAddress::parse(&format!("{local}@{domain}.kim.telematik-test")).expect("valid address")
    }

    /// The Konnektor context a Clientmodul would need for `address`.
    pub fn context(&self, address: &KimAddress) -> MailboxContext {
        MailboxContext {
            address: address.clone(),
            smtp_mta: format!("{}:465", address.domain()),
            pop3_mta: format!("{}:995", address.domain()),
            mandant_id: "1".into(),
            clientsystem_id: "KIM".into(),
            workplace_id: "7".into(),
            user_id: None,
            konnektor_id: Some("Konn_1".into()),
        }
    }

    fn endpoint(&self, port: u16, security: Security, certificate: PathBuf) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
            security,
            trust: Some(ServerTrust::PinnedCertificate(certificate)),
            tls_server_name: None,
            connect_timeout_secs: 10,
            io_timeout_secs: 30,
        }
    }

    /// SMTP as `address` with the `#` username, pinned to the server's certificate;
    /// `ImplicitTls` uses the SMTPS port, anything else the submission port.
    pub fn smtp(&self, address: &KimAddress, security: Security) -> SmtpConfig {
        self.smtp_pinned(address, security, self.certificate.clone())
    }

    /// Like [`Self::smtp`] with another pinned certificate.
    pub fn smtp_pinned(
        &self,
        address: &KimAddress,
        security: Security,
        certificate: PathBuf,
    ) -> SmtpConfig {
        let port = match security {
            Security::ImplicitTls => self.smtps_port,
            _ => self.smtp_port,
        };
        SmtpConfig {
            endpoint: self.endpoint(port, security, certificate),
            username: self.context(address).smtp_username().expect("username"),
            password: self.password.clone(),
            ehlo_name: "kim-bridge.test".into(),
        }
    }

    /// POP3 as `address`; `ImplicitTls` uses the POP3S port, `StartTls` the STLS port.
    pub fn pop3(&self, address: &KimAddress, security: Security, auth: Pop3Auth) -> Pop3Config {
        self.pop3_pinned(address, security, auth, self.certificate.clone())
    }

    /// Like [`Self::pop3`] with another pinned certificate.
    pub fn pop3_pinned(
        &self,
        address: &KimAddress,
        security: Security,
        auth: Pop3Auth,
        certificate: PathBuf,
    ) -> Pop3Config {
        let port = match security {
            Security::ImplicitTls => self.pop3s_port,
            _ => self.pop3_port,
        };
        Pop3Config {
            endpoint: self.endpoint(port, security, certificate),
            username: self.context(address).pop3_username().expect("username"),
            password: self.password.clone(),
            auth,
            max_message_size: 32 * 1024 * 1024,
        }
    }

    /// Polls `address`'s mailbox over POP3S until it holds at least `count` mails; returns
    /// them as (uid, raw) without deleting anything.
    pub async fn wait_for_mails(
        &self,
        address: &KimAddress,
        count: usize,
    ) -> Vec<(String, Vec<u8>)> {
        let config = self.pop3(address, Security::ImplicitTls, Pop3Auth::UserPass);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut session = Pop3Session::connect(&config).await.expect("POP3 login");
            let listing = session.uidl().await.expect("UIDL");
            if listing.len() >= count {
                let mut mails = Vec::new();
                for (number, uid) in listing {
                    mails.push((uid, session.retr(number).await.expect("RETR")));
                }
                session.quit().await.expect("QUIT");
                return mails;
            }
            session.quit().await.expect("QUIT");
            assert!(
                Instant::now() < deadline,
                "{address}: {} of {count} mails after 30 s",
                listing.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
