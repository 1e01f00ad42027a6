//! Room state: read all of it, read one entry, set one entry.

use axum::Router;
use ruma::{
    api::client::state::{get_state_event_for_key::{self, v3::StateEventFormat}, get_state_events, send_state_event},
    events::TimelineEventType,
};
use serde_json::Value as JsonValue;

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt},
    rooms::{NewEvent, RoomWriter, visibility::HistoryAccess},
    server::Homeserver,
    storage::{self, events, memberships},
    tim::room_rules,
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(get_all).endpoint(get_one).endpoint(put_one)
}

/// The state a user may read: current for members, as of leaving for
/// former members.
async fn readable_state(server: &Homeserver, room_id: &ruma::RoomId, user_id: &ruma::UserId) -> ApiResult<Vec<events::StoredEvent>> {
    let db = server.db.room_shard(room_id);
    let access = HistoryAccess::load(db, room_id, user_id).await?;
    let current = storage::stream::current(db).await?;
    let upto = access.readable_upto(current)?;
    Ok(if access.is_joined() { events::current_state(db, room_id).await? } else { events::state_at(db, room_id, upto, None).await? })
}

async fn get_all(server: Homeserver, args: Args<get_state_events::v3::Request>) -> ApiResult<get_state_events::v3::Response> {
    let session = args.session()?;
    let state = readable_state(&server, &args.body.room_id, &session.user_id).await?;
    Ok(get_state_events::v3::Response::new(state.iter().map(|e| e.to_client(None).raw()).collect()))
}

async fn get_one(server: Homeserver, args: Args<get_state_event_for_key::v3::Request>) -> ApiResult<get_state_event_for_key::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let kind = request.event_type.to_string();
    let state = readable_state(&server, &request.room_id, &session.user_id).await?;
    let event = state
        .into_iter()
        .find(|e| e.pdu.get("type").and_then(JsonValue::as_str) == Some(&kind) && e.pdu.get("state_key").and_then(JsonValue::as_str) == Some(&request.state_key))
        .ok_or_else(|| ApiError::not_found("State event not found"))?;
    let client = event.to_client(None);
    let json = match request.format {
        StateEventFormat::Event => serde_json::value::to_raw_value(&client.json)?,
        _ => serde_json::value::to_raw_value(client.content())?,
    };
    Ok(get_state_event_for_key::v3::Response::new(json))
}

/// Sets one entry, within the TI-M rules on state (`tim::room_rules`); a
/// room name or topic also sets its TI-M counterpart, in the same
/// transaction.
async fn put_one(server: Homeserver, args: Args<send_state_event::v3::Request>) -> ApiResult<send_state_event::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let kind = request.event_type.to_string();
    let content: JsonValue = serde_json::from_str(request.body.json().get())?;
    if !content.is_object() {
        return Err(ApiError::bad_json("State event content must be an object"));
    }
    room_rules::check_state_event(session.kind, &kind, &content)?;
    // Setting the same content again is a no-op that returns the existing
    // event (clients retry state PUTs, which carry no transaction id).
    let db = server.db.room_shard(&request.room_id);
    if let Some((event_id, current, sender)) = events::current_state_entry(db, &request.room_id, &kind, &request.state_key).await?
        && memberships::membership(db, &request.room_id, &session.user_id).await?.as_deref() == Some("join")
        && current == content
        && sender == session.user_id.as_str()
    {
        return Ok(send_state_event::v3::Response::new(event_id.try_into().map_err(|err: ruma::IdParseError| ApiError::Internal(err.into()))?));
    }
    let event = NewEvent::state(TimelineEventType::from(kind), request.state_key.clone(), content);
    let mirror = room_rules::mirror_of(&event);
    let mut writer = RoomWriter::open(&server, &request.room_id).await?;
    let event_id = writer.append(&session.user_id, event, None).await?;
    if let Some(mirror) = mirror {
        let current = events::current_state_entry(writer.conn(), &request.room_id, &mirror.kind.to_string(), "").await?;
        if room_rules::mirror_changes(&mirror, current.as_ref().map(|(_, content, _)| content)) {
            writer.append(&session.user_id, mirror, None).await?;
        }
    }
    writer.commit().await?;
    Ok(send_state_event::v3::Response::new(event_id))
}
