//! The outer KIM mail: the AuthEnvelopedData as a base64
//! `application/pkcs7-mime` body under the client mail's addressing
//! headers, `Subject: KOM-LE-Nachricht` and the KOM-LE version headers.

use mail_parser::{Address, Message, MimeHeaders, PartType};

use super::error::SmimeError;
use super::wrap;

/// Headers the outer mail repeats from the client mail (plus every X-KIM-*).
const COPIED: &[&str] = &["Date", "From", "Reply-To", "To", "Cc", "Message-ID"];
/// X-KIM-* headers the outer mail sets itself instead of copying.
const OWN: &[&str] = &["X-KIM-CMVersion", "X-KIM-PTVersion"];

/// Values for the outer headers that do not come from the client mail.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// `X-KOM-LE-Version`: `1.0` or `1.5`.
    pub kom_le_version: String,
    /// `X-KIM-CMVersion`: the Clientmodul's version.
    pub cm_version: String,
    /// `X-KIM-PTVersion`: the product type version.
    pub pt_version: String,
    /// `Expires` (an RFC 5322 date), when the mail should expire.
    pub expires: Option<String>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            kom_le_version: "1.5".into(),
            cm_version: "1.5.0".into(),
            pt_version: "1.5.0".into(),
            expires: None,
        }
    }
}

/// Builds the outer mail around `encrypted_der` for `client_mail`.
pub fn build_outer(
    client_mail: &[u8],
    encrypted_der: &[u8],
    options: &EncodeOptions,
) -> Result<Vec<u8>, SmimeError> {
    let client = wrap::parse_headers(client_mail)
        .ok_or_else(|| SmimeError::InvalidMail("no header".into()))?;
    for required in ["From", "Message-ID"] {
        if client.header_raw(required).is_none() {
            return Err(SmimeError::InvalidMail(format!("{required} is missing")));
        }
    }
    let mut out = Vec::with_capacity(encrypted_der.len() * 4 / 3 + 1024);
    for header in client.headers() {
        let name = header.name.as_str();
        let copy = COPIED.iter().any(|c| c.eq_ignore_ascii_case(name))
            || (name.len() > 6
                && name[..6].eq_ignore_ascii_case("x-kim-")
                && !OWN.iter().any(|o| o.eq_ignore_ascii_case(name)));
        if copy {
            let start = usize::try_from(header.offset_field).unwrap_or(usize::MAX);
            let end = usize::try_from(header.offset_end).unwrap_or(usize::MAX);
            let line = client_mail
                .get(start..end)
                .ok_or_else(|| SmimeError::InvalidMail("bad header".into()))?;
            out.extend_from_slice(line.trim_ascii_end());
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut push =
        |name: &str, value: &str| out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    push("Subject", "KOM-LE-Nachricht");
    push("MIME-Version", "1.0");
    push(
        "Content-Type",
        "application/pkcs7-mime; smime-type=authenticated-enveloped-data; name=smime.p7m",
    );
    push("Content-Transfer-Encoding", "base64");
    push("Content-Disposition", "attachment; filename=smime.p7m");
    push("X-KOM-LE-Version", &options.kom_le_version);
    push("X-KIM-CMVersion", &options.cm_version);
    push("X-KIM-PTVersion", &options.pt_version);
    if let Some(expires) = &options.expires {
        push("Expires", expires);
    }
    out.extend_from_slice(b"\r\n");
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, encrypted_der);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// The outer mail, parsed: its headers and the AuthEnvelopedData DER.
pub struct OuterMail<'a> {
    pub(crate) headers: Message<'a>,
    pub(crate) encrypted_der: Vec<u8>,
}

impl OuterMail<'_> {
    /// The AuthEnvelopedData ContentInfo from the base64 body.
    pub fn encrypted_der(&self) -> &[u8] {
        &self.encrypted_der
    }
}

/// Parses an outer KIM mail.
pub fn parse_outer(mail: &[u8]) -> Result<OuterMail<'_>, SmimeError> {
    let message = mail_parser::MessageParser::default()
        .parse(mail)
        .ok_or_else(|| SmimeError::EncryptedFormat("not a mail".into()))?;
    let enveloped = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("application")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("pkcs7-mime") || s.eq_ignore_ascii_case("x-pkcs7-mime")
            })
            && ct
                .attribute("smime-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("authenticated-enveloped-data"))
    });
    if !enveloped {
        return Err(SmimeError::EncryptedFormat(
            "not application/pkcs7-mime; smime-type=authenticated-enveloped-data".into(),
        ));
    }
    let encrypted_der = match &message.root_part().body {
        PartType::Binary(body) | PartType::InlineBinary(body) => body.to_vec(),
        _ => return Err(SmimeError::EncryptedFormat("no encrypted body".into())),
    };
    Ok(OuterMail {
        headers: message,
        encrypted_der,
    })
}

/// Whether outer and inner mail carry the same From, To, Cc and
/// Message-ID (`X-KIM-IntegrityCheckResult: 08` otherwise). Date is left
/// out: gematik's own sample has different outer and inner dates.
pub(crate) fn same_addressing(outer: &Message<'_>, inner: &Message<'_>) -> bool {
    fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
        let mut list: Vec<String> = address
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.address())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        list.sort();
        list
    }
    addresses(outer.from()) == addresses(inner.from())
        && addresses(outer.to()) == addresses(inner.to())
        && addresses(outer.cc()) == addresses(inner.cc())
        && outer.message_id() == inner.message_id()
}
