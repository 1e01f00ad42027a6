//! One fetched mail into its room: parsed, routed (the event its
//! In-Reply-To maps to, else the sender's latest portal, else the triage
//! room), and posted as the sender's ghost — text, a warning for anything
//! but a good signature, attachments as media. DSNs and Clientmodul error
//! mails become failure notices on the original message.
//!
//! Every event's transaction id is `kim-<uidl>-<part>`, so a redone post
//! after a crash yields the same events, never new ones.

use std::io::Read as _;

use anyhow::Context as _;
use matrix_sdk_crypto::AttachmentEncryptor;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, RoomId, UserId,
    api::client::media::create_content,
    events::{
        relation::{InReplyTo, Reply},
        room::message::{
            FileMessageEventContent, ImageMessageEventContent, MessageType, Relation,
            RoomMessageEventContent,
        },
        room::{EncryptedFile, MediaSource},
    },
};

use crate::{
    bridge::Bridge,
    kim::{
        address::KimAddress,
        incoming::{self, IncomingAttachment, IncomingMail, MailKind},
    },
    outbound::worker::show_failure,
    portal::{encryption, invites, notices},
    store::{
        self,
        inbound_mails::{self, MailState},
        messages::{MappedMessage, MessageState},
    },
};

/// Posts the mail and records the outcome; returns the UIDL's new state.
pub async fn post(bridge: &Bridge, uidl: &str, raw: &[u8]) -> anyhow::Result<MailState> {
    let mail = match incoming::parse(raw) {
        Ok(mail) => mail,
        Err(error) => return ignore(bridge, uidl, &format!("not a mail: {error}")).await,
    };
    match &mail.kind {
        MailKind::DeliveryStatus(report) => {
            let failed: Vec<String> = report
                .recipients
                .iter()
                .filter(|recipient| recipient.is_failure())
                .map(|recipient| {
                    let why = recipient.diagnostic.as_deref().unwrap_or(&recipient.status);
                    format!("{} ({why})", recipient.recipient)
                })
                .collect();
            if failed.is_empty() {
                return done(bridge, uidl, None).await;
            }
            let reason = format!("Zustellfehler: {}", failed.join("; "));
            failure(bridge, uidl, report.original_message_id.as_deref(), &reason).await
        }
        MailKind::ClientmodulError(report) => {
            let reason = format!("Fehler des KIM-Clientmoduls: {}", report.text.trim());
            failure(bridge, uidl, report.original_message_id.as_deref(), &reason).await
        }
        MailKind::Chat | MailKind::OutOfOffice | MailKind::OtherService { .. } => {
            message(bridge, uidl, &mail).await
        }
    }
}

/// Nothing to post: left on the server, recorded with why.
async fn ignore(bridge: &Bridge, uidl: &str, why: &str) -> anyhow::Result<MailState> {
    tracing::warn!(uidl, why, "KIM mail not posted");
    inbound_mails::set_state(&bridge.db, uidl, MailState::Ignored, None, None, Some(why)).await?;
    Ok(MailState::Ignored)
}

async fn done(
    bridge: &Bridge,
    uidl: &str,
    event_id: Option<&EventId>,
) -> anyhow::Result<MailState> {
    inbound_mails::set_state(
        &bridge.db,
        uidl,
        MailState::Posted,
        None,
        event_id.map(EventId::as_str),
        None,
    )
    .await?;
    Ok(MailState::Posted)
}

/// A report that a mail of ours failed: marked failed, shown on it.
async fn failure(
    bridge: &Bridge,
    uidl: &str,
    original: Option<&str>,
    reason: &str,
) -> anyhow::Result<MailState> {
    let original = original.map(|id| id.trim_matches(['<', '>']));
    let mapped = match original {
        Some(id) => store::messages::by_message_id(&bridge.db, id).await?,
        None => None,
    };
    let Some(mapped) = mapped.filter(|mapped| mapped.outbound) else {
        return ignore(
            bridge,
            uidl,
            "a failure report about no mail the bridge sent",
        )
        .await;
    };
    if let Some(event_id) = &mapped.event_id {
        show_failure(
            bridge,
            &mapped.room_id,
            event_id,
            &mapped.message_id,
            reason,
        )
        .await?;
    }
    store::messages::set_state(
        &bridge.db,
        &mapped.message_id,
        MessageState::Failed,
        Some(reason),
    )
    .await?;
    done(bridge, uidl, None).await
}

async fn message(bridge: &Bridge, uidl: &str, mail: &IncomingMail) -> anyhow::Result<MailState> {
    let Some(from) = mail.from.as_ref().and_then(|from| from.kim_address()) else {
        return ignore(bridge, uidl, "the sender is no KIM address").await;
    };
    let (room_id, reply_to) = match route(bridge, mail, &from).await? {
        Some(route) => route,
        None => return ignore(bridge, uidl, "no portal and no triage room").await,
    };
    // A retry goes where the first attempt went.
    let room_id = inbound_mails::fix_room(&bridge.db, uidl, &room_id).await?;
    ensure_in_portal(bridge, &room_id, &from).await?;
    let ghost = bridge.ghost_of(&from);

    let (text, notice) = match &mail.kind {
        MailKind::OutOfOffice => (format!("Abwesenheitsnotiz: {}", body(mail)), true),
        MailKind::OtherService { kind } => (
            format!("[{kind}] {}\n\n{}", mail.subject, body(mail)),
            false,
        ),
        _ => (body(mail), false),
    };
    let mut content = if notice {
        RoomMessageEventContent::notice_plain(text)
    } else {
        RoomMessageEventContent::text_plain(text)
    };
    content.relates_to = reply_to.as_ref().map(|event_id| reply(event_id));
    let event_id = notices::post(
        bridge,
        &room_id,
        &ghost,
        &format!("kim-{uidl}-text"),
        &content,
    )
    .await?;

    if !mail.verification.is_trustworthy() {
        let warning = format!(
            "⚠ Achtung, nicht vertrauenswürdig: {}",
            mail.verification.status_line()
        );
        notices::notice(
            bridge,
            &room_id,
            &ghost,
            &format!("kim-{uidl}-warning"),
            Some(&event_id),
            &warning,
        )
        .await?;
    }
    let encrypted_room = !mail.attachments.is_empty()
        && encryption::settings(bridge, &room_id, &ghost)
            .await?
            .is_some();
    for (index, attachment) in mail.attachments.iter().enumerate() {
        let source = upload(bridge, &ghost, attachment, encrypted_room).await?;
        let msgtype = if attachment.content_type.starts_with("image/") {
            MessageType::Image(ImageMessageEventContent::new(
                attachment.filename.clone(),
                source,
            ))
        } else {
            MessageType::File(FileMessageEventContent::new(
                attachment.filename.clone(),
                source,
            ))
        };
        let mut content = RoomMessageEventContent::new(msgtype);
        content.relates_to = Some(reply(&event_id));
        notices::post(
            bridge,
            &room_id,
            &ghost,
            &format!("kim-{uidl}-file{index}"),
            &content,
        )
        .await?;
    }

    let mut tx = bridge.db.begin().await?;
    if let Some(message_id) = &mail.message_id {
        let mut refs: Vec<String> = mail.in_reply_to.iter().cloned().collect();
        refs.extend(mail.references.iter().rev().cloned());
        refs.dedup();
        store::messages::insert(
            &mut *tx,
            &MappedMessage {
                message_id: message_id.clone(),
                room_id: room_id.clone(),
                event_id: Some(event_id.clone()),
                outbound: false,
                state: MessageState::Posted,
                failure: None,
                refs,
            },
        )
        .await?;
    }
    inbound_mails::set_state(
        &mut *tx,
        uidl,
        MailState::Posted,
        mail.message_id.as_deref(),
        Some(event_id.as_str()),
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(uidl, %room_id, %event_id, "KIM mail posted");
    Ok(MailState::Posted)
}

/// Uploads an attachment as the ghost. For an encrypted room it is
/// encrypted first (AES-CTR, matrix-sdk-crypto's `AttachmentEncryptor`):
/// the homeserver gets an opaque blob, the key travels in the encrypted
/// event's `file`.
async fn upload(
    bridge: &Bridge,
    ghost: &UserId,
    attachment: &IncomingAttachment,
    encrypt: bool,
) -> anyhow::Result<MediaSource> {
    let (data, encryption) = if encrypt {
        let mut input = std::io::Cursor::new(attachment.data.as_slice());
        let mut encryptor = AttachmentEncryptor::new(&mut input);
        let mut ciphertext = Vec::new();
        encryptor
            .read_to_end(&mut ciphertext)
            .context("encrypting an attachment")?;
        let info = encryptor.finish();
        (ciphertext, Some(info))
    } else {
        (attachment.data.clone(), None)
    };
    let mut request = create_content::v3::Request::new(data);
    if encryption.is_none() {
        request.filename = Some(attachment.filename.clone());
        request.content_type = Some(attachment.content_type.clone());
    }
    let uri = bridge
        .homeserver
        .send_as(request, Some(ghost), None)
        .await
        .context("uploading an attachment")?
        .content_uri;
    Ok(match encryption {
        None => MediaSource::Plain(uri),
        Some(info) => MediaSource::Encrypted(Box::new(EncryptedFile::new(
            uri,
            info.encryption_info,
            info.hashes,
        ))),
    })
}

fn body(mail: &IncomingMail) -> String {
    let text = mail.text.trim();
    if text.is_empty() {
        mail.subject.clone()
    } else {
        text.to_owned()
    }
}

fn reply(
    event_id: &EventId,
) -> Relation<ruma::events::room::message::RoomMessageEventContentWithoutRelation> {
    Relation::Reply(Reply::new(InReplyTo::new(event_id.to_owned())))
}

/// Where the mail goes: the room of the message it answers (In-Reply-To,
/// then References), the sender's latest portal, or the triage room.
async fn route(
    bridge: &Bridge,
    mail: &IncomingMail,
    from: &KimAddress,
) -> anyhow::Result<Option<(OwnedRoomId, Option<OwnedEventId>)>> {
    for id in mail.in_reply_to.iter().chain(mail.references.iter().rev()) {
        if let Some(mapped) =
            store::messages::by_message_id(&bridge.db, id.trim_matches(['<', '>'])).await?
        {
            return Ok(Some((mapped.room_id, mapped.event_id)));
        }
    }
    if let Some(room_id) = store::portals::latest_room_of(&bridge.db, from).await? {
        return Ok(Some((room_id, None)));
    }
    Ok(bridge
        .config
        .bridge
        .triage_room
        .clone()
        .map(|room_id| (room_id, None)))
}

/// The sender's ghost must be in the room: a new address (a practice
/// answering from another mailbox, or the triage room) is brought in by the
/// bot or a ghost already there.
async fn ensure_in_portal(
    bridge: &Bridge,
    room_id: &RoomId,
    from: &KimAddress,
) -> anyhow::Result<()> {
    let addresses = store::portals::addresses(&bridge.db, room_id).await?;
    if addresses.contains(from) {
        return Ok(());
    }
    let inviter = match addresses.first() {
        Some(address) => bridge.ghost_of(address),
        None => bridge.bot.clone(),
    };
    let bot = bridge.bot.clone();
    invites::invite(bridge, room_id, &inviter, from, &bot).await
}
