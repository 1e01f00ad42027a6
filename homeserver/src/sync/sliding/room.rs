//! One room of a sliding sync response: from scratch (`initial`) when the
//! connection was never sent it, else what changed since it was.

use std::collections::BTreeMap;

use ruma::{JsOption, OwnedMxcUri, OwnedUserId, RoomId, UInt, api::client::sync::sync_events::v5};
use serde_json::Value as JsonValue;

use super::required_state::RequiredState;
use crate::{
    http::{ApiResult, Session},
    server::Homeserver,
    storage::{events, events::StoredEvent, memberships, memberships::UserRoom, sliding_sync::SentRoom},
    sync::engine,
};

/// State types a room's `name` and `avatar` fields are read from.
const META_TYPES: &[&str] = &["m.room.name", "m.room.avatar"];

/// What one request wants of a room: the union over every list window and
/// subscription that covers it.
#[derive(Clone, Debug, Default)]
pub struct RoomConfig {
    pub required_state: RequiredState,
    pub timeline_limit: usize,
}

impl RoomConfig {
    pub fn new(required_state: &[(ruma::events::StateEventType, String)], timeline_limit: UInt) -> Self {
        let limit = usize::try_from(u64::from(timeline_limit)).unwrap_or(usize::MAX).min(engine::MAX_TIMELINE_LIMIT);
        Self { required_state: RequiredState::from_request(required_state), timeline_limit: limit }
    }

    pub fn merge(&mut self, other: &Self) {
        self.required_state.merge(&other.required_state);
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
    }
}

/// How to send one room.
pub struct RoomPlan<'a> {
    pub room_id: &'a RoomId,
    pub membership: &'a UserRoom,
    pub config: &'a RoomConfig,
    /// What the connection has of the room; `None` sends it from scratch.
    pub previous: Option<&'a SentRoom>,
    /// The timeline limit grew: send the newest events again, not only the
    /// new ones, so the client can fill the screen it now shows.
    pub expanded: bool,
    /// `required_state` grew: send all of it, not only changes.
    pub full_state: bool,
    /// The stream position the room is sent up to: now for a joined room,
    /// the membership change for others (nothing after a leave is theirs).
    pub at: i64,
    pub bump_stamp: i64,
    pub is_dm: bool,
}

impl RoomPlan<'_> {
    /// The row recording what this plan sends.
    pub fn sent_room(&self) -> SentRoom {
        SentRoom {
            room_id: self.room_id.to_string(),
            membership: self.membership.membership.clone(),
            sent_upto: self.at,
            required_state: self.config.required_state.to_json(),
            timeline_limit: i64::try_from(self.config.timeline_limit).unwrap_or(i64::MAX),
        }
    }
}

/// Builds the room's entry; also returns its timeline (the receipts
/// extension sends receipts on it for rooms sent from scratch).
/// `since` is the client's stream position, for `num_live`.
pub async fn build(server: &Homeserver, session: &Session, plan: &RoomPlan<'_>, since: Option<i64>) -> ApiResult<(v5::response::Room, Vec<StoredEvent>)> {
    let mut room = v5::response::Room::new();
    let initial = plan.previous.is_none();
    if initial {
        room.initial = Some(true);
        room.is_dm = Some(plan.is_dm);
    }
    room.bump_stamp = UInt::try_from(plan.bump_stamp).ok();
    if plan.membership.membership == "invite" {
        room.invite_state = Some(engine::invite_state_events(server, plan.room_id, plan.membership).await?);
        return Ok((room, Vec::new()));
    }

    let user_id = &session.user_id;
    let from = plan.previous.map(|previous| previous.sent_upto);
    let timeline = if plan.config.timeline_limit > 0 {
        let after = if plan.expanded { None } else { from };
        let (timeline, limited) = engine::visible_timeline(server, plan.room_id, user_id, (after, plan.at), plan.config.timeline_limit, None).await?;
        let viewer = Some((session.user_id.as_ref(), session.device_id.as_ref()));
        room.timeline = timeline.iter().map(|e| e.to_client(viewer).raw_sync()).collect();
        room.limited = limited;
        room.prev_batch = Some(engine::prev_batch(server, plan.room_id, &timeline, plan.at));
        let live = since.map_or(0, |since| timeline.iter().rev().take_while(|e| e.stream_pos > since).count());
        room.num_live = UInt::try_from(live).ok();
        timeline
    } else {
        Vec::new()
    };

    let state = RoomState::load(server, plan, from, &timeline, user_id).await?;
    room.required_state = state.required.values().map(|e| e.to_client(None).raw_sync()).collect();
    if let Some(name) = state.meta("m.room.name") {
        room.name = name.get("name").and_then(JsonValue::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
    }
    if let Some(avatar) = state.meta("m.room.avatar") {
        let url = avatar.get("url").and_then(JsonValue::as_str).map(OwnedMxcUri::from).filter(|url| url.is_valid());
        room.avatar = match url {
            Some(url) => JsOption::Some(url),
            None if initial => JsOption::Undefined,
            None => JsOption::Null,
        };
    }
    if plan.membership.membership == "join" {
        let db = server.db.room_shard(plan.room_id);
        room.unread_notifications = crate::push::unread_notifications(db, plan.room_id, user_id, plan.membership.room_pos).await?;
        if initial || state.members_changed {
            let (joined, invited) = memberships::counts(db, plan.room_id).await?;
            room.joined_count = UInt::try_from(joined).ok();
            room.invited_count = UInt::try_from(invited).ok();
            if room.name.is_none() {
                room.heroes = Some(heroes(server, plan.room_id, user_id).await?);
            }
        }
    }
    Ok((room, timeline))
}

/// The state part of a room's entry.
struct RoomState {
    /// `required_state` to send, in stream order, each event once (the
    /// changes, the full state and the lazy members may overlap).
    required: BTreeMap<(i64, String), StoredEvent>,
    /// Where the name and avatar come from: the state for a room sent from
    /// scratch, the changes since it was last sent otherwise.
    meta: Vec<StoredEvent>,
    members_changed: bool,
}

impl RoomState {
    async fn load(server: &Homeserver, plan: &RoomPlan<'_>, from: Option<i64>, timeline: &[StoredEvent], user_id: &ruma::UserId) -> ApiResult<Self> {
        let db = server.db.room_shard(plan.room_id);
        let wanted = &plan.config.required_state;
        let is_wanted = |e: &StoredEvent| wanted.matches(text(e, "type"), text(e, "state_key"), user_id);
        let mut required = BTreeMap::new();
        let mut meta = Vec::new();
        if from.is_none() || plan.full_state {
            let mut selection = wanted.selection(user_id);
            selection.extend(META_TYPES.iter().map(|kind| ((*kind).to_owned(), String::new())));
            for event in events::state_at_matching(db, plan.room_id, plan.at, None, &selection).await? {
                if from.is_none() && META_TYPES.contains(&text(&event, "type")) {
                    meta.push(event.clone());
                }
                if is_wanted(&event) {
                    required.insert((event.stream_pos, event.event_id.clone()), event);
                }
            }
        }
        if let Some(from) = from {
            // Everything that changed since the room was last sent: the
            // deltas of `required_state`, and whether name, avatar or
            // members moved.
            meta = events::state_at(db, plan.room_id, plan.at, Some(from)).await?;
            for event in meta.iter().filter(|e| is_wanted(e)) {
                required.insert((event.stream_pos, event.event_id.clone()), event.clone());
            }
        }
        if wanted.lazy_members() {
            let needed: Vec<(String, String)> = engine::timeline_members(timeline).into_iter().map(|user| ("m.room.member".to_owned(), user.to_owned())).collect();
            if !needed.is_empty() {
                for event in events::state_at_matching(db, plan.room_id, plan.at, None, &needed).await? {
                    required.insert((event.stream_pos, event.event_id.clone()), event);
                }
            }
        }
        let members_changed = from.is_some() && meta.iter().any(|e| text(e, "type") == "m.room.member");
        Ok(Self { required, meta, members_changed })
    }

    /// The content of the newest `kind` state event (key "") among the meta
    /// sources, if any.
    fn meta(&self, kind: &str) -> Option<&JsonValue> {
        self.meta
            .iter()
            .filter(|e| text(e, "type") == kind && text(e, "state_key").is_empty())
            .max_by_key(|e| e.stream_pos)
            .and_then(|e| e.pdu.get("content"))
    }
}

/// A string field of a stored event's PDU ("" when absent).
fn text<'e>(event: &'e StoredEvent, field: &str) -> &'e str {
    event.pdu.get(field).and_then(JsonValue::as_str).unwrap_or_default()
}

/// The members a client names an unnamed room after, with their profiles.
async fn heroes(server: &Homeserver, room_id: &RoomId, user_id: &ruma::UserId) -> ApiResult<Vec<v5::response::Hero>> {
    let rows = memberships::heroes(server.db.room_shard(room_id), room_id, user_id, engine::MAX_HEROES).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let mut hero = v5::response::Hero::new(OwnedUserId::try_from(row.user_id).ok()?);
            hero.name = row.displayname;
            hero.avatar = row.avatar_url.map(OwnedMxcUri::from).filter(|url| url.is_valid());
            Some(hero)
        })
        .collect())
}
