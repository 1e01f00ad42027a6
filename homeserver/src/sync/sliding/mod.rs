//! Simplified sliding sync (MSC4186), the sync of Element X and
//! matrix-sdk's room list.
//!
//! Instead of every room, the client asks for windows (`ranges`) of lists
//! of its rooms sorted by recency, and for rooms it subscribes to, each with
//! the state (`required_state`) and timeline length it needs. Per
//! connection the server remembers which rooms it sent, up to where and
//! with which settings (see [`connection`]), so the next response sends a
//! room from scratch (`initial`) only when the connection does not have it
//! and otherwise only what changed. Timelines, state, visibility, receipts
//! and account data come from the same building blocks as `/sync`
//! (`sync::engine`); the token inside `pos` is the `/sync` token.

mod connection;
mod extensions;
mod lists;
mod required_state;
mod room;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ruma::{OwnedRoomId, UInt, UserId, api::client::sync::sync_events::v5};
use serde_json::Value as JsonValue;

pub use self::connection::{Connection, Pos};
use self::{
    lists::Candidate,
    required_state::RequiredState,
    room::{RoomConfig, RoomPlan},
};
use super::token::{StreamRange, SyncToken};
use crate::{
    http::{ApiResult, Session},
    server::Homeserver,
    storage::{RoomRange, account_data, events, memberships, memberships::UserRoom, push_actions, receipts, sliding_sync::SentRoom},
};

/// Event types that move a room up the list: what people would call
/// activity in the room, not state churn or reactions (Synapse's choice,
/// which clients are tuned to).
const BUMP_EVENT_TYPES: &[&str] = &["m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite", "m.poll.start", "m.beacon_info"];

/// A response built from a connection's position up to a token, and what
/// sending it changes in the connection state.
pub struct Update {
    response: v5::Response,
    sent: Vec<SentRoom>,
    list_counts: BTreeMap<String, u64>,
    counts_changed: bool,
}

impl Update {
    /// Whether the response tells the client nothing new (a long-poll waits
    /// on then).
    pub fn is_empty(&self) -> bool {
        self.response.rooms.is_empty() && !self.counts_changed && extensions::is_empty(&self.response.extensions)
    }
}

/// Builds the response to `request` from the connection's position up to
/// `upto`. Nothing is recorded until [`finish`], so a long-poll may build
/// again after waiting.
pub async fn update(server: &Homeserver, session: &Session, connection: &Connection<'_>, request: &v5::Request, upto: &SyncToken) -> ApiResult<Update> {
    let user_id = &session.user_id;
    let since = connection.since();
    let memberships: BTreeMap<OwnedRoomId, UserRoom> = memberships::rooms_of_user(server.db.user_shard(user_id), user_id)
        .await?
        .into_iter()
        .filter(|room| room.stream_pos <= upto.position_of(&server.db, user_id.as_str()))
        .filter_map(|room| Some((room.room_id()?, room)))
        .collect();
    let direct = direct_rooms(server, user_id).await?;
    let bump_stamps = bump_stamps(server, &memberships, upto).await?;

    let mut candidates: Vec<Candidate> = memberships
        .iter()
        .filter(|(room_id, membership)| listed(connection, room_id, membership))
        .map(|(room_id, membership)| Candidate {
            room_id: room_id.clone(),
            membership: membership.membership.clone(),
            bump_stamp: bump_stamps.get(room_id).copied().unwrap_or(membership.membership_ts),
            is_dm: direct.contains(room_id),
        })
        .collect();
    let windows = lists::windows(server, &request.lists, &mut candidates).await?;

    let mut configs: BTreeMap<OwnedRoomId, RoomConfig> = BTreeMap::new();
    for window in &windows {
        let Some(list) = request.lists.get(&window.name) else { continue };
        let config = RoomConfig::new(&list.room_details.required_state, list.room_details.timeline_limit);
        for room_id in &window.rooms {
            configs.entry(room_id.clone()).or_default().merge(&config);
        }
    }
    // Subscriptions to rooms the user never was in are ignored: there is
    // nothing in them they may see.
    let subscribed: Vec<OwnedRoomId> = request.room_subscriptions.keys().filter(|room_id| memberships.contains_key(*room_id)).cloned().collect();
    for (room_id, subscription) in request.room_subscriptions.iter().filter(|(room_id, _)| memberships.contains_key(*room_id)) {
        configs.entry(room_id.clone()).or_default().merge(&RoomConfig::new(&subscription.required_state, subscription.timeline_limit));
    }

    let context = PlanContext { connection, memberships: &memberships, bump_stamps: &bump_stamps, direct: &direct, upto };
    let plans = plan_rooms(server, user_id, &context, &configs).await?;
    let mut response = v5::Response::new(String::new());
    response.txn_id = request.txn_id.clone();
    let mut initial = BTreeMap::new();
    let mut sent = Vec::with_capacity(plans.len());
    for plan in &plans {
        let room_since = since.map(|since| since.position_of(&server.db, plan.room_id.as_str()));
        let (room, timeline) = room::build(server, session, plan, room_since).await?;
        if plan.previous.is_none() {
            initial.insert(plan.room_id.to_owned(), timeline);
        }
        sent.push(plan.sent_room());
        response.rooms.insert(plan.room_id.to_owned(), room);
    }

    let list_counts: BTreeMap<String, u64> = windows.iter().map(|window| (window.name.clone(), window.count)).collect();
    for window in &windows {
        let mut list = v5::response::List::default();
        list.count = UInt::try_from(window.count).unwrap_or(UInt::MAX);
        response.lists.insert(window.name.clone(), list);
    }
    let joined: BTreeSet<OwnedRoomId> = memberships.iter().filter(|(_, m)| m.membership == "join").map(|(room_id, _)| room_id.clone()).collect();
    let extension_context = extensions::Context {
        server,
        session,
        since,
        upto,
        scope: extensions::Scope { windows: &windows, subscribed: &subscribed, joined: &joined },
        initial: &initial,
    };
    response.extensions = extensions::build(&extension_context, &request.extensions).await?;
    Ok(Update { counts_changed: connection.counts_changed(&list_counts), response, sent, list_counts })
}

/// Records what `update` sends and completes its `pos`.
pub async fn finish(server: &Homeserver, connection: &Connection<'_>, update: Update, upto: &SyncToken) -> ApiResult<v5::Response> {
    let mut response = update.response;
    response.pos = connection.next_pos(server, upto, &update.list_counts, &update.sent).await?;
    Ok(response)
}

/// Whether a room belongs in lists: joined and invited rooms, and rooms
/// left since the connection was sent them, so that the client learns of
/// the leave (after which they drop out).
fn listed(connection: &Connection<'_>, room_id: &OwnedRoomId, membership: &UserRoom) -> bool {
    matches!(membership.membership.as_str(), "join" | "invite") || connection.sent(room_id.as_str()).is_some_and(|sent| sent.membership != membership.membership)
}

/// Rooms the user marked as direct chats (`m.direct`: user → room ids).
async fn direct_rooms(server: &Homeserver, user_id: &UserId) -> ApiResult<BTreeSet<OwnedRoomId>> {
    let content = account_data::get(server.db.user_shard(user_id), user_id, None, "m.direct").await?;
    Ok(content
        .as_ref()
        .and_then(JsonValue::as_object)
        .into_iter()
        .flat_map(|direct| direct.values())
        .filter_map(JsonValue::as_array)
        .flatten()
        .filter_map(JsonValue::as_str)
        .filter_map(|room_id| OwnedRoomId::try_from(room_id).ok())
        .collect())
}

/// Each joined room's newest bump event up to `upto`, as its
/// `origin_server_ts`: rooms on different databases are ordered by time,
/// since their stream positions cannot be compared. Rooms without one, and
/// rooms the user is not in (whose events they cannot see), are stamped
/// with their membership change by the caller.
async fn bump_stamps(server: &Homeserver, memberships: &BTreeMap<OwnedRoomId, UserRoom>, upto: &SyncToken) -> ApiResult<HashMap<OwnedRoomId, i64>> {
    let joined: Vec<OwnedRoomId> = memberships.iter().filter(|(_, m)| m.membership == "join").map(|(room_id, _)| room_id.clone()).collect();
    let mut stamps = HashMap::new();
    let range = StreamRange { since: None, upto };
    for (shard, (_, upto), rooms) in range.group_by_shard(&server.db, &joined, |room| room.as_str()) {
        for (room_id, stamp) in events::newest_of_types(&shard.pool, &rooms, upto, BUMP_EVENT_TYPES).await? {
            if let (Ok(room_id), Some(stamp)) = (OwnedRoomId::try_from(room_id), stamp) {
                stamps.insert(room_id, stamp);
            }
        }
    }
    Ok(stamps)
}

/// What planning reads besides the rooms' configurations.
struct PlanContext<'a> {
    connection: &'a Connection<'a>,
    memberships: &'a BTreeMap<OwnedRoomId, UserRoom>,
    bump_stamps: &'a HashMap<OwnedRoomId, i64>,
    direct: &'a BTreeSet<OwnedRoomId>,
    upto: &'a SyncToken,
}

/// Which of the configured rooms to send, and how: rooms the connection
/// lacks (or has as an invite it since accepted) from scratch, rooms whose
/// settings grew with what they lack, and the others only when something
/// happened in them since they were sent.
async fn plan_rooms<'a>(server: &Homeserver, user_id: &UserId, cx: &PlanContext<'a>, configs: &'a BTreeMap<OwnedRoomId, RoomConfig>) -> ApiResult<Vec<RoomPlan<'a>>> {
    let mut plans = Vec::new();
    let mut unchanged = Vec::new();
    for (room_id, config) in configs {
        let Some(membership) = cx.memberships.get(room_id) else { continue };
        let joining = matches!(membership.membership.as_str(), "join" | "invite");
        let previous = cx.connection.sent(room_id.as_str()).filter(|sent| sent.membership == membership.membership || !joining);
        if membership.membership == "invite" && previous.is_some() {
            // An invite is its stripped state, which the client has.
            continue;
        }
        let (expanded, full_state) = previous.map_or((false, false), |sent| {
            let limit = i64::try_from(config.timeline_limit).unwrap_or(i64::MAX);
            (limit > sent.timeline_limit, !RequiredState::from_json(&sent.required_state).covers(&config.required_state))
        });
        let plan = RoomPlan {
            room_id,
            membership,
            config,
            previous,
            expanded,
            full_state,
            at: if membership.membership == "join" { cx.upto.position_of(&server.db, room_id.as_str()) } else { membership.room_pos },
            bump_stamp: cx.bump_stamps.get(room_id).copied().unwrap_or(membership.membership_ts),
            is_dm: cx.direct.contains(room_id),
        };
        match previous {
            Some(sent) if !expanded && !full_state && sent.membership == membership.membership => unchanged.push((plan, sent.sent_upto)),
            _ => plans.push(plan),
        }
    }
    let ranges: Vec<RoomRange> = unchanged.iter().map(|(plan, after)| RoomRange { room_id: plan.room_id.to_owned(), after: *after, upto: plan.at }).collect();
    let busy = rooms_with_news(server, user_id, &ranges).await?;
    plans.extend(unchanged.into_iter().map(|(plan, _)| plan).filter(|plan| busy.contains(plan.room_id.as_str())));
    Ok(plans)
}

/// Of `ranges`, the rooms where something the room's entry shows happened
/// in the range: events, or the user's notification counts moving (new
/// push actions, or their own read receipt).
async fn rooms_with_news(server: &Homeserver, user_id: &UserId, ranges: &[RoomRange]) -> ApiResult<BTreeSet<String>> {
    let ids: Vec<OwnedRoomId> = ranges.iter().map(|range| range.room_id.clone()).collect();
    let mut busy = BTreeSet::new();
    for (shard, rooms) in server.db.rooms_by_shard(&ids) {
        let db = &shard.pool;
        let rooms: BTreeSet<&OwnedRoomId> = rooms.iter().collect();
        let ranges: Vec<RoomRange> = ranges.iter().filter(|range| rooms.contains(&range.room_id)).cloned().collect();
        busy.extend(events::rooms_with_events_in(db, &ranges).await?);
        busy.extend(push_actions::rooms_changed_in(db, user_id, &ranges).await?);
        busy.extend(receipts::rooms_with_own_receipts_in(db, user_id, &ranges).await?);
    }
    Ok(busy)
}
