//! Sliding sync extensions: to-device messages and the device's encryption
//! state (the same as `/sync` gives, through `e2ee::sync_updates`), and the
//! account data, receipts and typing of the rooms the client looks at.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId,
    api::client::sync::sync_events::v5::{self, request::ExtensionRoomConfig},
};

use super::lists::ListWindow;
use crate::{
    e2ee,
    http::{ApiError, ApiResult, Session, raw_json},
    server::Homeserver,
    storage::{account_data, events::StoredEvent, receipts},
    sync::{engine, token::{StreamRange, SyncToken}},
};

/// Which rooms room-scoped extensions may cover.
pub struct Scope<'a> {
    pub windows: &'a [ListWindow],
    pub subscribed: &'a [OwnedRoomId],
    /// The user's joined rooms: the only ones with receipts, typing or room
    /// account data to send.
    pub joined: &'a BTreeSet<OwnedRoomId>,
}

impl Scope<'_> {
    /// The rooms of the windows of `lists` (every list when absent) and of
    /// `rooms` (every subscription when absent or `*`, and rooms named
    /// outright), joined ones only.
    fn rooms(&self, lists: Option<&[String]>, rooms: Option<&[ExtensionRoomConfig]>) -> BTreeSet<OwnedRoomId> {
        let mut out = BTreeSet::new();
        for window in self.windows.iter().filter(|w| lists.is_none_or(|names| names.contains(&w.name))) {
            out.extend(window.rooms.iter().cloned());
        }
        match rooms {
            None => out.extend(self.subscribed.iter().cloned()),
            Some(configs) => {
                for config in configs {
                    match config {
                        ExtensionRoomConfig::AllSubscribed => out.extend(self.subscribed.iter().cloned()),
                        ExtensionRoomConfig::Room(room_id) => {
                            out.insert(room_id.clone());
                        }
                        // A form a newer client knows and we do not: it
                        // names no room we could add.
                        _ => {}
                    }
                }
            }
        }
        out.retain(|room_id| self.joined.contains(room_id));
        out
    }
}

/// What every extension reads.
pub struct Context<'a> {
    pub server: &'a Homeserver,
    pub session: &'a Session,
    /// The client's token; `None` on a new connection.
    pub since: Option<&'a SyncToken>,
    pub upto: &'a SyncToken,
    pub scope: Scope<'a>,
    /// Rooms this response sends from scratch, with their timelines: they
    /// get their account data and receipts whole, not only what changed.
    pub initial: &'a BTreeMap<OwnedRoomId, Vec<StoredEvent>>,
}

impl Context<'_> {
    fn range(&self) -> StreamRange<'_> {
        StreamRange { since: self.since, upto: self.upto }
    }
}

/// The extensions the request enabled.
pub async fn build(cx: &Context<'_>, request: &v5::request::Extensions) -> ApiResult<v5::response::Extensions> {
    let mut response = v5::response::Extensions::default();
    encryption(cx, request, &mut response).await?;
    if request.account_data.enabled == Some(true) {
        let rooms = cx.scope.rooms(request.account_data.lists.as_deref(), request.account_data.rooms.as_deref());
        response.account_data = account_data(cx, &rooms).await?;
    }
    if request.receipts.enabled == Some(true) {
        let rooms = cx.scope.rooms(request.receipts.lists.as_deref(), request.receipts.rooms.as_deref());
        response.receipts = receipts(cx, &rooms).await?;
    }
    if request.typing.enabled == Some(true) {
        // Rooms sent from scratch get who is typing now; the others what
        // changed since the client's token.
        let (whole, changed): (Vec<OwnedRoomId>, Vec<OwnedRoomId>) =
            cx.scope.rooms(request.typing.lists.as_deref(), request.typing.rooms.as_deref()).into_iter().partition(|room_id| cx.since.is_none() || cx.initial.contains_key(room_id));
        let mut typing = cx.server.typing.changed_in(&whole, None).await;
        typing.extend(cx.server.typing.changed_in(&changed, cx.since.map(|token| token.typing)).await);
        response.typing.rooms = typing.into_iter().map(|(room_id, users)| (room_id, raw_json(&engine::typing_event(&users)))).collect();
    }
    Ok(response)
}

/// Whether the extensions carry nothing new (the one-time key counts and
/// fallback key types always come along and are no news).
pub fn is_empty(extensions: &v5::response::Extensions) -> bool {
    extensions.to_device.as_ref().is_none_or(|to_device| to_device.events.is_empty())
        && extensions.e2ee.device_lists.is_empty()
        && extensions.account_data.is_empty()
        && extensions.receipts.is_empty()
        && extensions.typing.is_empty()
}

/// `to_device` and `e2ee`. The to-device extension has its own position
/// (`since`/`next_batch`): messages up to `since` are acknowledged and
/// deleted, exactly as a `/sync` token past them does.
async fn encryption(cx: &Context<'_>, request: &v5::request::Extensions, response: &mut v5::response::Extensions) -> ApiResult<()> {
    let to_device = request.to_device.enabled == Some(true);
    let e2ee = request.e2ee.enabled == Some(true);
    if !to_device && !e2ee {
        return Ok(());
    }
    let to_device_since = match request.to_device.since.as_deref().filter(|_| to_device) {
        Some(since) => Some(since.parse::<i64>().ok().filter(|pos| *pos >= 0).ok_or_else(|| ApiError::invalid_param("Invalid to_device since token"))?),
        None => None,
    };
    let updates = e2ee::sync_updates(cx.server, cx.session, cx.range(), to_device_since).await?;
    if to_device {
        let mut extension = v5::response::ToDevice::default();
        extension.next_batch = updates.to_device_upto.to_string();
        extension.events = updates.to_device.iter().map(raw_json).collect();
        response.to_device = Some(extension);
    }
    if e2ee {
        response.e2ee.device_lists.changed = updates.changed;
        response.e2ee.device_lists.left = updates.left;
        response.e2ee.device_one_time_keys_count = updates.one_time_keys_count.into_iter().map(|(algorithm, count)| (algorithm.into(), count)).collect();
        response.e2ee.device_unused_fallback_key_types = Some(updates.unused_fallback_key_types.into_iter().map(Into::into).collect());
    }
    Ok(())
}

/// Global account data changed since the client's token (all of it on a
/// new connection), and the room account data of `rooms`: what changed, or
/// all of it for rooms sent from scratch.
async fn account_data(cx: &Context<'_>, rooms: &BTreeSet<OwnedRoomId>) -> ApiResult<v5::response::AccountData> {
    let user_id = &cx.session.user_id;
    let db = cx.server.db.user_shard(user_id);
    let (since, upto) = cx.range().of(&cx.server.db, user_id.as_str());
    let changed: Vec<_> = account_data::changed_since(db, user_id, since).await?.into_iter().filter(|e| e.stream_pos <= upto).collect();
    let mut extension = v5::response::AccountData::default();
    extension.global = engine::global_account_data(cx.server, user_id, &changed, since.is_none(), |_| true).await?.iter().map(raw_json).collect();

    let mut add = |entry: &account_data::AccountDataEntry| {
        if let Ok(room_id) = OwnedRoomId::try_from(entry.room_id.as_str()) {
            extension.rooms.entry(room_id).or_default().push(raw_json(&engine::account_data_event(entry)));
        }
    };
    changed.iter().filter(|e| rooms.iter().any(|r| r.as_str() == e.room_id)).for_each(&mut add);
    if let Some(since) = since {
        // Rooms sent from scratch also get what changed before `since`.
        let whole: BTreeSet<&str> = rooms.iter().filter(|r| cx.initial.contains_key(*r)).map(|r| r.as_str()).collect();
        if !whole.is_empty() {
            let older = account_data::changed_since(db, user_id, None).await?;
            older.iter().filter(|e| e.stream_pos <= since && whole.contains(e.room_id.as_str())).for_each(&mut add);
        }
    }
    Ok(extension)
}

/// Receipts of `rooms` that changed since the client's token. Rooms sent
/// from scratch get the receipts on the events of their timeline and the
/// user's own instead: enough to draw read markers without the receipt of
/// every member of a large room.
async fn receipts(cx: &Context<'_>, rooms: &BTreeSet<OwnedRoomId>) -> ApiResult<v5::response::Receipts> {
    let user_id = &cx.session.user_id;
    let rooms: Vec<OwnedRoomId> = rooms.iter().cloned().collect();
    let mut by_room: BTreeMap<String, Vec<receipts::Receipt>> = BTreeMap::new();
    for (shard, (since, upto), group) in cx.range().group_by_shard(&cx.server.db, &rooms, |room| room.as_str()) {
        let db = &shard.pool;
        let (whole, changed): (Vec<OwnedRoomId>, Vec<OwnedRoomId>) = group.iter().cloned().partition(|room_id| cx.since.is_none() || cx.initial.contains_key(room_id));
        if !changed.is_empty() {
            for receipt in receipts::changed_since(db, &changed, since).await?.into_iter().filter(|r| r.stream_pos <= upto) {
                by_room.entry(receipt.room_id.clone()).or_default().push(receipt);
            }
        }
        if !whole.is_empty() {
            for receipt in receipts::changed_since(db, &whole, None).await?.into_iter().filter(|r| r.stream_pos <= upto) {
                let on_timeline = OwnedRoomId::try_from(receipt.room_id.as_str())
                    .ok()
                    .and_then(|room_id| cx.initial.get(&room_id))
                    .is_some_and(|timeline| timeline.iter().any(|e| e.event_id == receipt.event_id));
                if on_timeline || receipt.user_id == user_id.as_str() {
                    by_room.entry(receipt.room_id.clone()).or_default().push(receipt);
                }
            }
        }
    }
    let mut extension = v5::response::Receipts::default();
    for (room_id, receipts) in by_room {
        let Ok(room_id) = OwnedRoomId::try_from(room_id) else { continue };
        if let Some(event) = engine::receipt_event(receipts, user_id) {
            extension.rooms.insert(room_id, raw_json(&event));
        }
    }
    Ok(extension)
}
