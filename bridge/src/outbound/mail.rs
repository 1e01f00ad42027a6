//! A queued room message as a KIM client mail: its text, and its file
//! downloaded from the homeserver as an attachment.

use matrix_sdk_crypto::{AttachmentDecryptor, MediaEncryptionInfo};
use ruma::{
    RoomId, UserId,
    api::client::authenticated_media::get_content,
    events::room::{
        MediaSource,
        message::{MessageType, RoomMessageEventContent},
    },
};

use crate::{
    bridge::Bridge,
    kim::{
        address::KimAddress,
        outgoing::{Attachment, ClientMail},
    },
    portal::room_state,
    store::{messages, outbound_queue::QueuedMail},
};

/// Why a queued message cannot become a mail now.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Retry later (the homeserver was away).
    #[error("{0:#}")]
    Temporary(anyhow::Error),
    /// Shown in the room as the failure.
    #[error("{0}")]
    Permanent(String),
}

/// The longest subject taken from a message's first line.
const SUBJECT_CHARS: usize = 60;

pub async fn build(bridge: &Bridge, queued: &QueuedMail) -> Result<ClientMail, BuildError> {
    let content: RoomMessageEventContent = serde_json::from_value(queued.content.clone())
        .map_err(|err| BuildError::Permanent(format!("unreadable message: {err}")))?;
    let to: Vec<KimAddress> = queued
        .recipients
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let (text, file) = match &content.msgtype {
        MessageType::Text(text) => (text.body.clone(), None),
        MessageType::Emote(emote) => (format!("* {}", emote.body), None),
        MessageType::File(file) => (
            caption(&file.body, file.filename.as_deref()),
            Some((
                &file.source,
                file.filename.as_deref().unwrap_or(&file.body),
                file.info.as_ref().and_then(|i| i.mimetype.clone()),
            )),
        ),
        MessageType::Image(image) => (
            caption(&image.body, image.filename.as_deref()),
            Some((
                &image.source,
                image.filename.as_deref().unwrap_or(&image.body),
                image.info.as_ref().and_then(|i| i.mimetype.clone()),
            )),
        ),
        MessageType::Audio(audio) => (
            caption(&audio.body, audio.filename.as_deref()),
            Some((
                &audio.source,
                audio.filename.as_deref().unwrap_or(&audio.body),
                audio.info.as_ref().and_then(|i| i.mimetype.clone()),
            )),
        ),
        MessageType::Video(video) => (
            caption(&video.body, video.filename.as_deref()),
            Some((
                &video.source,
                video.filename.as_deref().unwrap_or(&video.body),
                video.info.as_ref().and_then(|i| i.mimetype.clone()),
            )),
        ),
        _ => {
            return Err(BuildError::Permanent(
                "this kind of message cannot be sent as KIM mail".to_owned(),
            ));
        }
    };
    let subject = subject(&text);
    let author = author(bridge, queued, &to)
        .await
        .map_err(BuildError::Temporary)?;
    let mut mail = ClientMail::new(bridge.config.mailbox.address.clone(), to, subject, text);
    mail.message_id = queued.message_id.clone();
    mail.from_name = author;
    if let Some((source, filename, mimetype)) = file {
        mail.attachments
            .push(download(bridge, source, filename, mimetype).await?);
    }
    let mapped = messages::by_message_id(&bridge.db, &queued.message_id)
        .await
        .map_err(|err| BuildError::Temporary(err.into()))?;
    if let Some(mapped) = mapped {
        mail.in_reply_to = mapped.refs.first().cloned();
        mail.references = mapped.refs.iter().rev().cloned().collect();
    }
    Ok(mail)
}

/// The display name of the message's author in the room, shown as the
/// mail's sender name: every mail leaves from the insurer's one mailbox,
/// and the practice must see who in the chat wrote. Read as the ghost of a
/// recipient (it is in the room).
async fn author(
    bridge: &Bridge,
    queued: &QueuedMail,
    to: &[KimAddress],
) -> anyhow::Result<Option<String>> {
    let (Ok(room_id), Ok(sender), Some(address)) = (
        RoomId::parse(&queued.room_id),
        UserId::parse(&queued.sender),
        to.first(),
    ) else {
        return Ok(None);
    };
    let ghost = bridge.ghost_of(address);
    let name = room_state::display_name(bridge, &room_id, &ghost, &sender).await?;
    Ok(Some(name))
}

/// A file message's body is its file name unless the sender wrote a caption.
fn caption(body: &str, filename: Option<&str>) -> String {
    match filename {
        Some(filename) if filename != body => body.to_owned(),
        _ => format!("Datei: {body}"),
    }
}

fn subject(text: &str) -> String {
    let first = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("Nachricht")
        .trim();
    let mut subject: String = first.chars().take(SUBJECT_CHARS).collect();
    if first.chars().count() > SUBJECT_CHARS {
        subject.push('…');
    }
    subject
}

async fn download(
    bridge: &Bridge,
    source: &MediaSource,
    filename: &str,
    mimetype: Option<String>,
) -> Result<Attachment, BuildError> {
    // In an encrypted room the file is encrypted with a key in the event.
    let (uri, encryption) = match source {
        MediaSource::Plain(uri) => (uri, None),
        MediaSource::Encrypted(file) => {
            (&file.url, Some(MediaEncryptionInfo::from((**file).clone())))
        }
    };
    let request = get_content::v1::Request::from_uri(uri)
        .map_err(|err| BuildError::Permanent(format!("bad media URI: {err}")))?;
    let response = bridge.homeserver.send(request).await.map_err(|err| {
        if err.is_transient() {
            BuildError::Temporary(err.into())
        } else {
            BuildError::Permanent(format!("the attachment could not be downloaded: {err}"))
        }
    })?;
    Ok(Attachment {
        filename: filename.to_owned(),
        content_type: mimetype
            .or(response.content_type)
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        data: match encryption {
            None => response.file,
            Some(info) => decrypt_attachment(response.file, info)?,
        },
    })
}

/// An encrypted attachment's plaintext; the decryptor checks its hash.
fn decrypt_attachment(
    ciphertext: Vec<u8>,
    info: MediaEncryptionInfo,
) -> Result<Vec<u8>, BuildError> {
    use std::io::Read as _;
    let failed = |err: &dyn std::fmt::Display| {
        BuildError::Permanent(format!("the attachment could not be decrypted: {err}"))
    };
    let mut input = std::io::Cursor::new(ciphertext);
    let mut decryptor = AttachmentDecryptor::new(&mut input, info).map_err(|err| failed(&err))?;
    let mut plaintext = Vec::new();
    decryptor
        .read_to_end(&mut plaintext)
        .map_err(|err| failed(&err))?;
    Ok(plaintext)
}
