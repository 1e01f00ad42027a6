//! Sending client mails to the Clientmodul over SMTP (RFC 5321): TLS, AUTH PLAIN/LOGIN with
//! the `#`-encoded username, `MAIL FROM` = the mailbox, `RCPT TO:<…> NOTIFY=SUCCESS,FAILURE`.
//!
//! Every answer of the server ends up in a [`SendOutcome`], so the bridge can tell the room
//! exactly what happened (reply code, enhanced status code, text, per recipient) and retry
//! only what is temporary.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::address::KimAddress;
use super::line::{IoStream, LineConnection};
use super::outgoing::{ClientMail, RenderError, SenderSystem};
use super::tls::{ConnectError, Endpoint, Security};

/// Longest reply line accepted (RFC 5321 says 512; leave room for verbose servers).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 100;

/// How to reach and log in to the Clientmodul's SMTP side.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpConfig {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// The SMTP username, see [`super::username::MailboxContext::smtp_username`].
    pub username: String,
    pub password: String,
    /// Name sent with EHLO.
    #[serde(default = "default_ehlo_name")]
    pub ehlo_name: String,
}

fn default_ehlo_name() -> String {
    "kim-bridge.invalid".to_owned()
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("ehlo_name", &self.ehlo_name)
            .finish()
    }
}

/// `MAIL FROM` and `RCPT TO` of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: KimAddress,
    pub to: Vec<KimAddress>,
}

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Three-digit reply code, e.g. 250, 451, 535.
    pub code: u16,
    /// RFC 3463 enhanced status code such as `5.7.8`, when the server sent one.
    pub enhanced: Option<String>,
    /// The text of all lines (without codes), joined with `\n`.
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent_failure(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.enhanced {
            Some(enhanced) => write!(f, "{} {} {}", self.code, enhanced, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// What the server said to one `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    pub address: KimAddress,
    pub reply: Reply,
}

impl RecipientResult {
    pub fn accepted(&self) -> bool {
        self.reply.is_positive()
    }
}

/// Where in the SMTP dialogue a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Connect,
    Tls,
    Greeting,
    Ehlo,
    Auth,
    MailFrom,
    RcptTo,
    Data,
}

/// Why a mail was not (fully) accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    /// The server's reply, when the failure was a reply (not a network or TLS error).
    pub reply: Option<Reply>,
    /// A one-line description for logs and the failure notice in the room.
    pub detail: String,
}

/// The result of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The server took responsibility for the mail after `DATA`. Recipients it refused are
    /// in `recipients` with their reply (others still get the mail).
    Accepted {
        reply: Reply,
        recipients: Vec<RecipientResult>,
    },
    /// Try again later: a 4xx reply, a network or TLS problem (including a certificate that
    /// is not the pinned one: nothing is sent, and the operator can fix it), a timeout.
    TemporaryFailure {
        failure: Failure,
        recipients: Vec<RecipientResult>,
    },
    /// Retrying will not help: a 5xx reply (bad credentials 535, sender without encryption
    /// certificate 553, too large 552/5.3.4, all recipients refused, ...).
    PermanentFailure {
        failure: Failure,
        recipients: Vec<RecipientResult>,
    },
}

impl SendOutcome {
    /// Per-recipient replies (empty when the dialogue failed before `RCPT TO`).
    pub fn recipients(&self) -> &[RecipientResult] {
        match self {
            Self::Accepted { recipients, .. }
            | Self::TemporaryFailure { recipients, .. }
            | Self::PermanentFailure { recipients, .. } => recipients,
        }
    }
}

/// A local problem: nothing was attempted on the network.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("the mail cannot be rendered: {0}")]
    Render(#[from] RenderError),
    #[error("SMTP configuration: {0}")]
    Config(String),
    #[error("the envelope has no recipient")]
    NoRecipients,
}

/// Sends mail to the Clientmodul, one connection per mail (the Clientmodul signs and
/// encrypts per mail anyway, and a fresh connection never inherits a broken state).
#[derive(Clone)]
pub struct SmtpSender {
    config: SmtpConfig,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSender")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// Checks the configuration and loads the pinned certificate or CA file.
    pub fn new(config: SmtpConfig) -> Result<Self, SmtpError> {
        let connector = config.endpoint.tls_connector().map_err(|e| match e {
            ConnectError::Config(e) => SmtpError::Config(e),
            other => SmtpError::Config(other.to_string()),
        })?;
        Ok(Self { config, connector })
    }

    /// Renders `mail` and sends it with `MAIL FROM` = its From and `RCPT TO` = its To.
    pub async fn send(
        &self,
        mail: &ClientMail,
        sender: &SenderSystem,
    ) -> Result<SendOutcome, SmtpError> {
        let raw = mail.render(sender)?;
        let envelope = Envelope {
            from: mail.from.clone(),
            to: mail.to.clone(),
        };
        self.send_raw(&envelope, &raw).await
    }

    /// Sends already rendered RFC 5322 bytes.
    pub async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<SendOutcome, SmtpError> {
        if envelope.to.is_empty() {
            return Err(SmtpError::NoRecipients);
        }
        let mut recipients = Vec::new();
        let result = self.transaction(envelope, message, &mut recipients).await;
        let outcome = match result {
            Ok(reply) => SendOutcome::Accepted { reply, recipients },
            Err(failure) => {
                let permanent = failure
                    .reply
                    .as_ref()
                    .is_some_and(Reply::is_permanent_failure);
                if permanent {
                    SendOutcome::PermanentFailure {
                        failure,
                        recipients,
                    }
                } else {
                    SendOutcome::TemporaryFailure {
                        failure,
                        recipients,
                    }
                }
            }
        };
        match &outcome {
            SendOutcome::Accepted { reply, .. } => {
                info!(server = %self.config.endpoint.describe(), %reply, "KIM mail accepted")
            }
            SendOutcome::TemporaryFailure { failure, .. }
            | SendOutcome::PermanentFailure { failure, .. } => info!(
                server = %self.config.endpoint.describe(),
                stage = ?failure.stage,
                detail = %failure.detail,
                "KIM mail not accepted"
            ),
        }
        Ok(outcome)
    }

    /// Logs in and says goodbye: whether the server is reachable and takes the credentials
    /// (a Clientmodul checks this at the client's AUTH, before it accepts any mail).
    pub async fn check_login(&self) -> Result<(), Failure> {
        let (mut conn, capabilities) = self.open().await?;
        let result = conn
            .authenticate(&capabilities, &self.config.username, &self.config.password)
            .await;
        conn.quit().await;
        result
    }

    /// Connects, protects the connection as configured and says EHLO (again after STARTTLS).
    async fn open(&self) -> Result<(Client<Box<dyn IoStream>>, Capabilities), Failure> {
        let endpoint = &self.config.endpoint;
        let tcp = endpoint
            .connect_tcp()
            .await
            .map_err(|e| connect_failure(Stage::Connect, e))?;
        let stream: Box<dyn IoStream> = match (&self.connector, endpoint.security) {
            (Some(connector), Security::StartTls) => {
                let mut plain = Client::new(tcp, endpoint);
                expect(Stage::Greeting, plain.read_reply().await, 220)?;
                let capabilities = plain.ehlo(&self.config.ehlo_name).await?;
                if !capabilities.contains("STARTTLS") {
                    return Err(Failure {
                        stage: Stage::Tls,
                        reply: None,
                        detail: "the server does not offer STARTTLS".into(),
                    });
                }
                expect(Stage::Tls, plain.command(b"STARTTLS\r\n").await, 220)?;
                let tcp = plain
                    .line
                    .into_stream()
                    .map_err(|e| io_failure(Stage::Tls, e))?;
                let tls = endpoint
                    .handshake(connector, tcp)
                    .await
                    .map_err(|e| connect_failure(Stage::Tls, e))?;
                let mut conn = Client::new(Box::new(tls) as Box<dyn IoStream>, endpoint);
                let capabilities = conn.ehlo(&self.config.ehlo_name).await?;
                return Ok((conn, capabilities));
            }
            (Some(connector), _) => Box::new(
                endpoint
                    .handshake(connector, tcp)
                    .await
                    .map_err(|e| connect_failure(Stage::Tls, e))?,
            ),
            (None, _) => Box::new(tcp),
        };
        let mut conn = Client::new(stream, endpoint);
        expect(Stage::Greeting, conn.read_reply().await, 220)?;
        let capabilities = conn.ehlo(&self.config.ehlo_name).await?;
        Ok((conn, capabilities))
    }

    async fn transaction(
        &self,
        envelope: &Envelope,
        message: &[u8],
        recipients: &mut Vec<RecipientResult>,
    ) -> Result<Reply, Failure> {
        let (mut conn, capabilities) = self.open().await?;
        conn.authenticate(&capabilities, &self.config.username, &self.config.password)
            .await?;

        let mut mail_from = format!("MAIL FROM:<{}>", envelope.from);
        if capabilities.contains("SIZE") {
            mail_from.push_str(&format!(" SIZE={}", message.len()));
        }
        if capabilities.contains("8BITMIME") && !message.is_ascii() {
            mail_from.push_str(" BODY=8BITMIME");
        }
        mail_from.push_str("\r\n");
        expect(
            Stage::MailFrom,
            conn.command(mail_from.as_bytes()).await,
            250,
        )?;

        let dsn = capabilities.contains("DSN");
        for to in &envelope.to {
            let notify = if dsn { " NOTIFY=SUCCESS,FAILURE" } else { "" };
            let command = format!("RCPT TO:<{to}>{notify}\r\n");
            let reply = conn
                .command(command.as_bytes())
                .await
                .map_err(|e| io_failure(Stage::RcptTo, e))?;
            recipients.push(RecipientResult {
                address: to.clone(),
                reply,
            });
        }
        if !recipients.iter().any(RecipientResult::accepted) {
            // Permanent only when every refusal was permanent.
            let worst = recipients
                .iter()
                .find(|r| !r.reply.is_permanent_failure())
                .or(recipients.first())
                .map(|r| r.reply.clone());
            conn.quit().await;
            return Err(Failure {
                stage: Stage::RcptTo,
                detail: format!(
                    "no recipient accepted: {}",
                    worst.as_ref().map(Reply::to_string).unwrap_or_default()
                ),
                reply: worst,
            });
        }

        expect(Stage::Data, conn.command(b"DATA\r\n").await, 354)?;
        conn.line
            .write_all(&dot_stuff(message))
            .await
            .map_err(|e| io_failure(Stage::Data, e))?;
        let accepted = expect(Stage::Data, conn.read_reply().await, 250)?;
        conn.quit().await;
        Ok(accepted)
    }
}

/// The SMTP dialogue on one connection.
struct Client<S> {
    line: LineConnection<S>,
}

impl<S: IoStream> Client<S> {
    fn new(stream: S, endpoint: &Endpoint) -> Self {
        Self {
            line: LineConnection::new(stream, endpoint.io_timeout()),
        }
    }

    async fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut code = None;
        let mut texts = Vec::new();
        loop {
            let line = self.line.read_line(MAX_REPLY_LINE).await?;
            let line = String::from_utf8_lossy(&line);
            let malformed = || {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("malformed SMTP reply line: {:.80}", line),
                )
            };
            let this_code: u16 = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(malformed)?;
            if *code.get_or_insert(this_code) != this_code {
                return Err(malformed());
            }
            let (last, text) = match line.as_bytes().get(3) {
                None => (true, ""),
                Some(b' ') => (true, &line[4..]),
                Some(b'-') => (false, &line[4..]),
                Some(_) => return Err(malformed()),
            };
            texts.push(text.to_owned());
            if last {
                break;
            }
            if texts.len() >= MAX_REPLY_LINES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "SMTP reply has too many lines",
                ));
            }
        }
        let code = code.unwrap_or(0);
        let enhanced = texts.first().and_then(|first| enhanced_status(code, first));
        let texts: Vec<&str> = texts
            .iter()
            .map(|t| match &enhanced {
                Some(e) => t
                    .strip_prefix(e.as_str())
                    .map_or(t.as_str(), str::trim_start),
                None => t.as_str(),
            })
            .collect();
        Ok(Reply {
            code,
            enhanced,
            text: texts.join("\n"),
        })
    }

    async fn command(&mut self, command: &[u8]) -> std::io::Result<Reply> {
        if let Some(verb) = command.split(|&b| b == b' ').next() {
            debug!(command = %String::from_utf8_lossy(verb).trim_end(), "SMTP");
        }
        self.line.write_all(command).await?;
        self.read_reply().await
    }

    /// EHLO; returns the upper-cased first word of every capability line.
    async fn ehlo(&mut self, name: &str) -> Result<Capabilities, Failure> {
        let reply = expect(
            Stage::Ehlo,
            self.command(format!("EHLO {name}\r\n").as_bytes()).await,
            250,
        )?;
        Ok(Capabilities::parse(&reply.text))
    }

    async fn authenticate(
        &mut self,
        capabilities: &Capabilities,
        username: &str,
        password: &str,
    ) -> Result<(), Failure> {
        let reply = if capabilities.auth_mechanisms.contains("PLAIN") {
            let token = BASE64.encode(format!("\0{username}\0{password}"));
            self.command(format!("AUTH PLAIN {token}\r\n").as_bytes())
                .await
        } else if capabilities.auth_mechanisms.contains("LOGIN") {
            let first = expect(Stage::Auth, self.command(b"AUTH LOGIN\r\n").await, 334)?;
            debug!(prompt = %first.text, "AUTH LOGIN");
            expect(
                Stage::Auth,
                self.command(format!("{}\r\n", BASE64.encode(username)).as_bytes())
                    .await,
                334,
            )?;
            self.command(format!("{}\r\n", BASE64.encode(password)).as_bytes())
                .await
        } else {
            return Err(Failure {
                stage: Stage::Auth,
                reply: None,
                detail: "the server offers neither AUTH PLAIN nor AUTH LOGIN".into(),
            });
        };
        expect(Stage::Auth, reply, 235).map(drop)
    }

    /// Says goodbye; the mail is already accepted or refused, so errors do not matter.
    async fn quit(&mut self) {
        let _ = self.command(b"QUIT\r\n").await;
        self.line.shutdown().await;
    }
}

/// What EHLO advertised.
struct Capabilities {
    keywords: BTreeSet<String>,
    auth_mechanisms: BTreeSet<String>,
}

impl Capabilities {
    fn parse(ehlo_text: &str) -> Self {
        let mut keywords = BTreeSet::new();
        let mut auth_mechanisms = BTreeSet::new();
        // The first line is the greeting ("host Hello ..."), the rest are capabilities.
        for line in ehlo_text.lines().skip(1) {
            let mut words = line.split_whitespace().map(str::to_ascii_uppercase);
            let Some(keyword) = words.next() else {
                continue;
            };
            if keyword == "AUTH" {
                auth_mechanisms.extend(words);
            }
            keywords.insert(keyword);
        }
        Self {
            keywords,
            auth_mechanisms,
        }
    }

    fn contains(&self, keyword: &str) -> bool {
        self.keywords.contains(keyword)
    }
}

/// An RFC 3463 `class.subject.detail` code at the start of `text` whose class matches `code`.
fn enhanced_status(code: u16, text: &str) -> Option<String> {
    let candidate = text.split_whitespace().next()?;
    let mut parts = candidate.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let numeric = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let ok = parts.next().is_none()
        && numeric(class, 1)
        && numeric(subject, 3)
        && numeric(detail, 3)
        && class == (code / 100).to_string();
    ok.then(|| candidate.to_owned())
}

/// CRLF line ends, leading dots doubled, and the terminating `.` line (RFC 5321 4.5.2).
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 5);
    let mut at_line_start = true;
    let mut previous = 0u8;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        previous = b;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn expect(stage: Stage, reply: std::io::Result<Reply>, code: u16) -> Result<Reply, Failure> {
    let reply = reply.map_err(|e| io_failure(stage, e))?;
    if reply.code == code {
        Ok(reply)
    } else {
        Err(Failure {
            stage,
            detail: format!("server replied {reply}"),
            reply: Some(reply),
        })
    }
}

fn io_failure(stage: Stage, error: std::io::Error) -> Failure {
    Failure {
        stage,
        reply: None,
        detail: format!("connection error: {error}"),
    }
}

fn connect_failure(stage: Stage, error: ConnectError) -> Failure {
    Failure {
        stage,
        reply: None,
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_codes_must_match_the_class() {
        assert_eq!(
            enhanced_status(535, "5.7.8 Error: authentication failed"),
            Some("5.7.8".into())
        );
        assert_eq!(enhanced_status(250, "2.0.0 Ok"), Some("2.0.0".into()));
        assert_eq!(enhanced_status(451, "5.7.8 nope"), None);
        assert_eq!(enhanced_status(250, "mail.example Hello"), None);
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_fixes_line_ends() {
        assert_eq!(
            dot_stuff(b".a\r\nb\n.\r\nc"),
            b"..a\r\nb\r\n..\r\nc\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n.\r\n");
    }

    async fn reply_to(server_says: &[u8]) -> std::io::Result<Reply> {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(64 * 1024);
        server.write_all(server_says).await.unwrap();
        drop(server);
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: 25,
            security: Security::PlainLoopbackOnly,
            trust: None,
            tls_server_name: None,
            connect_timeout_secs: 1,
            io_timeout_secs: 1,
        };
        Client::new(client, &endpoint).read_reply().await
    }

    #[tokio::test]
    async fn replies_are_parsed_and_hostile_ones_refused() {
        let reply = reply_to(b"553-5.7.1 no encryption\r\n553 5.7.1 certificate\r\n")
            .await
            .unwrap();
        assert_eq!(reply.code, 553);
        assert_eq!(reply.enhanced.as_deref(), Some("5.7.1"));
        assert_eq!(reply.text, "no encryption\ncertificate");
        assert!(reply.is_permanent_failure());
        for hostile in [
            &b"250-a\r\n550 b\r\n"[..],
            b"2x0 what\r\n",
            b"999 out of range\r\n",
            b"250_bad separator\r\n",
            b"250-never ends\r\n",
            b"",
        ] {
            assert!(reply_to(hostile).await.is_err(), "{hostile:?}");
        }
        let endless = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(reply_to(&endless).await.is_err());
        let long = [b"250 ".as_slice(), &[b'x'; MAX_REPLY_LINE + 1], b"\r\n"].concat();
        assert!(reply_to(&long).await.is_err());
    }

    #[test]
    fn capabilities_from_ehlo() {
        let c = Capabilities::parse("mx Hello\nPIPELINING\nSIZE 10240000\nAUTH PLAIN LOGIN\nDSN");
        assert!(c.contains("SIZE") && c.contains("DSN") && !c.contains("STARTTLS"));
        assert!(c.auth_mechanisms.contains("LOGIN"));
    }
}
