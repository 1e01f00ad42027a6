//! Fetching mail from the Clientmodul over POP3 (RFC 1939, STLS from RFC 2595, SASL PLAIN
//! from RFC 5034). The bridge keys what it fetched by UIDL, reads headers with `TOP n 0`,
//! the whole mail with `RETR`, and deletes with `DELE` only after the mail is safely in the
//! room: deletions take effect at `QUIT`, so a session that ends any other way keeps them.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::line::{IoStream, LineConnection};
use super::tls::{ConnectError, Endpoint, Security};

/// Longest status line accepted (RFC 1939: 512 bytes).
const MAX_STATUS_LINE: usize = 1024;
/// Longest line inside a mail (RFC 5322 says 998; be lenient with real-world mail).
const MAX_DATA_LINE: usize = 64 * 1024;
/// Most entries in a UIDL or LIST listing.
const MAX_LISTING_ENTRIES: usize = 1_000_000;
/// Longest unique-id (RFC 1939: 1 to 70 characters 0x21..0x7E).
const MAX_UID_LEN: usize = 70;

/// How the bridge logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pop3Auth {
    /// `USER` / `PASS`.
    #[default]
    UserPass,
    /// `AUTH PLAIN` with an initial response.
    SaslPlain,
}

/// How to reach and log in to the Clientmodul's POP3 side.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pop3Config {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// The POP3 username, see [`super::username::MailboxContext::pop3_username`].
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub auth: Pop3Auth,
    /// Largest mail `RETR` or `TOP` reads; a larger one fails with [`Pop3Error::TooLarge`].
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
}

fn default_max_message_size() -> usize {
    // KIM 1.5 allows 700 MiB through the attachment service, which the Clientmodul
    // resolves; 64 MiB keeps the bridge's memory bounded and can be raised.
    64 * 1024 * 1024
}

impl fmt::Debug for Pop3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Config")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("auth", &self.auth)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

/// What went wrong in a POP3 session.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("POP3 connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("login refused: {0}")]
    Auth(String),
    #[error("server answered -ERR: {0}")]
    Server(String),
    #[error("unexpected server response: {0}")]
    Protocol(String),
    #[error("the mail is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// A logged-in POP3 session (the TRANSACTION state of RFC 1939).
pub struct Pop3Session {
    line: LineConnection<Box<dyn IoStream>>,
    max_message_size: usize,
}

impl Pop3Session {
    /// Connects, protects the connection as configured and logs in.
    pub async fn connect(config: &Pop3Config) -> Result<Self, Pop3Error> {
        let endpoint = &config.endpoint;
        let connector = endpoint.tls_connector()?;
        let tcp = endpoint.connect_tcp().await?;
        let stream: Box<dyn IoStream> = match (&connector, endpoint.security) {
            (Some(connector), Security::StartTls) => {
                let mut plain = LineConnection::new(tcp, endpoint.io_timeout());
                ok_line(&mut plain).await?;
                plain.write_all(b"STLS\r\n").await?;
                ok_line(&mut plain).await?;
                Box::new(endpoint.handshake(connector, plain.into_stream()?).await?)
            }
            (Some(connector), _) => Box::new(endpoint.handshake(connector, tcp).await?),
            (None, _) => Box::new(tcp),
        };
        let mut session = Self {
            line: LineConnection::new(stream, endpoint.io_timeout()),
            max_message_size: config.max_message_size,
        };
        if endpoint.security != Security::StartTls {
            ok_line(&mut session.line).await?;
        }
        session.login(config).await?;
        Ok(session)
    }

    async fn login(&mut self, config: &Pop3Config) -> Result<(), Pop3Error> {
        let auth_error = |e| match e {
            Pop3Error::Server(text) => Pop3Error::Auth(text),
            other => other,
        };
        match config.auth {
            Pop3Auth::UserPass => {
                self.command(&format!("USER {}", config.username))
                    .await
                    .map_err(auth_error)?;
                self.command(&format!("PASS {}", config.password))
                    .await
                    .map_err(auth_error)?;
            }
            Pop3Auth::SaslPlain => {
                let token = BASE64.encode(format!("\0{}\0{}", config.username, config.password));
                self.command(&format!("AUTH PLAIN {token}"))
                    .await
                    .map_err(auth_error)?;
            }
        }
        Ok(())
    }

    /// Sends one command line (the argument must not hold line breaks) and returns the text
    /// after `+OK`.
    async fn command(&mut self, command: &str) -> Result<String, Pop3Error> {
        if command.contains(['\r', '\n']) {
            return Err(Pop3Error::Protocol(
                "command with a line break refused".into(),
            ));
        }
        debug!(command = %command.split(' ').next().unwrap_or_default(), "POP3");
        self.line
            .write_all(format!("{command}\r\n").as_bytes())
            .await?;
        ok_line(&mut self.line).await
    }

    /// Reads a multi-line response body up to the `.` line, undoing dot-stuffing, with CRLF
    /// line ends; fails once it grows beyond `limit` bytes.
    async fn read_multiline(&mut self, limit: usize) -> Result<Vec<u8>, Pop3Error> {
        let mut data = Vec::new();
        loop {
            let line = self.line.read_line(MAX_DATA_LINE).await?;
            if line == b"." {
                return Ok(data);
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + line.len() + 2 > limit {
                return Err(Pop3Error::TooLarge { limit });
            }
            data.extend_from_slice(line);
            data.extend_from_slice(b"\r\n");
        }
    }

    /// Reads a listing of `number value` lines (UIDL, LIST).
    async fn listing(&mut self, command: &str) -> Result<Vec<(u32, String)>, Pop3Error> {
        self.command(command).await?;
        let mut entries = Vec::new();
        loop {
            let line = self.line.read_line(MAX_STATUS_LINE).await?;
            if line == b"." {
                return Ok(entries);
            }
            if entries.len() >= MAX_LISTING_ENTRIES {
                return Err(Pop3Error::Protocol(format!("{command} listing too long")));
            }
            let line = String::from_utf8(line)
                .map_err(|_| Pop3Error::Protocol(format!("{command} line is not UTF-8")))?;
            let mut fields = line.split_ascii_whitespace();
            let number = fields.next().and_then(|n| n.parse::<u32>().ok());
            match (number, fields.next(), fields.next()) {
                (Some(number), Some(value), None) if number > 0 => {
                    entries.push((number, value.to_owned()))
                }
                _ => {
                    return Err(Pop3Error::Protocol(format!(
                        "malformed {command} line: {:.80}",
                        line
                    )));
                }
            }
        }
    }

    /// Message numbers and their unique ids (`UIDL`), the key of what was fetched.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        let entries = self.listing("UIDL").await?;
        for (_, uid) in &entries {
            let valid = uid.len() <= MAX_UID_LEN && uid.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if !valid {
                return Err(Pop3Error::Protocol(format!(
                    "invalid unique-id {:.80}",
                    uid
                )));
            }
        }
        Ok(entries)
    }

    /// Message numbers and sizes in bytes (`LIST`), to skip over-large mail before `RETR`.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        self.listing("LIST")
            .await?
            .into_iter()
            .map(|(number, size)| {
                size.parse()
                    .map(|size| (number, size))
                    .map_err(|_| Pop3Error::Protocol(format!("malformed LIST size {size:.40}")))
            })
            .collect()
    }

    /// The headers and the first `lines` body lines of message `number` (`TOP n lines`).
    pub async fn top(&mut self, number: u32, lines: u32) -> Result<Vec<u8>, Pop3Error> {
        self.command(&format!("TOP {number} {lines}")).await?;
        self.read_multiline(self.max_message_size).await
    }

    /// The whole message `number` (`RETR`), dot-unstuffed, CRLF line ends.
    pub async fn retr(&mut self, number: u32) -> Result<Vec<u8>, Pop3Error> {
        self.command(&format!("RETR {number}")).await?;
        self.read_multiline(self.max_message_size).await
    }

    /// Marks message `number` deleted; it is removed only by a successful [`Self::quit`].
    pub async fn dele(&mut self, number: u32) -> Result<(), Pop3Error> {
        self.command(&format!("DELE {number}")).await.map(drop)
    }

    /// Ends the session and commits the deletions (the UPDATE state of RFC 1939). Dropping
    /// the session instead keeps every mail on the server.
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        self.command("QUIT").await?;
        self.line.shutdown().await;
        Ok(())
    }
}

/// Reads a status line: the text after `+OK`, or [`Pop3Error::Server`] with the text after `-ERR`.
async fn ok_line<S: IoStream>(line: &mut LineConnection<S>) -> Result<String, Pop3Error> {
    let status = line.read_line(MAX_STATUS_LINE).await?;
    let status = String::from_utf8_lossy(&status);
    if let Some(text) = status.strip_prefix("+OK") {
        Ok(text.trim_start().to_owned())
    } else if let Some(text) = status.strip_prefix("-ERR") {
        Err(Pop3Error::Server(text.trim_start().to_owned()))
    } else {
        Err(Pop3Error::Protocol(format!("{:.80}", status)))
    }
}
