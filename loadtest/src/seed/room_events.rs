//! The signed events of a seeded room, built as `createRoom` with one
//! invite and the invitee's join would build them: the same PDU fields,
//! content hashes, ed25519 signature with the server's key and reference-hash
//! event ids (room version 10), so the server (and any later federation)
//! cannot tell a seeded room from one made over the API.

use anyhow::Context as _;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, RoomVersionId,
    canonical_json::to_canonical_value,
    room_version_rules::RoomVersionRules,
    signatures::{Ed25519KeyPair, hash_and_sign_event, reference_hash},
};
use serde_json::{Value as JsonValue, json};

/// One event of a seeded room, ready for the `events` table.
pub struct SeededEvent {
    pub event_id: String,
    pub kind: &'static str,
    pub state_key: Option<String>,
    pub sender: String,
    pub depth: i64,
    pub pdu: String,
    pub unsigned: Option<String>,
    /// `content.membership` of member events, for `room_memberships`.
    pub membership: Option<&'static str>,
}

/// Signs events as the server named in the homeserver's config.
pub struct EventSigner {
    pub server_name: String,
    pub key: Ed25519KeyPair,
    rules: RoomVersionRules,
}

/// The room version seeded rooms have: the server's default (TI-M A_26248).
pub const ROOM_VERSION: RoomVersionId = RoomVersionId::V10;

impl EventSigner {
    pub fn new(server_name: String, key: Ed25519KeyPair) -> anyhow::Result<Self> {
        let rules = ROOM_VERSION.rules().context("room version 10 has rules")?;
        Ok(Self { server_name, key, rules })
    }

    /// The events of a member's room: the staff account creates it (create,
    /// its join, power levels, join rules, history visibility, guest access),
    /// invites the member as a direct chat, and the member joins.
    pub fn member_room(&self, room_id: &str, staff: &str, member: &str, ts: i64) -> anyhow::Result<Vec<SeededEvent>> {
        let mut room = RoomEvents { signer: self, room_id, ts, events: Vec::new() };
        let create = room.push(staff, "m.room.create", Some(""), json!({ "creator": staff, "room_version": ROOM_VERSION.as_str() }), &[], None)?;
        let staff_join = room.push(staff, "m.room.member", Some(staff), json!({ "membership": "join", "displayname": localpart(staff) }), &[create], Some("join"))?;
        let power_levels = room.push(staff, "m.room.power_levels", Some(""), power_levels(staff), &[create, staff_join], None)?;
        let creator_auth = [create, staff_join, power_levels];
        let join_rules = room.push(staff, "m.room.join_rules", Some(""), json!({ "join_rule": "invite" }), &creator_auth, None)?;
        room.push(staff, "m.room.history_visibility", Some(""), json!({ "history_visibility": "invited" }), &creator_auth, None)?;
        room.push(staff, "m.room.guest_access", Some(""), json!({ "guest_access": "forbidden" }), &creator_auth, None)?;
        let invite_content = json!({ "membership": "invite", "is_direct": true, "displayname": localpart(member) });
        let invite = room.push(staff, "m.room.member", Some(member), invite_content.clone(), &[create, staff_join, power_levels, join_rules], Some("invite"))?;
        let replaces = json!({ "prev_content": invite_content, "replaces_state": room.events[invite].event_id, "prev_sender": staff });
        let join = room.push(member, "m.room.member", Some(member), json!({ "membership": "join", "displayname": localpart(member) }), &[create, power_levels, join_rules, invite], Some("join"))?;
        room.events[join].unsigned = Some(replaces.to_string());
        Ok(room.events)
    }
}

/// The events of one room being built, each on top of the previous one.
struct RoomEvents<'a> {
    signer: &'a EventSigner,
    room_id: &'a str,
    ts: i64,
    events: Vec<SeededEvent>,
}

impl RoomEvents<'_> {
    /// Signs and appends an event whose auth events are the events at
    /// `auth` (indexes into this room's events); returns its index.
    fn push(&mut self, sender: &str, kind: &'static str, state_key: Option<&str>, content: JsonValue, auth: &[usize], membership: Option<&'static str>) -> anyhow::Result<usize> {
        let strings = |items: Vec<String>| CanonicalJsonValue::Array(items.into_iter().map(CanonicalJsonValue::String).collect());
        let mut auth_events: Vec<String> = auth.iter().map(|&i| self.events[i].event_id.clone()).collect();
        auth_events.sort();
        let depth = self.events.len() as i64 + 1;

        let mut object = CanonicalJsonObject::new();
        object.insert("auth_events".into(), strings(auth_events));
        object.insert("content".into(), to_canonical_value(&content)?);
        object.insert("depth".into(), CanonicalJsonValue::Integer(ruma::Int::try_from(depth)?));
        object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(ruma::Int::try_from(self.ts)?));
        object.insert("prev_events".into(), strings(self.events.last().map(|e| e.event_id.clone()).into_iter().collect()));
        object.insert("room_id".into(), CanonicalJsonValue::String(self.room_id.to_owned()));
        object.insert("sender".into(), CanonicalJsonValue::String(sender.to_owned()));
        object.insert("type".into(), CanonicalJsonValue::String(kind.to_owned()));
        if let Some(state_key) = state_key {
            object.insert("state_key".into(), CanonicalJsonValue::String(state_key.to_owned()));
        }
        let signer = self.signer;
        hash_and_sign_event(&signer.server_name, &signer.key, &mut object, &signer.rules.redaction).map_err(|err| anyhow::anyhow!("signing event: {err}"))?;
        let hash = reference_hash(&object, &signer.rules).map_err(|err| anyhow::anyhow!("hashing event: {err}"))?;

        self.events.push(SeededEvent {
            event_id: format!("${hash}"),
            kind,
            state_key: state_key.map(str::to_owned),
            sender: sender.to_owned(),
            depth,
            pdu: serde_json::to_string(&object)?,
            unsigned: None,
            membership,
        });
        Ok(self.events.len() - 1)
    }
}

/// The spec's default power levels with the staff account as creator (100),
/// as `createRoom` writes them.
fn power_levels(creator: &str) -> JsonValue {
    json!({
        "users": { creator: 100 },
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        "notifications": { "room": 50 },
    })
}

/// `@name:server` → `name`, the display name seeded accounts have.
fn localpart(user_id: &str) -> &str {
    user_id.trim_start_matches('@').split(':').next().unwrap_or(user_id)
}
