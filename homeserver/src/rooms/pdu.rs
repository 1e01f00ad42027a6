//! PDUs: the signed, hashed form of every room event, as federation will
//! exchange them, and their client-facing form.

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::TimelineEventType,
    serde::Raw,
};
use serde::Deserialize;
use serde_json::{Value as JsonValue, value::RawValue as RawJsonValue};

/// A stored room event. `event_id` is not part of the signed JSON (room
/// versions 3+ derive it from the reference hash) and is kept beside it.
#[derive(Clone, Debug, Deserialize)]
pub struct Pdu {
    #[serde(skip_deserializing, default = "placeholder_event_id")]
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(default)]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    pub auth_events: Vec<OwnedEventId>,
    #[serde(default)]
    pub redacts: Option<OwnedEventId>,
    pub depth: UInt,
}

fn placeholder_event_id() -> OwnedEventId {
    ruma::owned_event_id!("$placeholder")
}

impl Pdu {
    /// Parses the stored JSON of event `event_id`.
    pub fn from_json(event_id: OwnedEventId, json: &str) -> serde_json::Result<Self> {
        let mut pdu: Pdu = serde_json::from_str(json)?;
        pdu.event_id = event_id;
        Ok(pdu)
    }

    /// The content as a JSON value.
    pub fn content_value(&self) -> JsonValue {
        serde_json::from_str(self.content.get()).unwrap_or(JsonValue::Null)
    }

    /// `content.membership` of a member event.
    pub fn membership(&self) -> Option<String> {
        self.content_value().get("membership").and_then(|m| m.as_str()).map(str::to_owned)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        Some(&self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// An event as clients see it, built from a stored row.
#[derive(Clone, Debug)]
pub struct ClientEvent {
    pub event_id: OwnedEventId,
    pub stream_pos: i64,
    pub sender: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    /// The client-format JSON (with `room_id`; sync strips it).
    pub json: serde_json::Map<String, JsonValue>,
}

impl ClientEvent {
    /// Builds the client format from the stored PDU JSON and `unsigned` data.
    /// `viewer_txn` is the transaction id to echo when the viewer sent it from
    /// the same device.
    pub fn from_stored(
        event_id: OwnedEventId,
        stream_pos: i64,
        pdu: &JsonValue,
        unsigned: Option<&JsonValue>,
        viewer_txn: Option<&str>,
    ) -> Self {
        let mut json = serde_json::Map::new();
        for key in ["type", "content", "sender", "origin_server_ts", "room_id", "state_key", "redacts"] {
            if let Some(value) = pdu.get(key) {
                json.insert(key.to_owned(), value.clone());
            }
        }
        json.insert("event_id".to_owned(), JsonValue::String(event_id.to_string()));
        let mut unsigned = unsigned.and_then(|u| u.as_object().cloned()).unwrap_or_default();
        if let Some(ts) = pdu.get("origin_server_ts").and_then(JsonValue::as_i64) {
            let age = crate::storage::now_ms().saturating_sub(ts).max(0);
            unsigned.insert("age".to_owned(), age.into());
        }
        if let Some(txn) = viewer_txn {
            unsigned.insert("transaction_id".to_owned(), txn.into());
        }
        json.insert("unsigned".to_owned(), JsonValue::Object(unsigned));
        let text = |key: &str| json.get(key).and_then(JsonValue::as_str).map(str::to_owned);
        Self {
            event_id,
            stream_pos,
            sender: text("sender").and_then(|s| OwnedUserId::try_from(s).ok()).unwrap_or_else(|| ruma::owned_user_id!("@unknown:invalid")),
            kind: text("type").unwrap_or_default(),
            state_key: text("state_key"),
            json,
        }
    }

    /// The event as ruma's raw type `T` (a timeline, state or room event).
    pub fn raw<T>(&self) -> Raw<T> {
        crate::http::raw_json(&self.json)
    }

    /// The event without `room_id`, as `/sync` sends it.
    pub fn raw_sync<T>(&self) -> Raw<T> {
        let mut json = self.json.clone();
        json.remove("room_id");
        crate::http::raw_json(&json)
    }

    /// The content field.
    pub fn content(&self) -> &JsonValue {
        self.json.get("content").unwrap_or(&JsonValue::Null)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// For state events: `(type, state_key)`.
    pub fn state_pair(&self) -> Option<(&str, &str)> {
        self.state_key.as_deref().map(|key| (self.kind.as_str(), key))
    }

    /// The sender id as an `&UserId`.
    pub fn sender(&self) -> &UserId {
        &self.sender
    }

    pub fn id(&self) -> &EventId {
        &self.event_id
    }
}
