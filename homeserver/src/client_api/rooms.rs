//! `POST /createRoom`: the room's first events, written by its one writer
//! in a single transaction (the room exists completely or not at all).
//! The TI-M rules (`tim::room_rules`, `tim::permissions`) judge the request
//! and the initial state before anything is written.

use axum::Router;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, RoomVersionId, UserId,
    api::{
        client::room::{Visibility, create_room::{self, v3::RoomPreset}},
        error::ErrorKind,
    },
    events::TimelineEventType,
};
use serde_json::{Map, Value as JsonValue, json};

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt, Session, limits},
    rooms::{NewEvent, RoomWriter, membership::{MembershipRequest, member_content}},
    server::Homeserver,
    storage::aliases,
    tim::{permissions, room_rules},
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(create_room)
}

async fn create_room(server: Homeserver, args: Args<create_room::v3::Request>) -> ApiResult<create_room::v3::Response> {
    let session = args.session()?.clone();
    let creator = &session.user_id;
    let request = args.body;

    let version = room_rules::room_version(request.room_version.as_ref())?;
    room_rules::check_create_room(&session, &request)?;
    let state = initial_state(&request)?;
    room_rules::check_initial_state(session.kind, &state)?;
    for invitee in &request.invite {
        permissions::check_invite(&server, &session, invitee).await?;
    }
    let room_id = RoomId::new_v1(server.server_name());
    let alias = match &request.room_alias_name {
        Some(name) => Some(reserve_alias(&server, name, &room_id, &session).await?),
        None => None,
    };

    let created = write_initial_events(&server, &room_id, &version, creator, &request, alias.as_deref(), state).await;
    if let Err(err) = created {
        if let Some(alias) = &alias {
            aliases::remove(server.db.alias_shard(alias), alias).await?;
        }
        return Err(err);
    }
    if request.visibility == Visibility::Public {
        crate::storage::directory::set_published(server.db.room_shard(&room_id), &room_id, true).await?;
    }
    tracing::info!(%room_id, %creator, "room created");
    Ok(create_room::v3::Response::new(room_id))
}

/// Claims `#name:server` for the new room; `M_ROOM_IN_USE` when taken,
/// `M_EXCLUSIVE` inside another's appservice namespace.
async fn reserve_alias(server: &Homeserver, name: &str, room_id: &RoomId, creator: &Session) -> ApiResult<OwnedRoomAliasId> {
    let invalid = || ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, "Invalid room alias name");
    // ruma's parser does not hold aliases to the spec's length.
    let alias = RoomAliasId::parse(format!("#{name}:{}", server.server_name())).map_err(|_| invalid())?;
    if alias.as_str().len() > limits::MAX_ID_BYTES {
        return Err(invalid());
    }
    server.appservices.ensure_alias_unclaimed(alias.as_str(), creator.appservice.as_deref())?;
    if !aliases::add(server.db.alias_shard(&alias), &alias, room_id, &creator.user_id).await? {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::RoomInUse, "Room alias already taken"));
    }
    Ok(alias)
}

/// The preset the request names, or the one its visibility implies.
fn preset_of(request: &create_room::v3::Request) -> RoomPreset {
    request.preset.clone().unwrap_or(match request.visibility {
        Visibility::Public => RoomPreset::PublicChat,
        _ => RoomPreset::PrivateChat,
    })
}

/// The state after the power levels and alias: the preset's, the
/// client's `initial_state` (replacing the preset's where they meet),
/// name, topic, and the TI-M mirrors of name and topic.
fn initial_state(request: &create_room::v3::Request) -> ApiResult<Vec<NewEvent>> {
    let (join_rule, guest_access) = match preset_of(request) {
        RoomPreset::PublicChat => ("public", "forbidden"),
        _ => ("invite", "can_join"),
    };
    let mut state: Vec<NewEvent> = vec![
        NewEvent::state(TimelineEventType::RoomJoinRules, "", json!({ "join_rule": join_rule })),
        NewEvent::state(TimelineEventType::RoomHistoryVisibility, "", json!({ "history_visibility": room_rules::DEFAULT_HISTORY_VISIBILITY })),
        NewEvent::state(TimelineEventType::RoomGuestAccess, "", json!({ "guest_access": guest_access })),
    ];
    for raw in &request.initial_state {
        let event = object_of(raw.json().get(), "initial_state")?;
        let kind = event.get("type").and_then(JsonValue::as_str).ok_or_else(|| ApiError::bad_json("initial_state event without type"))?;
        let state_key = event.get("state_key").and_then(JsonValue::as_str).unwrap_or("");
        let content = event.get("content").cloned().unwrap_or_else(|| json!({}));
        if matches!(kind, "m.room.create" | "m.room.member" | "m.room.power_levels") {
            return Err(ApiError::bad_json(format!("initial_state may not contain {kind}")));
        }
        state.retain(|existing| !(existing.kind.to_string() == kind && existing.state_key.as_deref() == Some(state_key)));
        state.push(NewEvent::state(kind.into(), state_key, content));
    }
    if let Some(name) = &request.name {
        state.push(NewEvent::state(TimelineEventType::RoomName, "", json!({ "name": name })));
    }
    if let Some(topic) = &request.topic {
        state.push(NewEvent::state(TimelineEventType::RoomTopic, "", json!({ "topic": topic })));
    }
    room_rules::add_mirrors(&mut state);
    Ok(state)
}

/// The events of a new room in the spec's order: create, creator's join,
/// power levels, canonical alias, `state` (see [`initial_state`]), invites.
async fn write_initial_events(
    server: &Homeserver,
    room_id: &RoomId,
    version: &RoomVersionId,
    creator: &UserId,
    request: &create_room::v3::Request,
    alias: Option<&RoomAliasId>,
    state: Vec<NewEvent>,
) -> ApiResult<OwnedRoomId> {
    let mut writer = RoomWriter::create(server, room_id, version, creator).await?;

    let mut create_content = match &request.creation_content {
        Some(raw) => object_of(raw.json().get(), "creation_content")?,
        None => Map::new(),
    };
    create_content.insert("creator".into(), creator.as_str().into());
    create_content.insert("room_version".into(), version.as_str().into());
    writer.append(creator, NewEvent::state(TimelineEventType::RoomCreate, "", JsonValue::Object(create_content)), None).await?;

    let join = MembershipRequest { sender: creator, target: creator, membership: "join", reason: None, is_direct: false };
    writer.append(creator, NewEvent::state(TimelineEventType::RoomMember, creator.as_str(), member_content(server, &join).await?), None).await?;

    let mut power_levels = default_power_levels(creator, &preset_of(request), &request.invite);
    if let Some(overrides) = &request.power_level_content_override {
        for (key, value) in object_of(overrides.json().get(), "power_level_content_override")? {
            power_levels.insert(key, value);
        }
    }
    writer.append(creator, NewEvent::state(TimelineEventType::RoomPowerLevels, "", JsonValue::Object(power_levels)), None).await?;

    if let Some(alias) = alias {
        writer.append(creator, NewEvent::state(TimelineEventType::RoomCanonicalAlias, "", json!({ "alias": alias })), None).await?;
    }
    for event in state {
        writer.append(creator, event, None).await?;
    }

    for invitee in &request.invite {
        let invite = MembershipRequest { sender: creator, target: invitee, membership: "invite", reason: None, is_direct: request.is_direct };
        let content = member_content(server, &invite).await?;
        writer.append(creator, NewEvent::state(TimelineEventType::RoomMember, invitee.as_str(), content), None).await?;
    }
    writer.commit().await?;
    Ok(room_id.to_owned())
}

/// The spec's default power levels: the creator 100, invitees of a trusted
/// private chat 100 as well.
fn default_power_levels(creator: &UserId, preset: &RoomPreset, invites: &[ruma::OwnedUserId]) -> Map<String, JsonValue> {
    let mut users = Map::new();
    users.insert(creator.to_string(), 100.into());
    if *preset == RoomPreset::TrustedPrivateChat {
        for invitee in invites {
            users.insert(invitee.to_string(), 100.into());
        }
    }
    let levels = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": { "room": 50 },
    });
    match levels {
        JsonValue::Object(map) => map,
        _ => Map::new(),
    }
}

/// A JSON object from a client-supplied raw field; anything else is M_BAD_JSON.
fn object_of(json: &str, field: &str) -> ApiResult<Map<String, JsonValue>> {
    match serde_json::from_str(json) {
        Ok(JsonValue::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_json(format!("{field} must be a JSON object"))),
    }
}
