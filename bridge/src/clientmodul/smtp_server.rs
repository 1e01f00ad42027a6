//! The Clientmodul's SMTP side towards the client system: EHLO with KIM's
//! extensions, AUTH PLAIN/LOGIN with the `#` username (checked by logging in
//! at the MTA it names), `MAIL FROM` = the authenticated mailbox, every
//! well-formed `RCPT TO` accepted (KIM 1.5), and DATA handed to [`super::send`].
//!
//! Replies from KIM.md: `501 5.5.4` malformed username, `454 4.7.0` MTA
//! unreachable, `535 5.7.8` bad credentials, `553` sender without an
//! encryption certificate, `451` nothing encryptable or signing impossible,
//! `552 5.3.4` too large.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{CLIENT_TIMEOUT, Shared, sasl_plain, send};
use crate::kim::address::KimAddress;
use crate::kim::line::{IoStream, LineConnection};
use crate::kim::smtp::{SmtpConfig, SmtpSender, Stage};
use crate::kim::username::ClientmodulLogin;

/// Longest command line (an AUTH PLAIN token carries the long `#` username).
const MAX_COMMAND_LINE: usize = 4096;
/// Longest line inside a mail.
const MAX_DATA_LINE: usize = 64 * 1024;
/// Most recipients of one mail.
const MAX_RECIPIENTS: usize = 100;
/// What the Clientmodul calls itself in EHLO and as the name it greets the MTA with.
const NAME: &str = "test-clientmodul.invalid";

/// One SMTP reply to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }

    fn render(&self) -> String {
        format!("{} {} {}\r\n", self.code, self.enhanced, self.text)
    }
}

/// A client that logged in: its mailbox, MTA and password (reused to relay).
pub(super) struct Authenticated {
    pub login: ClientmodulLogin,
    pub password: String,
}

impl Authenticated {
    /// The bridge's SMTP client, logged in at the MTA as this mailbox.
    pub fn mta_sender(&self, shared: &Shared) -> Result<SmtpSender, String> {
        SmtpSender::new(SmtpConfig {
            endpoint: shared.mta(&self.login),
            username: self.login.address.as_str().to_owned(),
            password: self.password.clone(),
            ehlo_name: NAME.to_owned(),
        })
        .map_err(|e| e.to_string())
    }
}

#[derive(Default)]
struct Session {
    auth: Option<Authenticated>,
    mail_from: Option<KimAddress>,
    recipients: Vec<KimAddress>,
}

/// Serves one client connection until QUIT or an error.
pub(super) async fn serve<S: IoStream>(shared: &Shared, stream: S) {
    let mut conn = LineConnection::new(stream, CLIENT_TIMEOUT);
    let greeting = format!("220 {NAME} ESMTP test KIM Clientmodul (not for real mail)\r\n");
    if conn.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut session = Session::default();
    loop {
        let Ok(line) = conn.read_line(MAX_COMMAND_LINE).await else {
            return;
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        let (verb, argument) = line.split_once(' ').unwrap_or((&line, ""));
        let verb = verb.to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => {
                session.reset();
                let ehlo = format!(
                    "250-{NAME} test KIM Clientmodul\r\n250-SIZE {}\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n",
                    shared.config.max_mail_size
                );
                if conn.write_all(ehlo.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            "HELO" => {
                session.reset();
                Reply::new(250, "2.0.0", NAME)
            }
            "AUTH" => session.authenticate(shared, &mut conn, argument).await,
            "MAIL" => session.mail_from(shared, argument),
            "RCPT" => session.rcpt_to(argument),
            "DATA" => session.data(shared, &mut conn).await,
            "RSET" => {
                session.reset();
                Reply::new(250, "2.0.0", "OK")
            }
            "NOOP" => Reply::new(250, "2.0.0", "OK"),
            "QUIT" => {
                let _ = conn.write_all(b"221 2.0.0 Bye\r\n").await;
                conn.shutdown().await;
                return;
            }
            _ => Reply::new(502, "5.5.2", "command not recognized"),
        };
        if conn.write_all(reply.render().as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Session {
    fn reset(&mut self) {
        self.mail_from = None;
        self.recipients.clear();
    }

    /// AUTH PLAIN or LOGIN; the credentials are the MTA's, so they are
    /// checked by logging in there.
    async fn authenticate<S: IoStream>(
        &mut self,
        shared: &Shared,
        conn: &mut LineConnection<S>,
        argument: &str,
    ) -> Reply {
        if self.auth.is_some() {
            return Reply::new(503, "5.5.1", "already authenticated");
        }
        let (mechanism, initial) = argument.split_once(' ').unwrap_or((argument, ""));
        let credentials = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let token = match initial {
                    "" => challenge(conn, "").await,
                    token => Some(token.to_owned()),
                };
                token.as_deref().and_then(sasl_plain)
            }
            "LOGIN" => {
                let user = match initial {
                    "" => challenge(conn, "VXNlcm5hbWU6").await,
                    user => Some(user.to_owned()),
                };
                let password = match user {
                    Some(_) => challenge(conn, "UGFzc3dvcmQ6").await,
                    None => None,
                };
                user.zip(password).and_then(|(user, password)| {
                    let decode =
                        |b64: &str| String::from_utf8(BASE64.decode(b64.trim()).ok()?).ok();
                    Some((decode(&user)?, decode(&password)?))
                })
            }
            _ => return Reply::new(504, "5.5.4", "only AUTH PLAIN and LOGIN"),
        };
        let Some((username, password)) = credentials else {
            return Reply::new(501, "5.5.2", "malformed or cancelled AUTH exchange");
        };
        let login = match ClientmodulLogin::parse_smtp(&username) {
            Ok(login) => login,
            Err(error) => return Reply::new(501, "5.5.4", error.to_string()),
        };
        let auth = Authenticated { login, password };
        let sender = match auth.mta_sender(shared) {
            Ok(sender) => sender,
            Err(error) => return Reply::new(454, "4.7.0", format!("MTA not usable: {error}")),
        };
        match sender.check_login().await {
            Ok(()) => {
                self.auth = Some(auth);
                Reply::new(235, "2.7.0", "authentication successful")
            }
            Err(failure)
                if failure.stage == Stage::Auth
                    && failure.reply.as_ref().is_some_and(|r| r.code >= 500) =>
            {
                Reply::new(535, "5.7.8", "authentication credentials invalid")
            }
            Err(failure) => {
                Reply::new(454, "4.7.0", format!("MTA unreachable: {}", failure.detail))
            }
        }
    }

    fn mail_from(&mut self, shared: &Shared, argument: &str) -> Reply {
        let Some(auth) = &self.auth else {
            return Reply::new(530, "5.7.0", "authentication required");
        };
        if self.mail_from.is_some() {
            return Reply::new(503, "5.5.1", "nested MAIL command");
        }
        let Some((address, parameters)) = path_argument(argument, "FROM:") else {
            return Reply::new(501, "5.5.4", "syntax: MAIL FROM:<address>");
        };
        if KimAddress::parse(address).ok().as_ref() != Some(&auth.login.address) {
            return Reply::new(550, "5.7.1", "MAIL FROM must be the authenticated mailbox");
        }
        let size = parameters.split_whitespace().find_map(|p| {
            p.to_ascii_uppercase()
                .strip_prefix("SIZE=")?
                .parse::<usize>()
                .ok()
        });
        if size.is_some_and(|size| size > shared.config.max_mail_size) {
            return Reply::new(552, "5.3.4", "message size exceeds the limit");
        }
        if shared
            .keystore
            .encryption_certificate(&auth.login.address)
            .is_none()
        {
            return Reply::new(
                553,
                "5.1.8",
                "the sender has no encryption certificate in the directory",
            );
        }
        if shared.keystore.mailbox(&auth.login.address).is_none() {
            return Reply::new(451, "4.7.5", "signing impossible: no key for this mailbox");
        }
        self.mail_from = Some(auth.login.address.clone());
        Reply::new(250, "2.1.0", "OK")
    }

    /// Every well-formed KIM address is accepted; what cannot be encrypted
    /// for is decided after DATA.
    fn rcpt_to(&mut self, argument: &str) -> Reply {
        if self.mail_from.is_none() {
            return Reply::new(503, "5.5.1", "MAIL FROM first");
        }
        let Some((address, _notify)) = path_argument(argument, "TO:") else {
            return Reply::new(501, "5.5.4", "syntax: RCPT TO:<address>");
        };
        let Ok(address) = KimAddress::parse(address) else {
            return Reply::new(501, "5.1.3", "not a KIM address");
        };
        if self.recipients.len() >= MAX_RECIPIENTS {
            return Reply::new(452, "4.5.3", "too many recipients");
        }
        if !self.recipients.contains(&address) {
            self.recipients.push(address);
        }
        Reply::new(250, "2.1.5", "OK")
    }

    async fn data<S: IoStream>(&mut self, shared: &Shared, conn: &mut LineConnection<S>) -> Reply {
        let (Some(auth), Some(_), false) =
            (&self.auth, &self.mail_from, self.recipients.is_empty())
        else {
            return Reply::new(503, "5.5.1", "MAIL FROM and RCPT TO first");
        };
        if conn
            .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            .await
            .is_err()
        {
            return Reply::new(451, "4.3.0", "connection error");
        }
        let limit = shared.config.max_mail_size;
        let mut mail = Vec::new();
        let mut too_large = false;
        loop {
            let Ok(line) = conn.read_line(MAX_DATA_LINE).await else {
                return Reply::new(451, "4.3.0", "connection error while reading the mail");
            };
            if line == b"." {
                break;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            too_large |= mail.len() + line.len() + 2 > limit;
            if !too_large {
                mail.extend_from_slice(line);
                mail.extend_from_slice(b"\r\n");
            }
        }
        let recipients = std::mem::take(&mut self.recipients);
        self.mail_from = None;
        if too_large {
            return Reply::new(552, "5.3.4", "message size exceeds the limit");
        }
        send::send(shared, auth, &recipients, mail).await
    }
}

/// Sends a `334` challenge and reads the answer; `None` when the client cancels.
async fn challenge<S: IoStream>(conn: &mut LineConnection<S>, prompt: &str) -> Option<String> {
    conn.write_all(format!("334 {prompt}\r\n").as_bytes())
        .await
        .ok()?;
    let line = conn.read_line(MAX_COMMAND_LINE).await.ok()?;
    let line = String::from_utf8(line).ok()?;
    (line != "*").then_some(line)
}

/// `FROM:<address> params` → (`address`, `params`).
fn path_argument<'a>(argument: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let argument = argument.trim_start();
    let rest = argument
        .get(..keyword.len())
        .filter(|k| k.eq_ignore_ascii_case(keyword))
        .map(|_| argument[keyword.len()..].trim_start())?;
    let rest = rest.strip_prefix('<')?;
    let (address, parameters) = rest.split_once('>')?;
    Some((address, parameters))
}
