//! Mail as the Clientmodul delivers it over POP3, already decrypted and verified: parsed
//! with mail-parser into what the bridge posts into a room, and classified by what it is
//! (chat, out-of-office, another KIM service, a delivery status notification, or a
//! Clientmodul error mail about one of the bridge's own mails).

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

use super::address::KimAddress;
use super::verification::Verification;

/// Lines after the Clientmodul's `-----` separator that are its status trailer.
const TRAILER_PREFIXES: &[&str] = &[
    "Die Nachricht",
    "Die KIM-Nachricht",
    "Die Signatur",
    "Die Prüfung",
    "Das Zertifikat",
    "The message",
    "The signature",
];

/// A name and address from a From/To/Cc header. The address is kept as written: DSNs
/// come from addresses outside KIM (`MAILER-DAEMON@…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl Mailbox {
    /// The address as a KIM address, if it is one.
    pub fn kim_address(&self) -> Option<KimAddress> {
        KimAddress::parse(&self.address).ok()
    }
}

/// `X-KIM-Dienstkennung: Anwendung;Typ;Version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dienstkennung {
    /// e.g. `KIM-Mail`, `Arztbrief`, `eAU`.
    pub anwendung: String,
    /// e.g. `Default`, `Abwesend`, `VHitG-Versand`, `Lieferung`.
    pub typ: String,
    /// e.g. `V1.0`.
    pub version: String,
}

impl Dienstkennung {
    /// Parses `Anwendung;Typ;Version`; missing parts are empty.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.trim().splitn(3, ';').map(|f| f.trim().to_owned());
        let anwendung = fields.next().filter(|a| !a.is_empty())?;
        Some(Self {
            anwendung,
            typ: fields.next().unwrap_or_default(),
            version: fields.next().unwrap_or_default(),
        })
    }
}

/// A file from a received mail (attachments and inline images).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingAttachment {
    /// Decoded file name (RFC 2231/2047), or a generated `attachment-N` when the mail has none.
    pub filename: String,
    /// `type/subtype`, lower-case.
    pub content_type: String,
    pub data: Vec<u8>,
    /// Shown inline (`Content-Disposition: inline`, e.g. an image in HTML).
    pub inline: bool,
}

/// What one recipient line of a delivery status notification (RFC 3464) says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientStatus {
    /// `Final-Recipient` (or `Original-Recipient`) without the `rfc822;` type.
    pub recipient: String,
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded`.
    pub action: String,
    /// RFC 3463 status, e.g. `5.1.2`.
    pub status: String,
    /// `Diagnostic-Code` without its type, e.g. `smtp; 550 5.1.1 ... User unknown`.
    pub diagnostic: Option<String>,
}

impl RecipientStatus {
    pub fn is_failure(&self) -> bool {
        self.action.eq_ignore_ascii_case("failed") || self.status.starts_with('5')
    }
}

/// A delivery status notification about a mail the bridge sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// Message-ID of the bridge's mail (from `In-Reply-To`, else the returned headers).
    pub original_message_id: Option<String>,
    pub recipients: Vec<RecipientStatus>,
}

impl DeliveryReport {
    /// True when delivery failed for at least one recipient.
    pub fn is_failure(&self) -> bool {
        self.recipients.iter().any(RecipientStatus::is_failure)
    }
}

/// An error mail of the Clientmodul: an unsigned notice with the original attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientmodulErrorReport {
    /// Message-ID of the original mail (from the attached `message/rfc822`, else `In-Reply-To`).
    pub original_message_id: Option<String>,
    /// The Clientmodul's explanation: subject and text part.
    pub text: String,
}

/// What a received mail is, which decides how the bridge shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailKind {
    /// Free-text KIM mail (`KIM-Mail;Default`, or no Dienstkennung at all).
    Chat,
    /// Out-of-office reply (`KIM-Mail;Abwesend`).
    OutOfOffice,
    /// Another KIM service, e.g. `eArztbrief` or `eAU`, shown with its kind.
    OtherService { kind: String },
    /// RFC 3464 delivery status notification.
    DeliveryStatus(DeliveryReport),
    /// Clientmodul error mail about a mail.
    ClientmodulError(ClientmodulErrorReport),
}

/// A received mail, ready for the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMail {
    /// Without angle brackets.
    pub message_id: Option<String>,
    pub from: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    /// Unix seconds.
    pub date: Option<i64>,
    pub subject: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub dienstkennung: Option<Dienstkennung>,
    /// Plain text without the Clientmodul's trailer.
    pub text: String,
    /// The Clientmodul's trailer that was cut from `text` ("Die Nachricht wurde
    /// entschlüsselt. …"), for the record; the status to show is `verification`.
    pub trailer: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<IncomingAttachment>,
    pub verification: Verification,
    pub kind: MailKind,
}

/// Why bytes are not a mail.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not an RFC 5322 message")]
    NotAMessage,
}

/// Parses and classifies a mail fetched from the Clientmodul.
pub fn parse(raw: &[u8]) -> Result<IncomingMail, ParseError> {
    let message = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
        .ok_or(ParseError::NotAMessage)?;

    let header = |name: &str| raw_header(&message, name).next();
    let dienstkennung = header("X-KIM-Dienstkennung").and_then(|v| Dienstkennung::parse(&v));
    let verification = Verification::from_headers(
        header("X-KIM-DecryptionResult").as_deref(),
        header("X-KIM-IntegrityCheckResult").as_deref(),
        raw_header(&message, "X-KIM-Fehlermeldung")
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    let in_reply_to = message
        .in_reply_to()
        .as_text_list()
        .and_then(|ids| ids.first().map(|id| id.to_string()))
        .or_else(|| message.in_reply_to().as_text().map(str::to_owned));
    let references = match message.references().as_text_list() {
        Some(ids) => ids.iter().map(|id| id.to_string()).collect(),
        None => message
            .references()
            .as_text()
            .map(|id| vec![id.to_owned()])
            .unwrap_or_default(),
    };
    let subject = message.subject().unwrap_or_default().to_owned();
    let body = message
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let (text, trailer) = strip_trailer(&body);

    let kind = if let Some(report) = delivery_report(&message, in_reply_to.as_deref()) {
        MailKind::DeliveryStatus(report)
    } else if let Some(report) = clientmodul_error(
        &message,
        dienstkennung.as_ref(),
        &verification,
        &subject,
        &text,
        in_reply_to.as_deref(),
    ) {
        MailKind::ClientmodulError(report)
    } else {
        service_kind(dienstkennung.as_ref())
    };
    let is_report = !matches!(
        kind,
        MailKind::Chat | MailKind::OutOfOffice | MailKind::OtherService { .. }
    );

    Ok(IncomingMail {
        message_id: message.message_id().map(str::to_owned),
        from: message
            .from()
            .and_then(|a| mailboxes(Some(a)).into_iter().next()),
        to: mailboxes(message.to()),
        cc: mailboxes(message.cc()),
        date: message.date().map(|d| d.to_timestamp()),
        subject,
        in_reply_to,
        references,
        dienstkennung,
        text,
        trailer,
        // mail-parser converts between text and HTML; only a real text/html part counts.
        html: message
            .html_bodies()
            .any(|part| part.is_text_html())
            .then(|| message.body_html(0).map(|h| h.into_owned()))
            .flatten(),
        attachments: attachments(&message, is_report, verification.failed_to_open()),
        verification,
        kind,
    })
}

/// Values of every header `name` (case-insensitive), unfolded and trimmed.
fn raw_header<'m>(message: &'m Message<'_>, name: &'m str) -> impl Iterator<Item = String> + 'm {
    message
        .headers_raw()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| unfold(v))
}

fn unfold(value: &str) -> String {
    value
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn mailboxes(address: Option<&mail_parser::Address<'_>>) -> Vec<Mailbox> {
    address
        .into_iter()
        .flat_map(|a| a.iter())
        .filter_map(|addr| {
            Some(Mailbox {
                name: addr.name().map(str::to_owned),
                address: addr.address()?.to_owned(),
            })
        })
        .collect()
}

/// Line ends become `\n`, and the Clientmodul's status trailer is cut: a line of five or more `-` followed only by
/// lines it writes ("Die Nachricht wurde entschlüsselt.", "Die Signatur wurde …").
fn strip_trailer(body: &str) -> (String, Option<String>) {
    let lines: Vec<&str> = body.lines().collect();
    let separator = lines.iter().rposition(|line| {
        let line = line.trim_end();
        line.len() >= 5 && line.bytes().all(|b| b == b'-')
    });
    if let Some(separator) = separator {
        let after: Vec<&str> = lines[separator + 1..]
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        let is_trailer = !after.is_empty()
            && after
                .iter()
                .all(|l| TRAILER_PREFIXES.iter().any(|p| l.starts_with(p)));
        if is_trailer {
            let text = lines[..separator].join("\n").trim_end().to_owned();
            return (text, Some(after.join("\n")));
        }
    }
    (lines.join("\n").trim_end().to_owned(), None)
}

fn service_kind(dienstkennung: Option<&Dienstkennung>) -> MailKind {
    let Some(d) = dienstkennung else {
        return MailKind::Chat;
    };
    if d.anwendung.eq_ignore_ascii_case("KIM-Mail") {
        return if d.typ.eq_ignore_ascii_case("Abwesend") {
            MailKind::OutOfOffice
        } else {
            MailKind::Chat
        };
    }
    let service = if d.anwendung.eq_ignore_ascii_case("Arztbrief") {
        "eArztbrief".to_owned()
    } else {
        d.anwendung.clone()
    };
    let kind = if d.typ.is_empty() {
        service
    } else {
        format!("{service} ({})", d.typ)
    };
    MailKind::OtherService { kind }
}

/// An RFC 3464 report: `multipart/report; report-type=delivery-status` with a
/// `message/delivery-status` part.
fn delivery_report(message: &Message<'_>, in_reply_to: Option<&str>) -> Option<DeliveryReport> {
    let root = message.root_part().content_type()?;
    let is_report = root.ctype().eq_ignore_ascii_case("multipart")
        && root
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    if !is_report {
        return None;
    }
    let status_part = message.parts.iter().find(|p| {
        p.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("delivery-status")
                        || s.eq_ignore_ascii_case("global-delivery-status")
                })
        })
    })?;
    let recipients = parse_delivery_status(&String::from_utf8_lossy(status_part.contents()));
    let original_message_id = in_reply_to
        .map(str::to_owned)
        .or_else(|| returned_message_id(message));
    Some(DeliveryReport {
        original_message_id,
        recipients,
    })
}

/// The per-recipient field groups of a `message/delivery-status` body (the first group is
/// per-message and carries no `Action`).
fn parse_delivery_status(body: &str) -> Vec<RecipientStatus> {
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = groups.last_mut().and_then(|g| g.last_mut()) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':')
            && let Some(group) = groups.last_mut()
        {
            group.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let without_type = |v: &str| match v.split_once(';') {
        Some((_, rest)) => rest.trim().to_owned(),
        None => v.trim().to_owned(),
    };
    groups
        .iter()
        .filter_map(|group| {
            let field = |name: &str| {
                group
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            let action = field("action")?;
            let recipient = field("final-recipient").or(field("original-recipient"))?;
            Some(RecipientStatus {
                recipient: without_type(recipient),
                action: action.to_ascii_lowercase(),
                status: field("status")
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                diagnostic: field("diagnostic-code").map(without_type),
            })
        })
        .collect()
}

/// Message-ID of the returned original: an attached `message/rfc822` or the headers of a
/// `text/rfc822-headers` part.
fn returned_message_id(message: &Message<'_>) -> Option<String> {
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Message(original) => original.message_id().map(str::to_owned),
        _ if part.content_type().is_some_and(|ct| {
            ct.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
        }) =>
        {
            MessageParser::default()
                .parse_headers(part.contents())
                .and_then(|headers| headers.message_id().map(str::to_owned))
        }
        _ => None,
    })
}

/// A Clientmodul error mail: unsigned (no Dienstkennung, or an `X-KIM-Fehlermeldung`) and
/// carrying the original mail as `message/rfc822`.
fn clientmodul_error(
    message: &Message<'_>,
    dienstkennung: Option<&Dienstkennung>,
    verification: &Verification,
    subject: &str,
    text: &str,
    in_reply_to: Option<&str>,
) -> Option<ClientmodulErrorReport> {
    let original = message.parts.iter().find_map(|p| match &p.body {
        PartType::Message(original) => Some(original),
        _ => None,
    })?;
    if (dienstkennung.is_some() && verification.errors.is_empty()) || verification.failed_to_open()
    {
        return None;
    }
    let mut explanation = subject.trim().to_owned();
    if !text.is_empty() {
        if !explanation.is_empty() {
            explanation.push_str("\n\n");
        }
        explanation.push_str(text);
    }
    for error in &verification.errors {
        explanation.push('\n');
        explanation.push_str(&error.describe());
    }
    Some(ClientmodulErrorReport {
        original_message_id: original
            .message_id()
            .map(str::to_owned)
            .or_else(|| in_reply_to.map(str::to_owned)),
        text: explanation,
    })
}

/// Attachments and inline files; for reports the returned original and the status parts are
/// part of the report, not files, and so is the unopened original in the Clientmodul's error
/// mail for a received mail.
fn attachments(message: &Message<'_>, is_report: bool, unopened: bool) -> Vec<IncomingAttachment> {
    message
        .attachments()
        .filter(|part| !(is_report && (part.is_message() || is_report_part(part))))
        .filter(|part| !(unopened && part.is_message()))
        .enumerate()
        .map(|(index, part)| {
            let content_type = part.content_type().map_or_else(
                || "application/octet-stream".to_owned(),
                |ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
                    None => ct.ctype().to_ascii_lowercase(),
                },
            );
            IncomingAttachment {
                filename: part
                    .attachment_name()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("attachment-{}", index + 1)),
                content_type,
                data: part.contents().to_vec(),
                inline: part
                    .content_disposition()
                    .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline")),
            }
        })
        .collect()
}

fn is_report_part(part: &mail_parser::MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.subtype().is_some_and(|s| {
            let s = s.to_ascii_lowercase();
            s == "delivery-status" || s == "global-delivery-status" || s == "rfc822-headers"
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_is_cut_only_when_it_is_the_clientmodul_s() {
        let (text, trailer) = strip_trailer(
            "Text der Testnachricht\n\n\n-------------\nDie Nachricht wurde entschlüsselt.\nDie Signatur wurde erfolgreich geprüft.\n",
        );
        assert_eq!(text, "Text der Testnachricht");
        assert_eq!(
            trailer.as_deref(),
            Some("Die Nachricht wurde entschlüsselt.\nDie Signatur wurde erfolgreich geprüft.")
        );
        let own = "Liste:\n-----\n- eins\n- zwei";
        assert_eq!(strip_trailer(own), (own.to_owned(), None));
    }

    #[test]
    fn dienstkennung_kinds() {
        let kind = |v: &str| service_kind(Dienstkennung::parse(v).as_ref());
        assert_eq!(kind("KIM-Mail;Default;V1.0"), MailKind::Chat);
        assert_eq!(kind("KIM-Mail;Abwesend;V1.0"), MailKind::OutOfOffice);
        assert_eq!(
            kind("Arztbrief;VHitG-Versand;V1.2"),
            MailKind::OtherService {
                kind: "eArztbrief (VHitG-Versand)".into()
            }
        );
        assert_eq!(
            kind("eAU;Lieferung;V1.2"),
            MailKind::OtherService {
                kind: "eAU (Lieferung)".into()
            }
        );
        assert_eq!(service_kind(None), MailKind::Chat);
    }

    #[test]
    fn delivery_status_fields() {
        let recipients = parse_delivery_status(
            "Reporting-MTA: dns; mail.example\nArrival-Date: Mon, 1 Jan 2024\n\nFinal-Recipient: rfc822; a@x.kim.telematik-test\nOriginal-Recipient: rfc822;a@x.kim.telematik-test\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: X-Postfix; unknown user:\n    \"a\"\n",
        );
        assert_eq!(
            recipients,
            vec![RecipientStatus {
                recipient: "a@x.kim.telematik-test".into(),
                action: "failed".into(),
                status: "5.1.1".into(),
                diagnostic: Some("unknown user: \"a\"".into()),
            }]
        );
        assert!(recipients[0].is_failure());
    }

    #[test]
    fn clientmodul_error_mail_names_the_original() {
        let raw = concat!(
            "From: insurer@insurer.kim.telematik-test\r\n",
            "To: insurer@insurer.kim.telematik-test\r\n",
            "Subject: Die Nachricht konnte nicht verschluesselt werden\r\n",
            "Message-ID: <err-1@insurer.kim.telematik-test>\r\n",
            "X-KIM-Fehlermeldung: 4004\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
            "\r\n",
            "--b\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "\r\n",
            "Fuer praxis@practice.kim.telematik-test fehlt ein Zertifikat.\r\n",
            "--b\r\n",
            "Content-Type: message/rfc822\r\n",
            "\r\n",
            "From: insurer@insurer.kim.telematik-test\r\n",
            "To: praxis@practice.kim.telematik-test\r\n",
            "Message-ID: <orig-1@insurer.kim.telematik-test>\r\n",
            "X-KIM-Dienstkennung: KIM-Mail;Default;V1.0\r\n",
            "Subject: Hallo\r\n",
            "\r\n",
            "Hallo\r\n",
            "--b--\r\n",
        );
        let mail = parse(raw.as_bytes()).unwrap();
        let MailKind::ClientmodulError(report) = &mail.kind else {
            panic!("{:?}", mail.kind)
        };
        assert_eq!(
            report.original_message_id.as_deref(),
            Some("orig-1@insurer.kim.telematik-test")
        );
        assert!(
            report.text.contains("fehlt ein Zertifikat"),
            "{}",
            report.text
        );
        assert!(
            report.text.contains("4004: message not encryptable"),
            "{}",
            report.text
        );
        assert!(
            mail.attachments.is_empty(),
            "the original is part of the report"
        );
    }

    #[test]
    fn out_of_office_and_forwarded_mail_in_a_chat() {
        let raw = "From: a@x.kim.telematik-test\r\nX-KIM-Dienstkennung: KIM-Mail;Abwesend;V1.0\r\nSubject: Abwesend\r\n\r\nBis Montag.\r\n";
        let mail = parse(raw.as_bytes()).unwrap();
        assert_eq!(mail.kind, MailKind::OutOfOffice);
        assert_eq!(mail.text, "Bis Montag.");
    }

    #[test]
    fn html_alternative_of_a_client_mail_is_kept() {
        let from = KimAddress::parse("a@insurer.kim.telematik-test").unwrap();
        let to = KimAddress::parse("b@practice.kim.telematik-test").unwrap();
        let mut mail =
            super::super::outgoing::ClientMail::new(from, vec![to], "S".into(), "plain".into());
        let sender = super::super::outgoing::SenderSystem {
            sendersystem: "p;1".into(),
            support: "s@insurer.kim.telematik-test".into(),
            middleware: "m;1".into(),
            ti_user_agent: "u".into(),
            max_decoded_size: 1000,
        };
        let plain = parse(&mail.render(&sender).unwrap()).unwrap();
        assert_eq!(plain.html, None);
        mail.html = Some("<p>rich</p>".into());
        let rich = parse(&mail.render(&sender).unwrap()).unwrap();
        assert_eq!(rich.text, "plain");
        assert_eq!(rich.html.as_deref(), Some("<p>rich</p>"));
    }

    #[test]
    fn garbage_is_not_a_mail() {
        assert!(parse(b"").is_err());
    }
}
