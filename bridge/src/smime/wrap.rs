//! The two MIME wraps inside a KIM mail: the client mail as
//! `message/rfc822` (what gets signed) and the SignedData as
//! `application/pkcs7-mime; smime-type=signed-data` (what gets encrypted).

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::error::SmimeError;

/// The service identifier a Clientmodul adds to client mail without one.
const DEFAULT_DIENSTKENNUNG: &str = "X-KIM-Dienstkennung: KIM-Mail;Default;V1.0";
const RFC822_HEADER: &[u8] = b"Content-Type: message/rfc822\r\n\r\n";
const SIGNED_HEADERS: &[u8] = b"MIME-Version: 1.0\r\n\
Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-Disposition: attachment; filename=smime.p7m\r\n\r\n";

/// Wraps a client mail as gematik's sample does: lines end in CRLF, an
/// `X-KIM-Dienstkennung` is added when missing, and a `message/rfc822`
/// header goes in front.
pub fn rfc822_wrap(mail: &[u8]) -> Vec<u8> {
    let mail = crlf_lines(mail);
    let (headers, body) = match find(&mail, b"\r\n\r\n") {
        Some(end) => (&mail[..end + 2], &mail[end + 2..]),
        None => (&mail[..], &b"\r\n"[..]),
    };
    let has_dienstkennung = headers
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 20 && line[..20].eq_ignore_ascii_case(b"x-kim-dienstkennung:"));
    let mut out =
        Vec::with_capacity(RFC822_HEADER.len() + mail.len() + DEFAULT_DIENSTKENNUNG.len() + 2);
    out.extend_from_slice(RFC822_HEADER);
    out.extend_from_slice(headers);
    if !has_dienstkennung {
        out.extend_from_slice(DEFAULT_DIENSTKENNUNG.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(body);
    out
}

/// The client mail inside a `message/rfc822` wrap.
pub fn rfc822_unwrap(wrap: &[u8]) -> Result<&[u8], SmimeError> {
    let message = parse_headers(wrap)
        .ok_or_else(|| SmimeError::signed_format("signed content has no MIME header"))?;
    let is_rfc822 = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("rfc822"))
    });
    if !is_rfc822 {
        return Err(SmimeError::signed_format(
            "signed content is not message/rfc822",
        ));
    }
    let start =
        body_start(wrap).ok_or_else(|| SmimeError::signed_format("rfc822 wrap has no body"))?;
    Ok(&wrap[start..])
}

/// The SignedData as the MIME entity that gets encrypted (binary, as in
/// gematik's sample).
pub fn signed_wrap(signed_data_der: &[u8]) -> Vec<u8> {
    [SIGNED_HEADERS, signed_data_der].concat()
}

/// The DER SignedData inside a signed-data wrap (binary or base64).
pub fn signed_unwrap(wrap: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let message = MessageParser::default()
        .parse(wrap)
        .ok_or(SmimeError::NotSigned)?;
    let signed = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("application")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("pkcs7-mime") || s.eq_ignore_ascii_case("x-pkcs7-mime")
            })
            && ct
                .attribute("smime-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"))
    });
    if !signed {
        return Err(SmimeError::NotSigned);
    }
    let encoding = message
        .header_raw("Content-Transfer-Encoding")
        .map(|e| e.trim().to_ascii_lowercase());
    if encoding.as_deref() == Some("base64") {
        return match &message.root_part().body {
            PartType::Binary(body) | PartType::InlineBinary(body) => Ok(body.to_vec()),
            _ => Err(SmimeError::signed_format("signed-data body is not base64")),
        };
    }
    // Binary: every byte after the header block, untouched by MIME decoding.
    let start = body_start(wrap)
        .ok_or_else(|| SmimeError::signed_format("signed-data wrap has no body"))?;
    Ok(wrap[start..].to_vec())
}

pub(crate) fn parse_headers(bytes: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse_headers(bytes)
}

/// Where the body starts: after the first empty line (CRLF or LF mail).
fn body_start(entity: &[u8]) -> Option<usize> {
    let crlf = find(entity, b"\r\n\r\n").map(|at| at + 4);
    let lf = find(entity, b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Rewrites bare LF line ends to CRLF (a mail read from a Unix file).
fn crlf_lines(mail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mail.len() + mail.len() / 32);
    for (i, &b) in mail.iter().enumerate() {
        if b == b'\n' && (i == 0 || mail[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
