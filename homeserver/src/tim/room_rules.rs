//! Room rules: which rooms may exist and what may happen in them. Some hold
//! for everyone (versions, room type, invites at creation, history
//! visibility, reactions, threads, redactions, the custom name and topic
//! events); the rest keep insured persons' rooms private and encrypted.

use ruma::{
    MilliSecondsSinceUnixEpoch, RoomVersionId,
    api::{client::room::{Visibility, create_room}, error::ErrorKind},
    events::TimelineEventType,
};
use serde_json::{Map, Value as JsonValue};

use super::accounts::AccountKind;
use crate::{
    http::{ApiError, ApiResult, Session},
    rooms::NewEvent,
};

/// A_26202, A_26203: the room versions clients may create.
pub const ROOM_VERSIONS: &[RoomVersionId] = &[RoomVersionId::V9, RoomVersionId::V10];
/// A_26248: the version of rooms created without one.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V10;
/// A_25481: a room's history is readable from a member's invite on, unless
/// its creator chose otherwise.
pub const DEFAULT_HISTORY_VISIBILITY: &str = "invited";

/// A_28596: the room type of TI-M 1.2's rooms, which a TI-M 1.1 server must
/// not create (`de.gematik.tim.roomtype.default.v1`, A_25426, is the one to
/// use).
const FORBIDDEN_ROOM_TYPE: &str = "de.gematik.tim.roomtype.default.v2";
/// How old an event may be and still be redacted (A_28358).
const REDACTION_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// A_26202, A_26203, A_26248: the version to create, 400
/// `M_UNSUPPORTED_ROOM_VERSION` for any but 9 and 10.
pub fn room_version(requested: Option<&RoomVersionId>) -> ApiResult<RoomVersionId> {
    let version = requested.cloned().unwrap_or(DEFAULT_ROOM_VERSION);
    if !ROOM_VERSIONS.contains(&version) {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::UnsupportedRoomVersion, format!("Room version {version} is not supported")));
    }
    Ok(version)
}

/// What `createRoom` is refused for before any state is built (403
/// `M_FORBIDDEN`):
/// - A_28596: `creation_content.type` `de.gematik.tim.roomtype.default.v2`;
/// - A_25368-01: more than one user in `invite`;
/// - A_26015-02: an insured person publishing the room in the directory.
pub fn check_create_room(creator: &Session, request: &create_room::v3::Request) -> ApiResult<()> {
    if let Some(raw) = &request.creation_content {
        let content: JsonValue = serde_json::from_str(raw.json().get()).map_err(|err| ApiError::bad_json(format!("creation_content: {err}")))?;
        if content.get("type").and_then(JsonValue::as_str) == Some(FORBIDDEN_ROOM_TYPE) {
            return Err(ApiError::forbidden(format!("Rooms of type {FORBIDDEN_ROOM_TYPE} cannot be created")));
        }
    }
    if request.invite.len() > 1 {
        return Err(ApiError::forbidden("At most one user can be invited when a room is created"));
    }
    check_room_publication(creator.kind, request.visibility == Visibility::Public)
}

/// A_26015-02 (A_25324-01): an insured person's new room is encrypted from
/// its first state on, and its initial state passes [`check_state_event`]
/// (which also catches the `public_chat` preset's join rule, A_25325-01).
pub fn check_initial_state(creator: AccountKind, state: &[NewEvent]) -> ApiResult<()> {
    for event in state {
        check_state_event(creator, &event.kind.to_string(), &event.content)?;
    }
    if creator.is_insured() && !state.iter().any(|event| event.kind == TimelineEventType::RoomEncryption) {
        return Err(ApiError::forbidden("Rooms of insured persons must be encrypted (add m.room.encryption to initial_state)"));
    }
    Ok(())
}

/// A_26015-02, A_28271: insured persons may not open a room to the public:
/// no `join_rule` `public` or `knock`, no `history_visibility`
/// `world_readable` (403 `M_FORBIDDEN`).
pub fn check_state_event(sender: AccountKind, event_type: &str, content: &JsonValue) -> ApiResult<()> {
    if !sender.is_insured() {
        return Ok(());
    }
    let field = |name: &str| content.get(name).and_then(JsonValue::as_str);
    let opens_room = match event_type {
        "m.room.join_rules" => matches!(field("join_rule"), Some("public" | "knock")),
        "m.room.history_visibility" => field("history_visibility") == Some("world_readable"),
        _ => false,
    };
    if opens_room {
        return Err(ApiError::forbidden(format!("Insured persons may not open rooms to the public ({event_type})")));
    }
    Ok(())
}

/// A_26015-02: insured persons may not list a room in the public directory.
pub fn check_room_publication(publisher: AccountKind, public: bool) -> ApiResult<()> {
    if public && publisher.is_insured() {
        return Err(ApiError::forbidden("Insured persons may not publish rooms"));
    }
    Ok(())
}

/// A_28587: insured persons may not read the public room list.
pub fn check_public_room_list(reader: &Session) -> ApiResult<()> {
    if reader.kind.is_insured() {
        return Err(ApiError::forbidden("The public room list is not available to insured persons"));
    }
    Ok(())
}

/// A_26338-02: `m.room.name`/`m.room.topic` and gematik's
/// `de.gematik.tim.room.name`/`…topic` carry the same value, whichever a
/// client sets: (spec type, custom type, content field).
const MIRRORED_STATE: [(&str, &str, &str); 2] = [
    ("m.room.name", "de.gematik.tim.room.name", "name"),
    ("m.room.topic", "de.gematik.tim.room.topic", "topic"),
];

/// The counterpart type and the content field of a mirrored state type.
fn mirrored(event_type: &str) -> Option<(&'static str, &'static str)> {
    MIRRORED_STATE.iter().find_map(|&(spec, custom, field)| match event_type {
        _ if event_type == spec => Some((custom, field)),
        _ if event_type == custom => Some((spec, field)),
        _ => None,
    })
}

/// The event that keeps the counterpart of a name or topic event in step,
/// if `event` is one.
pub fn mirror_of(event: &NewEvent) -> Option<NewEvent> {
    if event.state_key.as_deref() != Some("") {
        return None;
    }
    let (counterpart, field) = mirrored(&event.kind.to_string())?;
    let mut content = Map::new();
    if let Some(value) = event.content.get(field).filter(|value| value.is_string()) {
        content.insert(field.to_owned(), value.clone());
    }
    Some(NewEvent::state(counterpart.into(), "", JsonValue::Object(content)))
}

/// Whether the counterpart's current content (`None`: not set) differs
/// from what `mirror` would set, so that mirroring writes only changes.
pub fn mirror_changes(mirror: &NewEvent, current: Option<&JsonValue>) -> bool {
    let Some((_, field)) = mirrored(&mirror.kind.to_string()) else { return false };
    current.is_none_or(|current| current.get(field) != mirror.content.get(field))
}

/// Adds the mirror of every name and topic event in a new room's state that
/// lacks its counterpart.
pub fn add_mirrors(state: &mut Vec<NewEvent>) {
    let missing: Vec<NewEvent> = state
        .iter()
        .filter_map(mirror_of)
        .filter(|mirror| !state.iter().any(|event| event.kind == mirror.kind && event.state_key == mirror.state_key))
        .collect();
    state.extend(missing);
}

/// Checks on a message event's content:
/// - A_25395-03: threads are not offered, so nothing may relate to a thread
///   (400 `M_FORBIDDEN`, as gematik's reference proxy answers);
/// - A_26228-01: a reaction's key is exactly one emoji (400 `M_BAD_JSON`).
pub fn check_message(event_type: &str, content: &JsonValue) -> ApiResult<()> {
    let relation = content.get("m.relates_to");
    let relation_field = |name: &str| relation.and_then(|relation| relation.get(name));
    if relation_field("rel_type").and_then(JsonValue::as_str) == Some("m.thread") {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::Forbidden, "Threads are not supported on this server"));
    }
    if event_type == "m.reaction" && relation_field("rel_type").and_then(JsonValue::as_str) == Some("m.annotation") {
        let key = relation_field("key").and_then(JsonValue::as_str).unwrap_or_default();
        if !is_one_emoji(key) {
            return Err(ApiError::bad_json("A reaction must be exactly one emoji"));
        }
    }
    Ok(())
}

/// Exactly one emoji: a lookup of the whole key in Unicode's emoji list
/// (with skin tones, ZWJ sequences, keycaps and flags, with or without
/// variation selector), so "👍🏽" and "🏳️‍🌈" pass and "👍👍", "a" or
/// "👍 " do not. Emoji newer than the `emojis` crate's list are refused
/// until it is updated.
fn is_one_emoji(key: &str) -> bool {
    emojis::get(key).is_some()
}

/// A_28358: events older than 24 hours cannot be redacted (403
/// `M_FORBIDDEN`); `target` is the redacted event's PDU.
pub fn check_redaction(target: &JsonValue) -> ApiResult<()> {
    let sent = target.get("origin_server_ts").and_then(JsonValue::as_u64).unwrap_or(0);
    let now = u64::from(MilliSecondsSinceUnixEpoch::now().get());
    if now.saturating_sub(sent) > REDACTION_WINDOW_MS {
        return Err(ApiError::forbidden("Events older than 24 hours cannot be redacted"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reactions_are_exactly_one_emoji() {
        for one in ["👍", "👍🏽", "❤️", "❤", "🏳️‍🌈", "#️⃣", "🇩🇪"] {
            assert!(is_one_emoji(one), "{one:?}");
        }
        for not_one in ["", "a", "1", "👍👍", "👍 ", " 👍", "+1", ":thumbsup:"] {
            assert!(!is_one_emoji(not_one), "{not_one:?}");
        }
    }

    #[test]
    fn name_and_topic_mirror_each_other() {
        let name = NewEvent::state("m.room.name".into(), "", json!({ "name": "Tea" }));
        let mirror = mirror_of(&name).unwrap();
        assert_eq!((mirror.kind.to_string(), mirror.content.clone()), ("de.gematik.tim.room.name".to_owned(), json!({ "name": "Tea" })));
        let back = mirror_of(&mirror).unwrap();
        assert_eq!(back.kind.to_string(), "m.room.name");

        let topic = NewEvent::state("de.gematik.tim.room.topic".into(), "", json!({ "topic": "Roses" }));
        let mirror = mirror_of(&topic).unwrap();
        assert!(!mirror_changes(&mirror, Some(&json!({ "topic": "Roses", "m.topic": [] }))));
        assert!(mirror_changes(&mirror, Some(&json!({ "topic": "Tulips" }))));
        assert!(mirror_changes(&mirror, None));

        assert!(mirror_of(&NewEvent::state("m.room.name".into(), "other", json!({ "name": "x" }))).is_none());
        let mut state = vec![name, NewEvent::state("de.gematik.tim.room.topic".into(), "", json!({ "topic": "Roses" }))];
        add_mirrors(&mut state);
        let kinds: Vec<String> = state.iter().map(|event| event.kind.to_string()).collect();
        assert_eq!(kinds, ["m.room.name", "de.gematik.tim.room.topic", "de.gematik.tim.room.name", "m.room.topic"]);
    }

    #[test]
    fn insured_persons_keep_rooms_private() {
        let check = |kind, event_type, content| check_state_event(kind, event_type, &content).is_ok();
        assert!(!check(AccountKind::Insured, "m.room.join_rules", json!({ "join_rule": "public" })));
        assert!(!check(AccountKind::Insured, "m.room.join_rules", json!({ "join_rule": "knock" })));
        assert!(!check(AccountKind::Insured, "m.room.history_visibility", json!({ "history_visibility": "world_readable" })));
        assert!(check(AccountKind::Insured, "m.room.join_rules", json!({ "join_rule": "invite" })));
        assert!(check(AccountKind::Staff, "m.room.join_rules", json!({ "join_rule": "public" })));
    }
}
