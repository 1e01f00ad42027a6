//! Room message → queued mail: one per event, with its own Message-ID, the
//! In-Reply-To/References of the event it replies to (or of its thread),
//! and the portal's addresses as recipients. Queued in one database
//! transaction with the event ↔ Message-ID mapping; a redone event (crash
//! before the dispatcher removed it) finds its mapping and queues nothing.
//! Edits become correction mails, redactions withdraw a queued mail or
//! send a retraction.

use ruma::{
    EventId, RoomId, UserId,
    events::room::{
        message::{MessageType, OriginalRoomMessageEvent, Relation, RoomMessageEventContent},
        redaction::OriginalRoomRedactionEvent,
    },
};

use crate::{
    bridge::Bridge,
    store::{
        self,
        messages::{MappedMessage, MessageState},
        outbound_queue::QueuedMail,
    },
};

/// A room message becomes a mail. An edit of a message that went out as
/// mail becomes a correction mail answering it: KIM cannot change a sent
/// mail, and the practice must not act on the old text unawares.
pub async fn enqueue(bridge: &Bridge, event: &OriginalRoomMessageEvent) -> anyhow::Result<()> {
    let (content, replied_to) = match &event.content.relates_to {
        Some(Relation::Replacement(replacement)) => {
            let Some(original) =
                store::messages::by_event_id(&bridge.db, &replacement.event_id).await?
            else {
                return Ok(());
            };
            if !original.outbound {
                return Ok(());
            }
            let mut msgtype = replacement.new_content.msgtype.clone();
            if let MessageType::Text(text) = &mut msgtype {
                text.body = format!("Korrektur der vorherigen Nachricht:\n\n{}", text.body);
                text.formatted = None;
            }
            (
                RoomMessageEventContent::new(msgtype),
                Some(replacement.event_id.clone()),
            )
        }
        Some(Relation::Reply(reply)) => (
            event.content.clone(),
            Some(reply.in_reply_to.event_id.clone()),
        ),
        Some(Relation::Thread(thread)) => (
            event.content.clone(),
            Some(
                thread
                    .in_reply_to
                    .as_ref()
                    .filter(|_| !thread.is_falling_back)
                    .map_or_else(|| thread.event_id.clone(), |reply| reply.event_id.clone()),
            ),
        ),
        _ => (event.content.clone(), None),
    };
    match &content.msgtype {
        MessageType::Text(_)
        | MessageType::Emote(_)
        | MessageType::File(_)
        | MessageType::Image(_)
        | MessageType::Audio(_)
        | MessageType::Video(_) => {}
        // Notices are automated; other types carry nothing a mail can.
        _ => return Ok(()),
    }
    queue_mail(
        bridge,
        &event.room_id,
        &event.event_id,
        &event.sender,
        &content,
        replied_to.as_deref(),
    )
    .await
}

/// A redaction of a bridged message. Still queued: the mail is withdrawn
/// and never leaves. Already sent: the practice gets a mail answering it
/// that the sender withdrew it.
pub async fn withdraw(
    bridge: &Bridge,
    redaction: &OriginalRoomRedactionEvent,
) -> anyhow::Result<()> {
    let Some(redacted) = redaction
        .content
        .redacts
        .as_ref()
        .or(redaction.redacts.as_ref())
    else {
        return Ok(());
    };
    let Some(original) = store::messages::by_event_id(&bridge.db, redacted).await? else {
        return Ok(());
    };
    if !original.outbound {
        return Ok(());
    }
    let mut tx = bridge.db.begin().await?;
    if store::outbound_queue::remove(&mut *tx, &original.message_id).await? {
        store::messages::set_state(
            &mut *tx,
            &original.message_id,
            MessageState::Withdrawn,
            None,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            message_id = original.message_id,
            "queued KIM mail withdrawn"
        );
        return Ok(());
    }
    tx.rollback().await?;
    if original.state == MessageState::Sent {
        send_retraction(
            bridge,
            &redaction.room_id,
            &redaction.event_id,
            &redaction.sender,
            redacted,
        )
        .await?;
    }
    Ok(())
}

/// The mail telling the practice that the message `redacted` (sent as
/// mail) was withdrawn in the room; `event_id` is what it is mapped to.
pub async fn send_retraction(
    bridge: &Bridge,
    room_id: &RoomId,
    event_id: &EventId,
    sender: &UserId,
    redacted: &EventId,
) -> anyhow::Result<()> {
    let content = RoomMessageEventContent::text_plain(
        "Die vorherige Nachricht wurde vom Absender im Chat zurückgezogen. Bitte nicht mehr \
         berücksichtigen. (The previous message was withdrawn by its sender.)",
    );
    queue_mail(bridge, room_id, event_id, sender, &content, Some(redacted)).await
}

/// Queues one mail for the portal's addresses, mapped to `event_id`; a
/// redone event (its mapping exists) queues nothing.
async fn queue_mail(
    bridge: &Bridge,
    room_id: &RoomId,
    event_id: &EventId,
    sender: &UserId,
    content: &RoomMessageEventContent,
    replied_to: Option<&EventId>,
) -> anyhow::Result<()> {
    let recipients = store::portals::addresses(&bridge.db, room_id).await?;
    if recipients.is_empty() {
        return Ok(());
    }
    if store::messages::by_event_id(&bridge.db, event_id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let refs = references(bridge, replied_to).await?;
    let message_id = crate::kim::outgoing::new_message_id(&bridge.config.mailbox.address);
    let mut tx = bridge.db.begin().await?;
    store::messages::insert(
        &mut *tx,
        &MappedMessage {
            message_id: message_id.clone(),
            room_id: room_id.to_owned(),
            event_id: Some(event_id.to_owned()),
            outbound: true,
            state: MessageState::Queued,
            failure: None,
            refs,
        },
    )
    .await?;
    store::outbound_queue::enqueue(
        &mut *tx,
        &QueuedMail {
            message_id: message_id.clone(),
            room_id: room_id.to_string(),
            event_id: event_id.to_string(),
            sender: sender.to_string(),
            content: serde_json::to_value(content)?,
            recipients: recipients.iter().map(ToString::to_string).collect(),
            attempts: 0,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%event_id, %message_id, recipients = recipients.len(), "mail queued");
    bridge.wake_outbound();
    Ok(())
}

/// In-Reply-To first, then what that message referred to (RFC 5322:
/// References are the parent's References plus the parent).
async fn references(bridge: &Bridge, replied_to: Option<&EventId>) -> anyhow::Result<Vec<String>> {
    let Some(event_id) = replied_to else {
        return Ok(Vec::new());
    };
    let Some(parent) = store::messages::by_event_id(&bridge.db, event_id).await? else {
        return Ok(Vec::new());
    };
    let mut refs = vec![parent.message_id];
    refs.extend(parent.refs.into_iter().take(20));
    Ok(refs)
}
