//! The receiving pipeline: what the client system gets for a mail the MTA
//! holds. A KOM-LE mail is decrypted and verified (`crate::smime`) and
//! handed out as the sender's client mail with `X-KIM-DecryptionResult`,
//! `X-KIM-IntegrityCheckResult` and the trailer a real Clientmodul appends
//! to the text (gematik's sample `2_4_Client-Mail_finalisiert`). A mail it
//! cannot open becomes an unsigned error mail (`multipart/mixed`, the
//! original as `message/rfc822`) with the result codes. Anything else (a
//! provider's DSN) passes through, without verdict headers it might forge.

use mail_parser::{Encoding, MessageParser, MimeHeaders};
use openssl::x509::X509;

use crate::smime::{self, IntegrityCheck, MailboxKey, SmimeError};

/// The verdict headers only a Clientmodul may set.
const VERDICT_HEADERS: &[&str] = &[
    "X-KIM-DecryptionResult",
    "X-KIM-IntegrityCheckResult",
    "X-KIM-Fehlermeldung",
];
/// Outer headers the delivered mail keeps (the MTA's trace).
const TRACE_HEADERS: &[&str] = &["Return-Path", "Received"];
/// The separator line before the trailer (as in gematik's sample).
const TRAILER_SEPARATOR: &str = "---------------------------------------------";

/// How the Clientmodul judges signatures it verified.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Report a good signature as `01` instead of `07` (no OCSP here).
    pub assume_not_revoked: bool,
}

/// What the client system gets for `raw`, a mail fetched for `mailbox`.
pub fn receive(raw: &[u8], mailbox: &MailboxKey, trust: &[X509], policy: Policy) -> Vec<u8> {
    if !is_kom_le(raw) {
        return without_headers(raw, VERDICT_HEADERS);
    }
    match smime::decode_kim_mail(raw, mailbox, trust) {
        Ok(decoded) => {
            let integrity = match decoded.integrity {
                IntegrityCheck::ValidStatusUnknown if policy.assume_not_revoked => "01",
                other => other.code(),
            };
            delivered(raw, &decoded.mail, integrity)
        }
        Err(error) => error_mail(raw, &error),
    }
}

/// Whether `raw` is an outer KOM-LE mail (AuthEnvelopedData).
fn is_kom_le(raw: &[u8]) -> bool {
    MessageParser::default()
        .parse_headers(raw)
        .and_then(|m| {
            let ct = m.content_type()?;
            Some(
                ct.ctype().eq_ignore_ascii_case("application")
                    && ct.subtype().is_some_and(|s| {
                        s.eq_ignore_ascii_case("pkcs7-mime")
                            || s.eq_ignore_ascii_case("x-pkcs7-mime")
                    })
                    && ct
                        .attribute("smime-type")
                        .is_some_and(|t| t.eq_ignore_ascii_case("authenticated-enveloped-data")),
            )
        })
        .unwrap_or(false)
}

/// The decrypted client mail with the results, the outer trace headers
/// and the trailer.
fn delivered(outer: &[u8], inner: &[u8], integrity: &str) -> Vec<u8> {
    let signature_line = match integrity {
        "01" | "07" => "Die Signatur wurde erfolgreich geprüft.".to_owned(),
        code => {
            format!("Die Prüfung der Signatur ergab Fehler (X-KIM-IntegrityCheckResult {code}).")
        }
    };
    let trailer = format!(
        "\r\n\r\n{TRAILER_SEPARATOR}\r\nDie Nachricht wurde entschlüsselt.\r\n{signature_line}\r\n"
    );
    let inner = with_trailer(&without_headers(inner, VERDICT_HEADERS), &trailer);
    let mut added =
        format!("X-KIM-DecryptionResult: 00\r\nX-KIM-IntegrityCheckResult: {integrity}\r\n")
            .into_bytes();
    added.extend(header_lines(outer, TRACE_HEADERS));
    let body_at = header_end(&inner);
    [&inner[..body_at], &added, &inner[body_at..]].concat()
}

/// The unsigned error mail for a mail that could not be opened or whose
/// signature layer is broken.
fn error_mail(original: &[u8], error: &SmimeError) -> Vec<u8> {
    let (subject, mut headers) = match error.decryption_result() {
        Some(code) => {
            let fehlermeldung = error.fehlermeldung().unwrap_or(match code {
                "01" => 4009,
                _ => 4010,
            });
            (
                "Die Nachricht konnte nicht entschlüsselt werden",
                format!(
                    "X-KIM-DecryptionResult: {code}\r\nX-KIM-Fehlermeldung: {fehlermeldung}\r\n"
                ),
            )
        }
        None => (
            "Die Signatur der Nachricht konnte nicht geprüft werden",
            format!(
                "X-KIM-DecryptionResult: 00\r\nX-KIM-IntegrityCheckResult: {}\r\n",
                error.integrity_check_result().unwrap_or("06")
            ),
        ),
    };
    let digest = hex(&openssl::sha::sha256(original)[..12]);
    let boundary = format!("kim-error-{digest}");
    let addressing = header_lines(original, &["Date", "From", "To", "Cc"]);
    headers.insert_str(
        0,
        &format!("Subject: {subject}\r\nMessage-ID: <error-{digest}@test-clientmodul.invalid>\r\n"),
    );
    let text = format!(
        "{subject}.\r\nDer Test-Clientmodul meldet: {error}\r\nDie Originalnachricht ist angehängt.\r\n"
    );
    [
        addressing.as_slice(),
        headers.as_bytes(),
        format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
             --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
             {text}\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\
             Content-Disposition: attachment; filename=\"original.eml\"\r\n\r\n"
        )
        .as_bytes(),
        original,
        format!("\r\n--{boundary}--\r\n").as_bytes(),
    ]
    .concat()
}

/// Appends `trailer` (CRLF text) to the first text/plain part, in that
/// part's transfer encoding. A mail without one is left as it is.
fn with_trailer(mail: &[u8], trailer: &str) -> Vec<u8> {
    let Some(message) = MessageParser::default().parse(mail) else {
        return mail.to_vec();
    };
    let part = message
        .text_body
        .iter()
        .filter_map(|&index| message.parts.get(index as usize))
        .find(|part| part.is_text() && !part.is_text_html());
    let Some(part) = part else {
        return mail.to_vec();
    };
    let (start, end) = (part.offset_body as usize, part.offset_end as usize);
    let (Some(body), true) = (mail.get(start..end), start <= end) else {
        return mail.to_vec();
    };
    let replacement = match part.encoding {
        Encoding::None => [body.trim_ascii_end(), trailer.as_bytes()].concat(),
        Encoding::QuotedPrintable => {
            [body.trim_ascii_end(), quoted_printable(trailer).as_bytes()].concat()
        }
        Encoding::Base64 => {
            let text = format!("{}{trailer}", part.text_contents().unwrap_or_default());
            let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
            let mut lines: Vec<u8> = Vec::new();
            for line in encoded.as_bytes().chunks(76) {
                lines.extend_from_slice(line);
                lines.extend_from_slice(b"\r\n");
            }
            lines
        }
    };
    [&mail[..start], &replacement, &mail[end..]].concat()
}

/// Quoted-printable for short CRLF lines: non-ASCII and `=` escaped.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for &b in text.as_bytes() {
        match b {
            b'=' | 0x80.. => out.push_str(&format!("={b:02X}")),
            b => out.push(char::from(b)),
        }
    }
    out
}

/// `mail` without the header fields named `names` (with their folded lines).
fn without_headers(mail: &[u8], names: &[&str]) -> Vec<u8> {
    let body_at = header_end(mail);
    let mut out = Vec::with_capacity(mail.len());
    let mut dropping = false;
    for line in mail[..body_at].split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            dropping = names.iter().any(|name| is_field(line, name));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&mail[body_at..]);
    out
}

/// The header fields named `names`, as written (folded lines included).
fn header_lines(mail: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keeping = false;
    for line in mail[..header_end(mail)].split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            keeping = names.iter().any(|name| is_field(line, name));
        }
        if keeping {
            out.extend_from_slice(line.trim_ascii_end());
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn is_field(line: &[u8], name: &str) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()..].trim_ascii_start().first() == Some(&b':')
}

/// Where the header block ends: after the line ending before the empty
/// line (the empty line belongs to the body side), or the whole mail.
fn header_end(mail: &[u8]) -> usize {
    let mut at = 0;
    for line in mail.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            return at;
        }
        at += line.len();
    }
    mail.len()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
