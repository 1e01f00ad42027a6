//! A chat message as a KIM client mail: the RFC 5322 bytes the bridge hands to the
//! Clientmodul, with the headers KIM requires (`shared/KIM.md`, "Message format").

use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use serde::{Deserialize, Serialize};

use super::address::KimAddress;

/// The Dienstkennung of free-text KIM mail, which the bridge's chat mails are.
pub const DIENSTKENNUNG_CHAT: &str = "KIM-Mail;Default;V1.0";

/// KIM 1.0's limit for a client mail without the attachment service: 15 MiB decoded.
pub const KIM_1_0_MAX_DECODED_SIZE: usize = 15 * 1024 * 1024;

/// How the bridge names itself in every mail it sends (mandatory KIM headers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderSystem {
    /// `X-KIM-Sendersystem: <product>;<version>`.
    pub sendersystem: String,
    /// `X-KIM-Support`: the operator's support address.
    pub support: String,
    /// `X-KIM-Middleware: <name>;<version>` (the bridge is middleware between the
    /// Matrix clients and the Clientmodul).
    pub middleware: String,
    /// `X-TI-User-Agent`: the product identifier.
    pub ti_user_agent: String,
    /// Largest mail (sum of decoded body and attachments) accepted for sending.
    #[serde(default = "default_max_decoded_size")]
    pub max_decoded_size: usize,
}

fn default_max_decoded_size() -> usize {
    KIM_1_0_MAX_DECODED_SIZE
}

/// A file attached to a client mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Shown name; non-ASCII is written as an RFC 2231 parameter.
    pub filename: String,
    /// MIME type, e.g. `image/png`.
    pub content_type: String,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// One KIM client mail as the bridge sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMail {
    /// Without angle brackets; [`ClientMail::new`] makes a UUID-based one without host names.
    pub message_id: String,
    pub from: KimAddress,
    /// The name shown with `from`: who in the chat wrote.
    pub from_name: Option<String>,
    pub to: Vec<KimAddress>,
    pub subject: String,
    /// The text/plain UTF-8 body.
    pub text: String,
    /// An HTML alternative; when given the body becomes `multipart/alternative`.
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Message-ID (without brackets) of the mail this one answers.
    pub in_reply_to: Option<String>,
    /// Message-IDs (without brackets) of the thread, oldest first.
    pub references: Vec<String>,
    /// `X-KIM-Dienstkennung`, [`DIENSTKENNUNG_CHAT`] by default.
    pub dienstkennung: String,
}

/// Why a client mail cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the mail is {size} bytes decoded, over the limit of {limit} bytes for KIM mail")]
    TooLarge { size: usize, limit: usize },
    #[error("a client mail needs at least one recipient")]
    NoRecipients,
    #[error("header {0} must not contain line breaks")]
    HeaderInjection(&'static str),
    #[error("writing the mail failed: {0}")]
    Write(#[from] std::io::Error),
}

impl ClientMail {
    /// A chat mail with a fresh Message-ID (`<uuid>@<sender domain>`: unique, and with no
    /// internal host name or personal data) and the default Dienstkennung.
    pub fn new(from: KimAddress, to: Vec<KimAddress>, subject: String, text: String) -> Self {
        let message_id = new_message_id(&from);
        Self {
            message_id,
            from,
            from_name: None,
            to,
            subject,
            text,
            html: None,
            attachments: Vec::new(),
            in_reply_to: None,
            references: Vec::new(),
            dienstkennung: DIENSTKENNUNG_CHAT.to_owned(),
        }
    }

    /// Decoded size: bodies plus attachment bytes, what KIM's size limit counts.
    pub fn decoded_size(&self) -> usize {
        self.text.len()
            + self.html.as_ref().map_or(0, String::len)
            + self.attachments.iter().map(|a| a.data.len()).sum::<usize>()
    }

    /// Renders the mail as RFC 5322 bytes (CRLF line ends), dated now.
    pub fn render(&self, sender: &SenderSystem) -> Result<Vec<u8>, RenderError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.render_at(sender, now)
    }

    /// Renders the mail with `Date` set to `unix_time` (seconds).
    pub fn render_at(&self, sender: &SenderSystem, unix_time: i64) -> Result<Vec<u8>, RenderError> {
        let size = self.decoded_size();
        if size > sender.max_decoded_size {
            return Err(RenderError::TooLarge {
                size,
                limit: sender.max_decoded_size,
            });
        }
        if self.to.is_empty() {
            return Err(RenderError::NoRecipients);
        }
        for (name, value) in [
            ("X-KIM-Dienstkennung", self.dienstkennung.as_str()),
            ("X-KIM-Sendersystem", sender.sendersystem.as_str()),
            ("X-KIM-Support", sender.support.as_str()),
            ("X-KIM-Middleware", sender.middleware.as_str()),
            ("X-TI-User-Agent", sender.ti_user_agent.as_str()),
            ("Message-ID", self.message_id.as_str()),
        ] {
            if value.contains(['\r', '\n']) {
                return Err(RenderError::HeaderInjection(name));
            }
        }
        let ids = self
            .in_reply_to
            .iter()
            .chain(&self.references)
            .map(String::as_str);
        if ids.clone().any(|id| id.contains(['\r', '\n', '<', '>'])) {
            return Err(RenderError::HeaderInjection("In-Reply-To/References"));
        }

        let mut builder = MessageBuilder::new()
            .from(Address::new_address(
                self.from_name.as_deref().map(display_name),
                self.from.as_str(),
            ))
            .to(Address::new_list(
                self.to
                    .iter()
                    .map(|to| Address::new_address(None::<&str>, to.as_str()))
                    .collect(),
            ))
            .subject(self.subject.as_str())
            .date(Date::new(unix_time))
            .message_id(self.message_id.as_str())
            .header("X-KIM-Dienstkennung", Raw::new(self.dienstkennung.as_str()))
            .header("X-KIM-Sendersystem", Raw::new(sender.sendersystem.as_str()))
            .header("X-KIM-Support", Raw::new(sender.support.as_str()))
            .header("X-KIM-Middleware", Raw::new(sender.middleware.as_str()))
            .header("X-TI-User-Agent", Raw::new(sender.ti_user_agent.as_str()))
            .text_body(self.text.as_str());
        if let Some(in_reply_to) = &self.in_reply_to {
            builder = builder.in_reply_to(in_reply_to.as_str());
        }
        if !self.references.is_empty() {
            builder = builder.references(MessageId::new_list(
                self.references.iter().map(String::as_str),
            ));
        }
        if let Some(html) = &self.html {
            builder = builder.html_body(html.as_str());
        }
        for attachment in &self.attachments {
            builder = builder.attachment(
                attachment.content_type.as_str(),
                attachment.filename.as_str(),
                attachment.data.as_slice(),
            );
        }
        Ok(builder.write_to_vec()?)
    }
}

/// A display name as a header may carry it: no control characters (no
/// header injection), at most 80 characters.
fn display_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(80)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A Message-ID (without brackets) made of a random UUID and the sender's KIM domain.
pub fn new_message_id(from: &KimAddress) -> String {
    format!("{}@{}", uuid::Uuid::new_v4(), from.domain())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> SenderSystem {
        SenderSystem {
            sendersystem: "TI-M KIM-Bridge;0.1.0".into(),
            support: "support@insurer.kim.telematik-test".into(),
            middleware: "kim-bridge;0.1.0".into(),
            ti_user_agent: "TIM-KIM-Bridge/0.1.0".into(),
            max_decoded_size: 1000,
        }
    }

    fn mail() -> ClientMail {
        ClientMail::new(
            KimAddress::parse("insurer@insurer.kim.telematik-test").unwrap(),
            vec![KimAddress::parse("praxis@practice.kim.telematik-test").unwrap()],
            "Rückfrage".into(),
            "Grüße aus der Kasse".into(),
        )
    }

    #[test]
    fn renders_kim_headers_and_plain_text_body() {
        let mut m = mail();
        m.in_reply_to = Some("abc@practice.kim.telematik-test".into());
        m.references = vec!["abc@practice.kim.telematik-test".into()];
        let raw = m.render_at(&sender(), 1_700_000_000).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("X-KIM-Dienstkennung: KIM-Mail;Default;V1.0\r\n"));
        assert!(text.contains("X-KIM-Sendersystem: TI-M KIM-Bridge;0.1.0\r\n"));
        assert!(text.contains("X-KIM-Middleware: kim-bridge;0.1.0\r\n"));
        assert!(text.contains("X-TI-User-Agent: TIM-KIM-Bridge/0.1.0\r\n"));
        assert!(text.contains("In-Reply-To: <abc@practice.kim.telematik-test>\r\n"));
        assert!(!text.contains("multipart"));
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.message_id(), Some(m.message_id.as_str()));
        assert_eq!(parsed.subject(), Some("Rückfrage"));
        assert_eq!(parsed.body_text(0).as_deref(), Some("Grüße aus der Kasse"));
        assert_eq!(parsed.date().unwrap().to_timestamp(), 1_700_000_000);
        let uuid_part = m.message_id.split('@').next().unwrap();
        assert!(uuid::Uuid::parse_str(uuid_part).is_ok());
    }

    #[test]
    fn the_authors_name_is_the_senders_display_name() {
        let mut m = mail();
        m.from_name = Some("Jürgen Größe\r\nBcc: evil@example.org".into());
        let raw = m.render_at(&sender(), 1_700_000_000).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(!text.contains("\r\nBcc:"), "{text}");
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let from = parsed.from().and_then(|from| from.first()).unwrap();
        assert_eq!(from.address(), Some("insurer@insurer.kim.telematik-test"));
        assert_eq!(from.name(), Some("Jürgen Größe  Bcc: evil@example.org"));
    }

    #[test]
    fn too_large_mail_is_refused_with_the_sizes() {
        let mut m = mail();
        m.attachments.push(Attachment {
            filename: "big.bin".into(),
            content_type: "application/octet-stream".into(),
            data: vec![0; 2000],
        });
        let err = m.render(&sender()).unwrap_err();
        assert!(
            matches!(err, RenderError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
    }

    #[test]
    fn header_injection_is_refused() {
        let mut m = mail();
        m.in_reply_to = Some("x>\r\nBcc: <evil".into());
        assert!(matches!(
            m.render(&sender()),
            Err(RenderError::HeaderInjection(_))
        ));
    }
}
