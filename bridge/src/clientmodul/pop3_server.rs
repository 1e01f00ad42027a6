//! The Clientmodul's POP3 side towards the client system (RFC 1939, CAPA
//! from RFC 2449, SASL PLAIN from RFC 5034). A login with the `#` username
//! opens a session at the MTA it names (the bridge's POP3 client); the
//! listing, numbers and UIDLs are the MTA's (so they stay stable across
//! restarts), `RETR`/`TOP` run [`super::receive`] on the MTA's mail, and
//! deletions reach the MTA only at `QUIT`.

use std::collections::{BTreeSet, HashMap};

use super::receive::{self, Policy};
use super::{CLIENT_TIMEOUT, Shared, sasl_plain};
use crate::kim::line::{IoStream, LineConnection};
use crate::kim::pop3::{Pop3Auth, Pop3Config, Pop3Error, Pop3Session};
use crate::kim::username::ClientmodulLogin;

const MAX_COMMAND_LINE: usize = 4096;
const CAPABILITIES: &str = "+OK capabilities\r\nTOP\r\nUSER\r\nSASL PLAIN\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n";

/// A logged-in client: its session at the MTA and that session's listing.
struct Mailbox {
    upstream: Pop3Session,
    keys: std::sync::Arc<super::keystore::Mailbox>,
    /// (number, UIDL, size at the MTA), in the MTA's order.
    listing: Vec<(u32, String, u64)>,
    deleted: BTreeSet<u32>,
    /// What the client got for a number, so TOP and RETR agree.
    delivered: HashMap<u32, Vec<u8>>,
}

/// Serves one client connection until QUIT or an error.
pub(super) async fn serve<S: IoStream>(shared: &Shared, stream: S) {
    let mut conn = LineConnection::new(stream, CLIENT_TIMEOUT);
    if conn
        .write_all(b"+OK test KIM Clientmodul (not for real mail)\r\n")
        .await
        .is_err()
    {
        return;
    }
    let Some(mut mailbox) = authorize(shared, &mut conn).await else {
        return;
    };
    loop {
        let Ok(line) = conn.read_line(MAX_COMMAND_LINE).await else {
            return;
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let numbers: Vec<Option<u32>> = words.map(|w| w.parse().ok()).collect();
        let reply: Vec<u8> = match (verb.as_str(), numbers.as_slice()) {
            ("CAPA", []) => CAPABILITIES.into(),
            ("NOOP", []) => b"+OK\r\n".to_vec(),
            ("STAT", []) => {
                let live = mailbox.live().collect::<Vec<_>>();
                let size: u64 = live.iter().map(|(_, _, size)| size).sum();
                format!("+OK {} {size}\r\n", live.len()).into()
            }
            ("LIST", []) => listing(mailbox.live().map(|(n, _, size)| format!("{n} {size}"))),
            ("UIDL", []) => listing(mailbox.live().map(|(n, uidl, _)| format!("{n} {uidl}"))),
            ("LIST" | "UIDL" | "DELE", [Some(n)]) => match mailbox.entry(*n) {
                None => b"-ERR no such message\r\n".to_vec(),
                Some((n, uidl, size)) => {
                    let reply = match verb.as_str() {
                        "LIST" => format!("+OK {n} {size}\r\n"),
                        "UIDL" => format!("+OK {n} {uidl}\r\n"),
                        _ => format!("+OK message {n} deleted\r\n"),
                    };
                    if verb == "DELE" {
                        mailbox.deleted.insert(n);
                    }
                    reply.into()
                }
            },
            ("RETR", [Some(n)]) => match mailbox.fetch(shared, *n).await {
                Ok(Some(mail)) => multiline(&format!("+OK {} octets", mail.len()), mail),
                Ok(None) => b"-ERR no such message\r\n".to_vec(),
                Err(error) => return fail(&mut conn, error).await,
            },
            ("TOP", [Some(n), Some(lines)]) => match mailbox.fetch(shared, *n).await {
                Ok(Some(mail)) => multiline("+OK", &top(mail, *lines)),
                Ok(None) => b"-ERR no such message\r\n".to_vec(),
                Err(error) => return fail(&mut conn, error).await,
            },
            ("RSET", []) => {
                mailbox.deleted.clear();
                b"+OK\r\n".to_vec()
            }
            ("QUIT", []) => {
                let reply = match mailbox.commit().await {
                    Ok(()) => "+OK bye\r\n".to_owned(),
                    Err(error) => {
                        format!("-ERR [SYS/TEMP] deleting at the MTA failed: {error}\r\n")
                    }
                };
                let _ = conn.write_all(reply.as_bytes()).await;
                conn.shutdown().await;
                return;
            }
            _ => b"-ERR unknown command or bad arguments\r\n".to_vec(),
        };
        if conn.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The AUTHORIZATION state: USER/PASS or AUTH PLAIN, checked by logging in
/// at the MTA the username names.
async fn authorize<S: IoStream>(shared: &Shared, conn: &mut LineConnection<S>) -> Option<Mailbox> {
    let mut user = None;
    loop {
        let line = conn.read_line(MAX_COMMAND_LINE).await.ok()?;
        let line = String::from_utf8_lossy(&line).into_owned();
        let (verb, argument) = line.split_once(' ').unwrap_or((&line, ""));
        let credentials = match verb.to_ascii_uppercase().as_str() {
            "CAPA" => {
                conn.write_all(CAPABILITIES.as_bytes()).await.ok()?;
                continue;
            }
            "USER" => {
                user = Some(argument.to_owned());
                conn.write_all(b"+OK\r\n").await.ok()?;
                continue;
            }
            "PASS" => user.take().map(|user| (user, argument.to_owned())),
            "AUTH" if argument.is_empty() => {
                conn.write_all(b"+OK\r\nPLAIN\r\n.\r\n").await.ok()?;
                continue;
            }
            "AUTH" => {
                let (mechanism, initial) = argument.split_once(' ').unwrap_or((argument, ""));
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    conn.write_all(b"-ERR only SASL PLAIN\r\n").await.ok()?;
                    continue;
                }
                let token = match initial {
                    "" => {
                        conn.write_all(b"+ \r\n").await.ok()?;
                        String::from_utf8(conn.read_line(MAX_COMMAND_LINE).await.ok()?).ok()?
                    }
                    token => token.to_owned(),
                };
                sasl_plain(&token)
            }
            "QUIT" => {
                let _ = conn.write_all(b"+OK bye\r\n").await;
                return None;
            }
            _ => {
                conn.write_all(b"-ERR authenticate first\r\n").await.ok()?;
                continue;
            }
        };
        let reply = match credentials {
            None => "-ERR [AUTH] malformed credentials\r\n".to_owned(),
            Some((username, password)) => match login(shared, &username, password).await {
                Ok(mailbox) => {
                    conn.write_all(b"+OK logged in\r\n").await.ok()?;
                    return Some(mailbox);
                }
                Err(reply) => reply,
            },
        };
        conn.write_all(reply.as_bytes()).await.ok()?;
    }
}

/// Opens the MTA session for `username`; the `-ERR` line when that fails.
async fn login(shared: &Shared, username: &str, password: String) -> Result<Mailbox, String> {
    let login = ClientmodulLogin::parse_pop3(username)
        .map_err(|error| format!("-ERR [AUTH] {error}\r\n"))?;
    let keys = shared
        .keystore
        .mailbox(&login.address)
        .ok_or("-ERR [SYS/PERM] no decryption key for this mailbox\r\n")?;
    let config = Pop3Config {
        endpoint: shared.mta(&login),
        username: login.address.as_str().to_owned(),
        password,
        auth: Pop3Auth::UserPass,
        max_message_size: shared.config.max_mail_size * 2,
    };
    let mut upstream = Pop3Session::connect(&config)
        .await
        .map_err(|error| match error {
            Pop3Error::Auth(_) => "-ERR [AUTH] authentication failed\r\n".to_owned(),
            other => format!("-ERR [SYS/TEMP] MTA unreachable: {other}\r\n"),
        })?;
    let listing = async {
        let uids = upstream.uidl().await?;
        let sizes: HashMap<u32, u64> = upstream.list().await?.into_iter().collect();
        Ok::<_, Pop3Error>(
            uids.into_iter()
                .map(|(n, uidl)| (n, uidl, sizes.get(&n).copied().unwrap_or(0)))
                .collect(),
        )
    }
    .await
    .map_err(|error| format!("-ERR [SYS/TEMP] MTA listing failed: {error}\r\n"))?;
    Ok(Mailbox {
        upstream,
        keys,
        listing,
        deleted: BTreeSet::new(),
        delivered: HashMap::new(),
    })
}

impl Mailbox {
    fn live(&self) -> impl Iterator<Item = (u32, &str, u64)> {
        self.listing
            .iter()
            .filter(|(n, _, _)| !self.deleted.contains(n))
            .map(|(n, uidl, size)| (*n, uidl.as_str(), *size))
    }

    fn entry(&self, number: u32) -> Option<(u32, &str, u64)> {
        self.live().find(|(n, _, _)| *n == number)
    }

    /// The client's version of message `number` (fetched and decoded once).
    async fn fetch(&mut self, shared: &Shared, number: u32) -> Result<Option<&[u8]>, Pop3Error> {
        if self.entry(number).is_none() {
            return Ok(None);
        }
        if !self.delivered.contains_key(&number) {
            let raw = self.upstream.retr(number).await?;
            let keys = self.keys.clone();
            let trust = shared.keystore.trust_anchors();
            let policy = Policy {
                assume_not_revoked: shared.config.assume_not_revoked,
            };
            let mail = tokio::task::spawn_blocking(move || {
                receive::receive(&raw, &keys.decryption, &trust, policy)
            })
            .await
            .map_err(|e| Pop3Error::Protocol(format!("decoding failed: {e}")))?;
            self.delivered.insert(number, mail);
        }
        Ok(self.delivered.get(&number).map(Vec::as_slice))
    }

    /// QUIT: the deletions go to the MTA, which commits them at its QUIT.
    async fn commit(mut self) -> Result<(), Pop3Error> {
        for number in &self.deleted {
            self.upstream.dele(*number).await?;
        }
        self.upstream.quit().await
    }
}

/// A multi-line `+OK` reply: CRLF lines, dot-stuffed, `.` at the end.
fn multiline(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{status}\r\n").into_bytes();
    for line in body.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn listing(lines: impl Iterator<Item = String>) -> Vec<u8> {
    let mut out = "+OK\r\n".to_owned();
    for line in lines {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out.into_bytes()
}

/// The headers, the empty line and the first `lines` body lines.
fn top(mail: &[u8], lines: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_body = false;
    let mut body_lines = 0;
    for line in mail.split_inclusive(|&b| b == b'\n') {
        if in_body {
            if body_lines >= lines {
                break;
            }
            body_lines += 1;
        } else if line == b"\r\n" || line == b"\n" {
            in_body = true;
        }
        out.extend_from_slice(line);
    }
    out
}

/// An MTA failure in the middle of a session: tell the client and hang up.
async fn fail<S: IoStream>(conn: &mut LineConnection<S>, error: Pop3Error) {
    let reply = format!("-ERR [SYS/TEMP] the MTA failed: {error}\r\n");
    let _ = conn.write_all(reply.as_bytes()).await;
    conn.shutdown().await;
}
