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

use std::time::Duration;

use ruma::events::{
    AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
    room::{
        member::RoomMemberEvent,
        message::{MessageType, RoomMessageEvent},
    },
};

use crate::{
    bridge::Bridge,
    matrix::client::CallError,
    outbound,
    portal::{invites, management},
    store::transactions::{self, EventKind},
};

/// The longest wait between attempts while something is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

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
    })
}

async fn handle(bridge: &Bridge, body: serde_json::Value) -> anyhow::Result<()> {
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
