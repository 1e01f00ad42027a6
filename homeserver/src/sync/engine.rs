//! Builds `/sync` responses from stream positions.
//!
//! A response covers the positions `(since, upto]` of every stream the user
//! can see: room timelines and state, receipts, typing, account data and
//! presence. Because every persisted stream shares the database's stream
//! head (see `storage::stream`), one number per database says exactly what
//! a client has seen, and a token stays valid on any worker and across
//! restarts.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::client::{
        filter::{FilterDefinition, RoomEventFilter},
        sync::sync_events::v3::{
            Ephemeral, GlobalAccountData, InviteState, InvitedRoom, JoinedRoom, LeftRoom, Presence, Response,
            RoomAccountData, RoomSummary, State, StateEvents, Timeline,
        },
    },
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use super::{filter::{self, EventFilter as _}, token::{StreamRange, SyncToken}};
use crate::{
    http::{ApiResult, Session, raw_json},
    rooms::visibility::HistoryAccess,
    server::Homeserver,
    storage::{self, account_data, events, memberships, presence, receipts, events::StoredEvent, memberships::UserRoom},
};

/// Timeline events per room when the filter names no limit.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
pub(crate) const MAX_TIMELINE_LIMIT: usize = 500;
/// Members a room summary names when the room has no name.
pub(crate) const MAX_HEROES: i64 = 5;
/// State shown with an invite (the spec's recommended stripped state).
const INVITE_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// What one sync request asks for.
pub struct SyncRequest<'a> {
    pub session: &'a Session,
    pub since: Option<&'a SyncToken>,
    pub filter: &'a FilterDefinition,
    pub full_state: bool,
    /// `use_state_after`: send the state at the end of the timeline.
    pub state_after: bool,
}

/// The window one response covers: `(since, upto]` of every database.
/// Each query takes the range of the database it reads: the room's for room
/// data, the user's for the user's own rows.
struct Window<'a> {
    request: &'a SyncRequest<'a>,
    server: &'a Homeserver,
    range: StreamRange<'a>,
    /// The range of the user's database.
    since: Option<i64>,
    upto: i64,
}

impl Window<'_> {
    fn user(&self) -> &UserId {
        &self.request.session.user_id
    }
    /// `(since, upto]` of the room's database.
    fn room(&self, room_id: &RoomId) -> (Option<i64>, i64) {
        self.range.of(&self.server.db, room_id.as_str())
    }
    fn room_filter(&self) -> &ruma::api::client::filter::RoomFilter {
        &self.request.filter.room
    }
}

/// Builds the response for the positions `(since, upto]`.
pub async fn build(server: &Homeserver, request: &SyncRequest<'_>, upto: &SyncToken) -> ApiResult<Response> {
    let range = StreamRange { since: request.since, upto };
    let (since, own_upto) = range.of(&server.db, request.session.user_id.as_str());
    let window = Window { request, server, range, since, upto: own_upto };
    let user_id = window.user();
    let mut response = Response::new(upto.to_string());

    let rooms = memberships::rooms_of_user(server.db.user_shard(user_id), user_id).await?;
    let room_filter = window.room_filter();
    let rooms: Vec<UserRoom> = rooms
        .into_iter()
        .filter(|r| r.stream_pos <= window.upto)
        .filter(|r| r.room_id().is_some_and(|id| filter::allows_room(room_filter.rooms.as_deref(), &room_filter.not_rooms, &id)))
        .collect();

    let account_data = account_data::changed_since(server.db.user_shard(user_id), user_id, window.since).await?;
    let account_data: Vec<_> = account_data.into_iter().filter(|e| e.stream_pos <= window.upto).collect();

    let joined: Vec<&UserRoom> = rooms.iter().filter(|r| r.membership == "join").collect();
    let changed = rooms_with_news(server, &window, &joined, &account_data, request.since.map(|s| s.typing)).await?;
    for room in &joined {
        let Some(room_id) = room.room_id() else { continue };
        let newly_joined = window.since.is_none_or(|since| room.stream_pos > since);
        if !(newly_joined || request.full_state || changed.contains(&room_id)) {
            continue;
        }
        let joined_room = joined_room(server, &window, &room_id, room, newly_joined, &account_data, request.since.map(|s| s.typing)).await?;
        if newly_joined || request.full_state || !joined_room.is_empty() {
            response.rooms.join.insert(room_id, joined_room);
        }
    }
    for room in rooms.iter().filter(|r| r.membership == "invite" && window.since.is_none_or(|since| r.stream_pos > since)) {
        let Some(room_id) = room.room_id() else { continue };
        response.rooms.invite.insert(room_id.clone(), invited_room(server, &room_id, room).await?);
    }
    let include_leave = window.since.is_some() || room_filter.include_leave;
    for room in rooms.iter().filter(|r| matches!(r.membership.as_str(), "leave" | "ban") && include_leave && window.since.is_none_or(|since| r.stream_pos > since)) {
        let Some(room_id) = room.room_id() else { continue };
        response.rooms.leave.insert(room_id.clone(), left_room(server, &window, &room_id, room).await?);
    }

    response.account_data = GlobalAccountData::new();
    let global = global_account_data(server, user_id, &account_data, window.since.is_none(), |t| request.filter.account_data.allows_type(t)).await?;
    response.account_data.events = global.iter().map(raw_json).collect();
    response.presence = Presence::new();
    response.presence.events = presence_events(server, &window, &joined).await?;
    Ok(response)
}

/// The global account data events among `entries` that `allows` lets
/// through. An initial sync also gets the default push rules when the user
/// never changed a rule: clients read their rules from account data, and
/// none are stored then. Shared by `/sync` and sliding sync.
pub(crate) async fn global_account_data(server: &Homeserver, user_id: &UserId, entries: &[account_data::AccountDataEntry], initial: bool, allows: impl Fn(&str) -> bool) -> ApiResult<Vec<JsonValue>> {
    let mut events: Vec<JsonValue> = entries.iter().filter(|e| e.room_id.is_empty() && allows(&e.data_type)).map(account_data_event).collect();
    if initial && allows("m.push_rules") && !entries.iter().any(|e| e.room_id.is_empty() && e.data_type == "m.push_rules") {
        let rules = crate::push::account_data_content(crate::push::ruleset(server.db.user_shard(user_id), user_id).await?)?;
        events.push(json!({ "type": "m.push_rules", "content": rules }));
    }
    Ok(events)
}

/// An account data entry (global or of a room) as the event clients get.
pub(crate) fn account_data_event(entry: &account_data::AccountDataEntry) -> JsonValue {
    json!({ "type": entry.data_type, "content": entry.content })
}

/// Joined rooms with anything new: events, receipts, room account data,
/// typing.
async fn rooms_with_news(server: &Homeserver, window: &Window<'_>, joined: &[&UserRoom], account_data: &[account_data::AccountDataEntry], typing_since: Option<u64>) -> ApiResult<BTreeSet<OwnedRoomId>> {
    if window.range.since.is_none() {
        return Ok(BTreeSet::new());
    }
    let room_ids: Vec<OwnedRoomId> = joined.iter().filter_map(|r| r.room_id()).collect();
    let mut changed = BTreeSet::new();
    if room_ids.is_empty() {
        return Ok(changed);
    }
    for (shard, (since, upto), rooms) in window.range.group_by_shard(&server.db, &room_ids, |room| room.as_str()) {
        let db = &shard.pool;
        let since = since.unwrap_or(-1);
        for room in events::rooms_changed_since(db, &rooms, since, upto).await? {
            changed.extend(OwnedRoomId::try_from(room).ok());
        }
        for receipt in receipts::changed_since(db, &rooms, Some(since)).await? {
            if receipt.stream_pos <= upto {
                changed.extend(OwnedRoomId::try_from(receipt.room_id).ok());
            }
        }
        // Notification counts change after their events: the push processor
        // evaluates events after commit.
        for room in storage::push_actions::rooms_changed_since(db, window.user(), &rooms, since, upto).await? {
            changed.extend(OwnedRoomId::try_from(room).ok());
        }
    }
    for entry in account_data.iter().filter(|e| !e.room_id.is_empty()) {
        changed.extend(OwnedRoomId::try_from(entry.room_id.as_str()).ok());
    }
    changed.extend(server.typing.changed_in(&room_ids, typing_since).await.into_keys());
    Ok(changed)
}

async fn joined_room(
    server: &Homeserver,
    window: &Window<'_>,
    room_id: &RoomId,
    membership: &UserRoom,
    newly_joined: bool,
    account_data: &[account_data::AccountDataEntry],
    typing_since: Option<u64>,
) -> ApiResult<JoinedRoom> {
    let db = server.db.room_shard(room_id);
    let user_id = window.user();
    let (since, upto) = window.room(room_id);
    let from = if newly_joined { None } else { since };
    let (timeline, timeline_events) = timeline(server, window, room_id, from, upto).await?;
    let state = state_section(server, window, room_id, from, &timeline_events, upto, newly_joined || window.request.full_state).await?;

    let mut room = JoinedRoom::new();
    room.timeline = timeline;
    room.state = state;
    room.account_data = RoomAccountData::new();
    room.account_data.events = account_data
        .iter()
        .filter(|e| e.room_id == room_id.as_str() && window.room_filter().account_data.allows_type(&e.data_type))
        .map(|e| raw_json(&account_data_event(e)))
        .collect();
    room.ephemeral = Ephemeral::new();
    room.ephemeral.events = ephemeral_events(server, room_id, user_id, (from, upto), typing_since).await?;

    room.unread_notifications = crate::push::unread_notifications(db, room_id, user_id, membership.room_pos).await?;
    room.summary = summary(server, room_id, user_id).await?;
    Ok(room)
}

/// The newest events of `(after, upto]` the user may see, oldest first.
async fn timeline(server: &Homeserver, window: &Window<'_>, room_id: &RoomId, after: Option<i64>, upto: i64) -> ApiResult<(Timeline, Vec<StoredEvent>)> {
    let wanted = &window.room_filter().timeline;
    let limit = wanted.limit.map_or(DEFAULT_TIMELINE_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_TIMELINE_LIMIT)).min(MAX_TIMELINE_LIMIT);
    let (visible, limited) = visible_timeline(server, room_id, window.user(), (after, upto), limit, Some(wanted)).await?;

    let session = window.request.session;
    let viewer = Some((session.user_id.as_ref(), session.device_id.as_ref()));
    let mut timeline = Timeline::new();
    timeline.limited = limited;
    timeline.prev_batch = Some(prev_batch(server, room_id, &visible, upto));
    timeline.events = visible.iter().map(|e| e.to_client(viewer).raw_sync()).collect();
    Ok((timeline, visible))
}

/// The newest `limit` events of the positions `(after, upto]` that
/// `user_id` may see (history visibility) and `filter` lets through, oldest
/// first, and whether the range held more than `limit` events (the
/// timeline's `limited`). Shared by `/sync` and sliding sync.
pub(crate) async fn visible_timeline(server: &Homeserver, room_id: &RoomId, user_id: &UserId, (after, upto): (Option<i64>, i64), limit: usize, filter: Option<&RoomEventFilter>) -> ApiResult<(Vec<StoredEvent>, bool)> {
    let db = server.db.room_shard(room_id);
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let newest = events::range(db, room_id, after.unwrap_or(-1), upto, fetch, true).await?;
    let limited = newest.len() > limit;
    let access = HistoryAccess::load(db, room_id, user_id).await?;
    let mut visible: Vec<StoredEvent> = access
        .filter(user_id, newest.into_iter().take(limit).collect())
        .into_iter()
        .filter(|e| filter.is_none_or(|wanted| filter::allows_event(wanted, &e.pdu)))
        .collect();
    visible.reverse();
    Ok((visible, limited))
}

/// The `prev_batch` of a timeline: `/messages` continues backwards from
/// just before its first event (from `upto` when it is empty).
pub(crate) fn prev_batch(server: &Homeserver, room_id: &RoomId, timeline: &[StoredEvent], upto: i64) -> String {
    SyncToken::for_room(&server.db, room_id, timeline.first().map_or(upto, |e| e.stream_pos - 1)).to_string()
}

/// The users whose member events a client needs to render `timeline`: the
/// senders and the targets of membership changes (lazy-loaded members).
pub(crate) fn timeline_members(timeline: &[StoredEvent]) -> BTreeSet<&str> {
    timeline
        .iter()
        .flat_map(|e| {
            let is_member = e.pdu.get("type").and_then(JsonValue::as_str) == Some("m.room.member");
            let target = if is_member { e.pdu.get("state_key").and_then(JsonValue::as_str) } else { None };
            std::iter::once(e.sender.as_str()).chain(target)
        })
        .collect()
}

/// `state` (before the timeline) or `state_after` (at its end), as the
/// client asked; a delta since the last sync unless `full`; with lazy
/// loading only the members the timeline mentions.
async fn state_section(server: &Homeserver, window: &Window<'_>, room_id: &RoomId, since: Option<i64>, timeline: &[StoredEvent], upto: i64, full: bool) -> ApiResult<State> {
    let db = server.db.room_shard(room_id);
    let at = if window.request.state_after { upto } else { timeline.first().map_or(upto, |e| e.stream_pos - 1) };
    let changed_after = if full { None } else { since };
    let wanted = &window.room_filter().state;
    let lazy = !wanted.lazy_load_options.is_disabled();

    let is_member = |e: &StoredEvent| e.pdu.get("type").and_then(JsonValue::as_str) == Some("m.room.member");
    let mut state: Vec<StoredEvent> = events::state_at(db, room_id, at, changed_after).await?;
    if lazy {
        let mut needed = timeline_members(timeline);
        needed.insert(window.user().as_str());
        let members = events::state_at(db, room_id, at, None).await?;
        state.retain(|e| !is_member(e));
        state.extend(members.into_iter().filter(|e| is_member(e) && e.pdu.get("state_key").and_then(JsonValue::as_str).is_some_and(|k| needed.contains(k))));
    }
    if !window.request.state_after {
        let in_timeline: BTreeSet<&str> = timeline.iter().map(|e| e.event_id.as_str()).collect();
        state.retain(|e| !in_timeline.contains(e.event_id.as_str()));
    }
    state.retain(|e| filter::allows_event(&state_filter_without_limit(wanted), &e.pdu));
    let events = state.iter().map(|e| e.to_client(None).raw_sync()).collect();
    Ok(if window.request.state_after { State::After(StateEvents::new_with(events)) } else { State::Before(StateEvents::new_with(events)) })
}

fn state_filter_without_limit(wanted: &RoomEventFilter) -> RoomEventFilter {
    let mut filter = wanted.clone();
    filter.limit = None;
    filter
}

trait StateEventsExt {
    fn new_with(events: Vec<Raw<ruma::events::AnySyncStateEvent>>) -> Self;
}

impl StateEventsExt for StateEvents {
    fn new_with(events: Vec<Raw<ruma::events::AnySyncStateEvent>>) -> Self {
        let mut state = StateEvents::new();
        state.events = events;
        state
    }
}

/// Receipts and typing for a joined room.
async fn ephemeral_events(server: &Homeserver, room_id: &RoomId, viewer: &UserId, (since, upto): (Option<i64>, i64), typing_since: Option<u64>) -> ApiResult<Vec<Raw<ruma::events::AnySyncEphemeralRoomEvent>>> {
    let db = server.db.room_shard(room_id);
    let mut out = Vec::new();
    let receipts = receipts::changed_since(db, std::slice::from_ref(&room_id.to_owned()), since).await?;
    if let Some(event) = receipt_event(receipts.into_iter().filter(|r| r.stream_pos <= upto), viewer) {
        out.push(raw_json(&event));
    }
    let typing_since = if since.is_none() { None } else { typing_since };
    if let Some(users) = server.typing.changed_since(room_id, typing_since).await {
        out.push(raw_json(&typing_event(&users)));
    }
    Ok(out)
}

/// The `m.receipt` event of `receipts` as `viewer` may see them (the
/// private receipts of others left out); `None` when none is left.
pub(crate) fn receipt_event(receipts: impl IntoIterator<Item = receipts::Receipt>, viewer: &UserId) -> Option<JsonValue> {
    let mut content: BTreeMap<String, BTreeMap<String, BTreeMap<String, JsonValue>>> = BTreeMap::new();
    for receipt in receipts {
        if receipt.receipt_type == "m.read.private" && receipt.user_id != viewer.as_str() {
            continue;
        }
        let mut data = json!({ "ts": receipt.ts });
        if !receipt.thread_id.is_empty() {
            data["thread_id"] = receipt.thread_id.into();
        }
        content.entry(receipt.event_id).or_default().entry(receipt.receipt_type).or_default().insert(receipt.user_id, data);
    }
    (!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content }))
}

/// The `m.typing` event of a room where `users` are typing.
pub(crate) fn typing_event(users: &[OwnedUserId]) -> JsonValue {
    json!({ "type": "m.typing", "content": { "user_ids": users } })
}

/// Heroes and member counts, for clients to name the room.
async fn summary(server: &Homeserver, room_id: &RoomId, user_id: &UserId) -> ApiResult<RoomSummary> {
    let db = server.db.room_shard(room_id);
    let (joined, invited) = memberships::counts(db, room_id).await?;
    let mut summary = RoomSummary::new();
    summary.joined_member_count = UInt::try_from(joined).ok();
    summary.invited_member_count = UInt::try_from(invited).ok();
    summary.heroes = memberships::heroes(db, room_id, user_id, MAX_HEROES).await?.into_iter().filter_map(|hero| OwnedUserId::try_from(hero.user_id).ok()).collect();
    Ok(summary)
}

/// An invite with the room's stripped state.
async fn invited_room(server: &Homeserver, room_id: &RoomId, membership: &UserRoom) -> ApiResult<InvitedRoom> {
    let mut invite_state = InviteState::new();
    invite_state.events = invite_state_events(server, room_id, membership).await?;
    let mut room = InvitedRoom::new();
    room.invite_state = invite_state;
    Ok(room)
}

/// What an invitee may see of a room before joining: the stripped state of
/// the spec's recommended types and the invite itself, as of the invite.
/// Shared by `/sync` and sliding sync.
pub(crate) async fn invite_state_events(server: &Homeserver, room_id: &RoomId, membership: &UserRoom) -> ApiResult<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
    let db = server.db.room_shard(room_id);
    let state = events::state_at(db, room_id, membership.room_pos, None).await?;
    Ok(state
        .iter()
        .filter(|e| {
            let kind = e.pdu.get("type").and_then(JsonValue::as_str).unwrap_or_default();
            INVITE_STATE_TYPES.contains(&kind) || e.event_id == membership.event_id
        })
        .map(|e| raw_json(&json!({ "type": e.pdu["type"], "state_key": e.pdu["state_key"], "content": e.pdu["content"], "sender": e.pdu["sender"] })))
        .collect())
}

/// A room the user left (or was kicked or banned from): the timeline up to
/// the leave.
async fn left_room(server: &Homeserver, window: &Window<'_>, room_id: &RoomId, membership: &UserRoom) -> ApiResult<LeftRoom> {
    let (since, upto) = window.room(room_id);
    let upto = membership.room_pos.min(upto);
    let (timeline, timeline_events) = timeline(server, window, room_id, since, upto).await?;
    let mut room = LeftRoom::new();
    room.state = state_section(server, window, room_id, since, &timeline_events, upto, since.is_none()).await?;
    room.timeline = timeline;
    Ok(room)
}

/// Presence changes of the user and of everyone sharing a joined room.
async fn presence_events(server: &Homeserver, window: &Window<'_>, joined: &[&UserRoom]) -> ApiResult<Vec<Raw<ruma::events::presence::PresenceEvent>>> {
    if !window.request.filter.presence.allows_type("m.presence") {
        return Ok(Vec::new());
    }
    let mut users: BTreeSet<OwnedUserId> = BTreeSet::from([window.user().to_owned()]);
    let rooms: Vec<OwnedRoomId> = joined.iter().filter_map(|room| room.room_id()).collect();
    for (shard, rooms) in server.db.rooms_by_shard(&rooms) {
        users.extend(memberships::joined_members_of_rooms(&shard.pool, &rooms).await?);
    }
    let users: Vec<OwnedUserId> = users.into_iter().filter(|u| window.request.filter.presence.allows_sender(u.as_str())).collect();
    let now = storage::now_ms();
    let mut rows = Vec::new();
    // Presence rows live on each user's own database.
    for (shard, (since, upto), users) in window.range.group_by_shard(&server.db, &users, |user| user.as_str()) {
        let users: Vec<String> = users.iter().map(ToString::to_string).collect();
        rows.extend(presence::changed_since(&shard.pool, &users, since).await?.into_iter().filter(|row| row.stream_pos <= upto));
    }
    let changed: Vec<OwnedUserId> = rows.iter().filter_map(|row| OwnedUserId::try_from(row.user_id.as_str()).ok()).collect();
    let last_active = server.activity.last_active(&changed).await.unwrap_or_default();
    Ok(rows
        .into_iter()
        .map(|row| {
            let active = OwnedUserId::try_from(row.user_id.as_str()).ok().and_then(|user| last_active.get(&user).copied());
            let (ago, currently_active) = crate::presence::activity_fields(&row.presence, row.last_active_ts, active, now);
            raw_json(&json!({
                "type": "m.presence",
                "sender": row.user_id,
                "content": {
                    "presence": row.presence,
                    "status_msg": row.status_msg,
                    "last_active_ago": ago,
                    "currently_active": currently_active,
                },
            }))
        })
        .collect())
}

/// Whether a response carries nothing for the client (a long-poll keeps
/// waiting then).
pub fn is_empty(response: &Response) -> bool {
    response.rooms.is_empty() && response.presence.is_empty() && response.account_data.is_empty()
}
