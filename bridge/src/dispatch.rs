//! Works off the room events the homeserver pushed (queued by the
//! transaction endpoint), in order: memberships of ghosts and the bot
//! (portals, management rooms), `!kim` commands, and room messages that
//! become KIM mail.
//!
//! An event is removed from the queue only after it was handled, so a crash
//! redoes it; every handler is idempotent (membership calls are, mail is
//! queued once per event id, notices carry derived transaction ids). A
//! temporary failure (homeserver or database away) stops the queue until
//! the next attempt, so order holds; a permanent one is logged and skipped.
//!
//! An `m.room.encrypted` event is decrypted with the device of a bridge
//! user in the room (a portal ghost, else the bot) and then handled like
//! the plaintext event. Its room key may still be on its way (a to-device
//! message in a later transaction): the event then stays queued and is
//! tried again, for at most [`ROOM_KEY_PATIENCE`] after it was sent; after
//! that the room gets a notice that a message could not be read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use matrix_sdk_crypto::MegolmError;

use ruma::events::{
    AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
    room::{
        member::RoomMemberEvent,
        message::{MessageType, RoomMessageEvent},
        redaction::RoomRedactionEvent,
    },
};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, serde::Raw};

use crate::{
    bridge::Bridge,
    crypto::CryptoError,
    matrix::client::CallError,
    outbound,
    portal::{invites, management, notices},
    store::transactions::{self, EventKind},
};

/// The longest wait between attempts while something is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long after it was sent an encrypted event waits for its room key.
pub const ROOM_KEY_PATIENCE: Duration = Duration::from_secs(120);

/// An encrypted event whose room key has not arrived yet: kept queued.
#[derive(Debug, thiserror::Error)]
#[error("the room key of an encrypted event has not arrived yet")]
struct RoomKeyPending;

pub async fn run(bridge: Bridge) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match work_off(&bridge).await {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                tokio::select! {
                    () = bridge.dispatcher_woken() => {}
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    ?backoff,
                    "handling events failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Handles everything queued; returns on an empty queue or a temporary
/// failure.
async fn work_off(bridge: &Bridge) -> anyhow::Result<()> {
    loop {
        let batch = transactions::next(&bridge.db, EventKind::Timeline, 50).await?;
        if batch.is_empty() {
            return Ok(());
        }
        for queued in batch {
            if let Err(error) = handle(bridge, queued.body).await {
                if is_temporary(&error) {
                    return Err(error);
                }
                tracing::warn!(
                    error = format!("{error:#}"),
                    txn_id = queued.txn_id,
                    "skipping an event that cannot be handled"
                );
            }
            transactions::remove(&bridge.db, queued.id).await?;
        }
    }
}

/// Worth trying again: the homeserver was away or the database failed.
pub fn is_temporary(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<CallError>()
            .is_some_and(CallError::is_transient)
            || cause.downcast_ref::<sqlx::Error>().is_some()
            || cause.downcast_ref::<RoomKeyPending>().is_some()
    })
}

async fn handle(bridge: &Bridge, body: serde_json::Value) -> anyhow::Result<()> {
    if body.get("type").and_then(|t| t.as_str()) == Some("m.room.encrypted") {
        return match decrypt(bridge, &body).await? {
            Some(decrypted) => handle_plaintext(bridge, decrypted).await,
            None => Ok(()),
        };
    }
    handle_plaintext(bridge, body).await
}

/// The event an `m.room.encrypted` event carries, `None` when there is
/// nothing to handle (the bridge's own, or given up on with a notice).
async fn decrypt(
    bridge: &Bridge,
    body: &serde_json::Value,
) -> anyhow::Result<Option<serde_json::Value>> {
    let field = |name: &str| body.get(name).and_then(|value| value.as_str());
    let room_id: OwnedRoomId = field("room_id")
        .context("an encrypted event without room_id")?
        .try_into()?;
    let sender: OwnedUserId = field("sender")
        .context("an encrypted event without sender")?
        .try_into()?;
    let event_id: OwnedEventId = field("event_id")
        .context("an encrypted event without event_id")?
        .try_into()?;
    if sender == bridge.bot || bridge.address_of_ghost(&sender).is_some() {
        return Ok(None);
    }
    let reader = reader(bridge, &room_id).await?;
    let raw = Raw::new(body)?.cast_unchecked();
    let device = bridge.crypto.device(&reader).await?;
    match device.decrypt(&room_id, &raw).await {
        Ok(decrypted) => {
            let mut event: serde_json::Value = serde_json::from_str(decrypted.json().get())?;
            if let Some(fields) = event.as_object_mut() {
                fields
                    .entry("room_id")
                    .or_insert_with(|| room_id.as_str().into());
            }
            Ok(Some(event))
        }
        Err(CryptoError::Megolm(MegolmError::MissingRoomKey(_)))
            if age(body) < ROOM_KEY_PATIENCE =>
        {
            Err(RoomKeyPending.into())
        }
        Err(CryptoError::Megolm(error)) => {
            tracing::warn!(%room_id, %event_id, %error, "an encrypted message could not be decrypted");
            notices::notice(
                bridge,
                &room_id,
                &reader,
                &format!("kim-undecryptable-{event_id}"),
                Some(&event_id),
                "Diese Nachricht konnte nicht entschlüsselt werden und wurde nicht per KIM \
                 versendet. Bitte erneut senden. (This message could not be decrypted and was \
                 not sent by KIM. Please send it again.)",
            )
            .await?;
            Ok(None)
        }
        Err(error) => Err(error).context("decrypting"),
    }
}

/// The bridge user whose device decrypts in `room_id`: a portal ghost (its
/// device is in the room, so members' clients shared the room key with
/// it), else the bot (management rooms).
async fn reader(bridge: &Bridge, room_id: &RoomId) -> anyhow::Result<OwnedUserId> {
    let addresses = crate::store::portals::addresses(&bridge.db, room_id).await?;
    Ok(addresses
        .first()
        .map_or_else(|| bridge.bot.clone(), |address| bridge.ghost_of(address)))
}

/// How long ago the event was sent (by its `origin_server_ts`).
fn age(body: &serde_json::Value) -> Duration {
    let sent = body
        .get("origin_server_ts")
        .and_then(serde_json::Value::as_u64)
        .map_or(UNIX_EPOCH, |millis| {
            UNIX_EPOCH + Duration::from_millis(millis)
        });
    SystemTime::now()
        .duration_since(sent)
        .unwrap_or(Duration::ZERO)
}

async fn handle_plaintext(bridge: &Bridge, body: serde_json::Value) -> anyhow::Result<()> {
    let Ok(event) = serde_json::from_value::<AnyTimelineEvent>(body) else {
        // Not an event shape ruma knows (redacted, custom): nothing to do.
        return Ok(());
    };
    match event {
        AnyTimelineEvent::State(AnyStateEvent::RoomMember(member)) => {
            membership(bridge, member).await
        }
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(message)) => {
            room_message(bridge, message).await
        }
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomRedaction(
            RoomRedactionEvent::Original(redaction),
        )) => outbound::queue::withdraw(bridge, &redaction).await,
        _ => Ok(()),
    }
}

async fn membership(bridge: &Bridge, event: RoomMemberEvent) -> anyhow::Result<()> {
    let StateEvent::Original(event) = event else {
        return Ok(());
    };
    let Ok(target) = ruma::UserId::parse(&event.state_key) else {
        return Ok(());
    };
    if target == bridge.bot {
        if event.content.membership == ruma::events::room::member::MembershipState::Invite {
            let is_direct = event.content.is_direct.unwrap_or(false);
            invites::bot_invited(bridge, &event.room_id, &event.sender, is_direct).await?;
        }
        return Ok(());
    }
    if let Some(address) = bridge.address_of_ghost(&target) {
        invites::ghost_membership(
            bridge,
            &event.room_id,
            &target,
            &address,
            &event.sender,
            &event.content.membership,
        )
        .await?;
    }
    Ok(())
}

async fn room_message(bridge: &Bridge, event: RoomMessageEvent) -> anyhow::Result<()> {
    let MessageLikeEvent::Original(event) = event else {
        return Ok(());
    };
    // What the bridge posted itself never goes back out.
    if event.sender == bridge.bot || bridge.address_of_ghost(&event.sender).is_some() {
        return Ok(());
    }
    if let MessageType::Text(text) = &event.content.msgtype {
        let prefix = &bridge.config.management.command_prefix;
        if let Some(arguments) = text.body.strip_prefix(prefix.as_str())
            && (arguments.is_empty() || arguments.starts_with(char::is_whitespace))
        {
            return management::command(
                bridge,
                &event.room_id,
                &event.sender,
                &event.event_id,
                arguments,
            )
            .await;
        }
    }
    outbound::queue::enqueue(bridge, &event).await
}
