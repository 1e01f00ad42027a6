//! Room message → queued mail: one per event, with its own Message-ID, the
//! In-Reply-To/References of the event it replies to (or of its thread),
//! and the portal's addresses as recipients. Queued in one database
//! transaction with the event ↔ Message-ID mapping; a redone event (crash
//! before the dispatcher removed it) finds its mapping and queues nothing.

use ruma::{
    EventId,
    events::room::message::{MessageType, OriginalRoomMessageEvent, Relation},
};

use crate::{
    bridge::Bridge,
    store::{
        self,
        messages::{MappedMessage, MessageState},
        outbound_queue::QueuedMail,
    },
};

pub async fn enqueue(bridge: &Bridge, event: &OriginalRoomMessageEvent) -> anyhow::Result<()> {
    let recipients = store::portals::addresses(&bridge.db, &event.room_id).await?;
    if recipients.is_empty() {
        return Ok(());
    }
    match &event.content.msgtype {
        MessageType::Text(_)
        | MessageType::Emote(_)
        | MessageType::File(_)
        | MessageType::Image(_)
        | MessageType::Audio(_)
        | MessageType::Video(_) => {}
        // Notices are automated; other types carry nothing a mail can.
        _ => return Ok(()),
    }
    let replied_to = match &event.content.relates_to {
        Some(Relation::Reply(reply)) => Some(reply.in_reply_to.event_id.clone()),
        Some(Relation::Thread(thread)) => Some(
            thread
                .in_reply_to
                .as_ref()
                .filter(|_| !thread.is_falling_back)
                .map_or_else(|| thread.event_id.clone(), |reply| reply.event_id.clone()),
        ),
        // An edit is not a new mail; KIM has no way to change a sent one.
        Some(Relation::Replacement(_)) => return Ok(()),
        _ => None,
    };
    if store::messages::by_event_id(&bridge.db, &event.event_id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let refs = references(bridge, replied_to.as_deref()).await?;
    let message_id = crate::kim::outgoing::new_message_id(&bridge.config.mailbox.address);
    let mut tx = bridge.db.begin().await?;
    store::messages::insert(
        &mut *tx,
        &MappedMessage {
            message_id: message_id.clone(),
            room_id: event.room_id.clone(),
            event_id: Some(event.event_id.clone()),
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
            room_id: event.room_id.to_string(),
            event_id: event.event_id.to_string(),
            sender: event.sender.to_string(),
            content: serde_json::to_value(&event.content)?,
            recipients: recipients.iter().map(ToString::to_string).collect(),
            attempts: 0,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(event_id = %event.event_id, %message_id, recipients = recipients.len(), "mail queued");
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
