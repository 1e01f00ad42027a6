//! Posting into rooms as the bot or a ghost: notices (failures, warnings,
//! command answers), each with a transaction id the caller derives from
//! what it is about, so a retry after a crash posts nothing twice.
//!
//! In an encrypted room the content is encrypted with the sender's device
//! for the room's joined members and sent as `m.room.encrypted` under the
//! same transaction id.

use anyhow::Context as _;
use ruma::{
    EventId, OwnedEventId, OwnedTransactionId, RoomId, UserId,
    api::client::message::send_message_event,
    events::{
        AnyMessageLikeEventContent,
        relation::{InReplyTo, Reply},
        room::message::{Relation, RoomMessageEventContent},
    },
    serde::Raw,
};

use crate::{bridge::Bridge, portal::encryption};

/// Sends `content` into the room as `sender` (the bot when it is the bot).
pub async fn post(
    bridge: &Bridge,
    room_id: &RoomId,
    sender: &UserId,
    txn_id: &str,
    content: &RoomMessageEventContent,
) -> anyhow::Result<OwnedEventId> {
    let txn_id = OwnedTransactionId::from(txn_id);
    let request = match encryption::settings(bridge, room_id, sender).await? {
        None => send_message_event::v3::Request::new(room_id.to_owned(), txn_id, content)
            .context("serializing the message")?,
        Some(settings) => {
            let members = encryption::joined_members(bridge, room_id, sender).await?;
            let plaintext = Raw::new(content)
                .context("serializing the message")?
                .cast_unchecked::<AnyMessageLikeEventContent>();
            let encrypted = bridge
                .crypto
                .device(sender)
                .await?
                .encrypt(room_id, &members, &settings, "m.room.message", &plaintext)
                .await
                .context("encrypting the message")?;
            send_message_event::v3::Request::new_raw(
                room_id.to_owned(),
                txn_id,
                "m.room.encrypted".into(),
                encrypted.cast_unchecked(),
            )
        }
    };
    let as_user = (sender != bridge.bot).then_some(sender);
    let response = bridge
        .homeserver
        .send_as(request, as_user, None)
        .await
        .context("posting into the room")?;
    Ok(response.event_id)
}

/// An `m.notice`, as a reply to `reply_to` when given.
pub async fn notice(
    bridge: &Bridge,
    room_id: &RoomId,
    sender: &UserId,
    txn_id: &str,
    reply_to: Option<&EventId>,
    text: &str,
) -> anyhow::Result<OwnedEventId> {
    let mut content = RoomMessageEventContent::notice_plain(text);
    if let Some(event_id) = reply_to {
        content.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(
            event_id.to_owned(),
        ))));
    }
    post(bridge, room_id, sender, txn_id, &content).await
}
