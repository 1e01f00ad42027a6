//! What members tell each other besides events: typing, read receipts,
//! read markers and presence.

use std::time::Duration;

use axum::Router;
use ruma::{
    EventId, RoomId, UserId,
    api::client::{
        presence::{get_presence, set_presence},
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
        typing::create_typing_event::{self, v3::Typing},
    },
    presence::PresenceState,
};
use serde_json::json;

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt},
    server::Homeserver,
    storage::{self, account_data, events, memberships, presence::{self, StatusMsg}, push_actions, receipts},
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(typing)
        .endpoint(receipt)
        .endpoint(read_markers)
        .endpoint(get_presence_status)
        .endpoint(set_presence_status)
}

/// 403 unless the user is joined to the room.
async fn require_joined(server: &Homeserver, room_id: &RoomId, user_id: &UserId) -> ApiResult<()> {
    match memberships::membership(server.db.room_shard(room_id), room_id, user_id).await?.as_deref() {
        Some("join") => Ok(()),
        _ => Err(ApiError::forbidden("You are not joined to this room")),
    }
}

/// Wakes the syncs of every joined member of the room.
async fn notify_members(server: &Homeserver, room_id: &RoomId) -> ApiResult<()> {
    let members = memberships::members_with(server.db.room_shard(room_id), room_id, &["join"]).await?;
    server.notifier.notify_users(members.iter());
    Ok(())
}

async fn typing(server: Homeserver, args: Args<create_typing_event::v3::Request>) -> ApiResult<create_typing_event::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    if request.user_id != session.user_id {
        return Err(ApiError::forbidden("You may only set your own typing state"));
    }
    require_joined(&server, &request.room_id, &session.user_id).await?;
    let timeout = match &request.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    if server.typing.set(&request.room_id, &session.user_id, timeout).await {
        notify_members(&server, &request.room_id).await?;
    }
    Ok(create_typing_event::v3::Response::new())
}

async fn receipt(server: Homeserver, args: Args<create_receipt::v3::Request>) -> ApiResult<create_receipt::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let thread = request.thread.as_str().unwrap_or("");
    match &request.receipt_type {
        ReceiptType::FullyRead => set_fully_read(&server, &request.room_id, &session.user_id, &request.event_id).await?,
        ReceiptType::Read => set_receipt(&server, &request.room_id, &session.user_id, "m.read", thread, &request.event_id).await?,
        ReceiptType::ReadPrivate => set_receipt(&server, &request.room_id, &session.user_id, "m.read.private", thread, &request.event_id).await?,
        other => return Err(ApiError::invalid_param(format!("Unsupported receipt type {other}"))),
    }
    Ok(create_receipt::v3::Response::new())
}

async fn read_markers(server: Homeserver, args: Args<set_read_marker::v3::Request>) -> ApiResult<set_read_marker::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    if let Some(event_id) = &request.fully_read {
        set_fully_read(&server, &request.room_id, &session.user_id, event_id).await?;
    }
    if let Some(event_id) = &request.read_receipt {
        set_receipt(&server, &request.room_id, &session.user_id, "m.read", "", event_id).await?;
    }
    if let Some(event_id) = &request.private_read_receipt {
        set_receipt(&server, &request.room_id, &session.user_id, "m.read.private", "", event_id).await?;
    }
    Ok(set_read_marker::v3::Response::new())
}

/// The stream position of an event the user can refer to (joined, event
/// in this room).
async fn receipt_target(server: &Homeserver, room_id: &RoomId, user_id: &UserId, event_id: &EventId) -> ApiResult<i64> {
    require_joined(server, room_id, user_id).await?;
    events::stream_pos_of(server.db.room_shard(room_id), room_id, event_id).await?.ok_or_else(|| ApiError::not_found("Event not found in this room"))
}

async fn set_receipt(server: &Homeserver, room_id: &RoomId, user_id: &UserId, receipt_type: &str, thread: &str, event_id: &EventId) -> ApiResult<()> {
    let event_pos = receipt_target(server, room_id, user_id, event_id).await?;
    let mut tx = server.db.room_shard(room_id).begin().await?;
    receipts::set(&mut tx, room_id, receipt_type, user_id, thread, event_id.as_str(), event_pos).await?;
    push_actions::clear_read(&mut tx, room_id, user_id, event_pos).await?;
    tx.commit().await?;
    if receipt_type == "m.read" {
        notify_members(server, room_id).await
    } else {
        server.notifier.notify_users([&user_id.to_owned()]);
        Ok(())
    }
}

/// The fully-read marker is the user's room account data `m.fully_read`.
async fn set_fully_read(server: &Homeserver, room_id: &RoomId, user_id: &UserId, event_id: &EventId) -> ApiResult<()> {
    receipt_target(server, room_id, user_id, event_id).await?;
    let mut tx = server.db.user_shard(user_id).begin().await?;
    account_data::set(&mut tx, user_id, Some(room_id), "m.fully_read", &json!({ "event_id": event_id })).await?;
    tx.commit().await?;
    server.notifier.notify_users([&user_id.to_owned()]);
    Ok(())
}

async fn get_presence_status(server: Homeserver, args: Args<get_presence::v3::Request>) -> ApiResult<get_presence::v3::Response> {
    let session = args.session()?;
    let target = &args.body.user_id;
    if *target != session.user_id && !crate::rooms::membership::share_a_room(&server, &session.user_id, target).await? {
        return Err(ApiError::forbidden("You do not share a room with this user"));
    }
    let Some(row) = presence::get(server.db.user_shard(target), target).await? else {
        return Ok(get_presence::v3::Response::new(PresenceState::Offline));
    };
    let last_active = server.activity.last_active(std::slice::from_ref(target)).await.and_then(|mut found| found.remove(target));
    let (ago, currently_active) = crate::presence::activity_fields(&row.presence, row.last_active_ts, last_active, storage::now_ms());
    let mut response = get_presence::v3::Response::new(PresenceState::from(row.presence.as_str()));
    response.status_msg = row.status_msg;
    response.last_active_ago = Some(Duration::from_millis(ago.unsigned_abs()));
    response.currently_active = Some(currently_active);
    Ok(response)
}

async fn set_presence_status(server: Homeserver, args: Args<set_presence::v3::Request>) -> ApiResult<set_presence::v3::Response> {
    let session = args.session()?;
    if args.body.user_id != session.user_id {
        return Err(ApiError::forbidden("You may only set your own presence"));
    }
    crate::presence::set(&server, &session.user_id, &args.body.presence, StatusMsg::Set(args.body.status_msg.as_deref())).await?;
    Ok(set_presence::v3::Response::new())
}
