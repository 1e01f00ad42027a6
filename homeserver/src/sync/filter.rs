//! Event filters (`RoomEventFilter`, `Filter`): which events a client wants,
//! by type (with `*` wildcards), sender, room and URL presence. Stored
//! filters are resolved here too.

use ruma::{
    RoomId, UserId,
    api::client::filter::{FilterDefinition, RoomEventFilter, UrlFilter},
};
use serde_json::Value as JsonValue;

use crate::{
    http::{ApiError, ApiResult},
    server::Homeserver,
    storage::account_data,
};

/// Whether `event_type` matches a filter pattern (`*` matches any run).
/// Greedy with one backtrack point, so linear in practice and never
/// exponential: a pattern of many `*` is no way to stall a sync.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), event_type.as_bytes());
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and where in `text` its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            star = Some((star_p, star_t + 1));
            (p, t) = (star_p + 1, star_t + 1);
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// 400 `M_BAD_JSON` when a filter lists more than `max` entries (types,
/// senders, rooms, fields; every list counted): each event a sync or a
/// page reads is matched against them.
pub fn check_size<F: serde::Serialize>(filter: &F, max: usize) -> ApiResult<()> {
    fn entries(value: &JsonValue) -> usize {
        match value {
            JsonValue::Array(items) => items.len() + items.iter().map(entries).sum::<usize>(),
            JsonValue::Object(fields) => fields.values().map(entries).sum(),
            _ => 0,
        }
    }
    let count = entries(&serde_json::to_value(filter)?);
    if count > max {
        return Err(ApiError::bad_json(format!("Filter lists {count} entries; at most {max} are allowed")));
    }
    Ok(())
}

/// The part of a filter that applies to single events.
pub trait EventFilter {
    fn allows_type(&self, event_type: &str) -> bool;
    fn allows_sender(&self, sender: &str) -> bool;
}

impl EventFilter for RoomEventFilter {
    fn allows_type(&self, event_type: &str) -> bool {
        allows_type(self.types.as_deref(), &self.not_types, event_type)
    }
    fn allows_sender(&self, sender: &str) -> bool {
        allows_sender(self.senders.as_deref(), &self.not_senders, sender)
    }
}

impl EventFilter for ruma::api::client::filter::Filter {
    fn allows_type(&self, event_type: &str) -> bool {
        allows_type(self.types.as_deref(), &self.not_types, event_type)
    }
    fn allows_sender(&self, sender: &str) -> bool {
        allows_sender(self.senders.as_deref(), &self.not_senders, sender)
    }
}

fn allows_type(types: Option<&[String]>, not_types: &[String], event_type: &str) -> bool {
    !not_types.iter().any(|p| type_matches(p, event_type)) && types.is_none_or(|types| types.iter().any(|p| type_matches(p, event_type)))
}

fn allows_sender(senders: Option<&[ruma::OwnedUserId]>, not_senders: &[ruma::OwnedUserId], sender: &str) -> bool {
    !not_senders.iter().any(|s| s.as_str() == sender) && senders.is_none_or(|senders| senders.iter().any(|s| s.as_str() == sender))
}

/// Whether a room event (client or PDU JSON) passes a room event filter.
pub fn allows_event(filter: &RoomEventFilter, event: &JsonValue) -> bool {
    let text = |key: &str| event.get(key).and_then(JsonValue::as_str).unwrap_or_default();
    if !filter.allows_type(text("type")) || !filter.allows_sender(text("sender")) {
        return false;
    }
    match filter.url_filter {
        Some(UrlFilter::EventsWithUrl) => event.pointer("/content/url").is_some(),
        Some(UrlFilter::EventsWithoutUrl) => event.pointer("/content/url").is_none(),
        None => true,
    }
}

/// Whether the filter wants this room at all.
pub fn allows_room(rooms: Option<&[ruma::OwnedRoomId]>, not_rooms: &[ruma::OwnedRoomId], room_id: &RoomId) -> bool {
    !not_rooms.iter().any(|r| r == room_id) && rooms.is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}

/// The definition behind a `filter` parameter: inline JSON or a stored id.
pub async fn resolve(server: &Homeserver, user_id: &UserId, filter: &str) -> ApiResult<FilterDefinition> {
    if filter.trim_start().starts_with('{') {
        return serde_json::from_str(filter).map_err(|err| ApiError::bad_json(format!("Invalid filter: {err}")));
    }
    let id: i64 = filter.parse().map_err(|_| ApiError::not_found("Unknown filter"))?;
    let stored = account_data::filter(server.db.user_shard(user_id), user_id, id).await?.ok_or_else(|| ApiError::not_found("Unknown filter"))?;
    serde_json::from_value(stored).map_err(|err| ApiError::Internal(err.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(type_matches("m.room.*", "m.room.message"));
        assert!(type_matches("*", "anything"));
        assert!(type_matches("m.*.message", "m.room.message"));
        assert!(!type_matches("m.room.*", "m.call.invite"));
        assert!(type_matches("m.room.message", "m.room.message"));
        assert!(!type_matches("m.room.message", "m.room.messages"));
        assert!(type_matches("m.*.*e", "m.room.message"));
        assert!(type_matches("**", ""));
        assert!(!type_matches("a*b", "aaaa"));
    }

    #[test]
    fn not_types_win() {
        let filter: RoomEventFilter = serde_json::from_value(serde_json::json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"], "not_senders": ["@spam:example.org"]
        }))
        .unwrap();
        assert!(allows_event(&filter, &serde_json::json!({"type": "m.room.message", "sender": "@a:example.org"})));
        assert!(!allows_event(&filter, &serde_json::json!({"type": "m.room.member", "sender": "@a:example.org"})));
        assert!(!allows_event(&filter, &serde_json::json!({"type": "m.room.message", "sender": "@spam:example.org"})));
    }
}
