//! The KIM mail side of the bridge: what a KIM *client system* speaks to the
//! Clientmodul (see `shared/KIM.md`).
//!
//! - [`address`]: validated KIM addresses.
//! - [`username`]: the Clientmodul's `#`-encoded SMTP and POP3 usernames.
//! - [`outgoing`]: a chat message as a KIM client mail (RFC 5322 bytes with the KIM headers).
//! - [`smtp`]: sending client mails to the Clientmodul (STARTTLS or implicit TLS, AUTH, DSN).
//! - [`pop3`]: fetching mail from the Clientmodul, keyed by UIDL.
//! - [`incoming`]: parsing what the Clientmodul delivers: chat mail, out-of-office, other
//!   KIM services, delivery status notifications and Clientmodul error mails.
//! - [`verification`]: the Clientmodul's `X-KIM-*` decryption/signature results as a status.
//! - [`tls`]: the TLS client configuration both protocols share (pinned certificate or CA file).
//!
//! SMTP and POP3 are small hand-written clients over tokio-rustls (reasons in
//! ARCHITECTURE.md): lettre cannot pin a self-signed Clientmodul certificate through a
//! custom verifier nor report per-recipient `RCPT` results, and no maintained async POP3
//! crate exists. Both read the server line by line with hard limits, so a hostile server
//! can make a call fail but never panic or exhaust memory.

//! Where the API differs from the first sketch, and why:
//! - `IncomingMail::from`/`to`/`cc` are [`incoming::Mailbox`]es (name + address as written),
//!   not `KimAddress`es: DSNs come from `MAILER-DAEMON@…`, and a malformed sender must still
//!   be shown; [`incoming::Mailbox::kim_address`] validates when the bridge needs a ghost.
//! - Message-IDs are stored without angle brackets everywhere (`ClientMail::message_id`,
//!   `IncomingMail::message_id`, `in_reply_to`, `references`, report `original_message_id`),
//!   so the bridge can compare them directly.
//! - [`smtp::SmtpSender::send`] returns `Err` only for local problems (the mail cannot be
//!   rendered, bad configuration); everything the network or the server says is a
//!   [`smtp::SendOutcome`], including TLS failures (temporary, stage `Tls`).
//! - The verdict texts live in [`verification`] (own module: they are a table of the spec).
//! - The Konnektor context for the usernames is [`username::MailboxContext`]; the SMTP and
//!   POP3 endpoints share [`tls::Endpoint`] (flattened into [`smtp::SmtpConfig`] and
//!   [`pop3::Pop3Config`]).

pub mod address;
pub mod incoming;
pub mod outgoing;
pub mod pop3;
pub mod smtp;
pub mod tls;
pub mod username;
pub mod verification;

pub(crate) mod line;
