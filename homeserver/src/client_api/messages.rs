//! The timeline: send, redact, fetch one event, paginate (`/messages`) and
//! look around an event (`/context`).

use std::collections::BTreeSet;

use axum::Router;
use ruma::{
    RoomId, UInt, UserId,
    api::{
        Direction,
        client::{
            context::get_context,
            filter::RoomEventFilter,
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::get_room_event,
        },
    },
    events::TimelineEventType,
};
use serde_json::{Value as JsonValue, json};

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt},
    rooms::{NewEvent, RoomWriter, TxnRef, visibility::HistoryAccess},
    server::Homeserver,
    storage::{self, events::{self, StoredEvent}},
    sync::{filter, token::SyncToken},
    tim::room_rules,
};

/// Most events one `/messages` or `/context` call returns.
const MAX_LIMIT: u64 = 1000;
/// Rows read per round while filtering a page.
const BATCH: i64 = 200;
/// Rows scanned at most for one page, so a filter that matches nothing
/// cannot make one request read a whole room.
const MAX_SCAN: usize = 5000;

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(send)
        .endpoint(redact)
        .endpoint(get_event)
        .endpoint(messages)
        .endpoint(context)
}

async fn send(server: Homeserver, args: Args<send_message_event::v3::Request>) -> ApiResult<send_message_event::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let content: JsonValue = serde_json::from_str(request.body.json().get())?;
    room_rules::check_message(&request.event_type.to_string(), &content)?;
    let kind = TimelineEventType::from(request.event_type.to_string());
    let txn = TxnRef { device_id: &session.device_id, txn_id: request.txn_id.as_str() };
    let event_id = RoomWriter::append_one(&server, &request.room_id, &session.user_id, NewEvent::message(kind, content), Some(txn)).await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

async fn redact(server: Homeserver, args: Args<redact_event::v3::Request>) -> ApiResult<redact_event::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let db = server.db.room_shard(&request.room_id);
    let target = events::event(db, &request.room_id, &request.event_id).await?.ok_or_else(|| ApiError::not_found("Event not found"))?;
    if target.sender != session.user_id.as_str() && !may_redact_others(&server, &request.room_id, &session.user_id).await? {
        return Err(ApiError::forbidden("You may only redact your own events"));
    }
    room_rules::check_redaction(&target.pdu)?;
    let mut content = json!({});
    if let Some(reason) = &request.reason {
        content["reason"] = reason.clone().into();
    }
    let mut event = NewEvent::message(TimelineEventType::RoomRedaction, content);
    event.redacts = Some(request.event_id.clone());
    let txn = TxnRef { device_id: &session.device_id, txn_id: request.txn_id.as_str() };
    let event_id = RoomWriter::append_one(&server, &request.room_id, &session.user_id, event, Some(txn)).await?;
    Ok(redact_event::v3::Response::new(event_id))
}

/// Whether the user's power level reaches the room's `redact` level.
async fn may_redact_others(server: &Homeserver, room_id: &RoomId, user_id: &UserId) -> ApiResult<bool> {
    let levels = events::current_state_entry(server.db.room_shard(room_id), room_id, "m.room.power_levels", "").await?;
    let Some((_, levels, _)) = levels else { return Ok(false) };
    let level = |value: Option<&JsonValue>, default: i64| value.and_then(JsonValue::as_i64).unwrap_or(default);
    let user_level = level(levels.pointer(&format!("/users/{}", user_id.as_str().replace('~', "~0").replace('/', "~1"))), level(levels.get("users_default"), 0));
    Ok(user_level >= level(levels.get("redact"), 50))
}

async fn get_event(server: Homeserver, args: Args<get_room_event::v3::Request>) -> ApiResult<get_room_event::v3::Response> {
    let session = args.session()?;
    let room_id = &args.body.room_id;
    let db = server.db.room_shard(room_id);
    let not_found = || ApiError::not_found("Event not found");
    let access = HistoryAccess::load(db, room_id, &session.user_id).await?;
    // The spec's answer for an event the caller may not see, in a room they
    // never joined too: 404, which does not tell whether the room exists.
    access.readable_upto(storage::stream::current(db).await?).map_err(|_| not_found())?;
    let event = events::event(db, room_id, &args.body.event_id).await?.ok_or_else(not_found)?;
    let event = access.filter(&session.user_id, vec![event]).pop().ok_or_else(not_found)?;
    Ok(get_room_event::v3::Response::new(event.to_client(Some((&session.user_id, &session.device_id))).raw()))
}

/// One page of a room's timeline in either direction.
struct Page {
    events: Vec<StoredEvent>,
    /// Where the next page starts; `None` when the room has no more events
    /// that way.
    next: Option<i64>,
}

/// Which page to read: from token position `from` in direction `dir`
/// (backwards: events at or before `from`, down to but excluding `bound`;
/// forwards: events after `from` up to and including `bound`).
struct PageQuery<'a> {
    dir: Direction,
    from: i64,
    bound: i64,
    limit: usize,
    filter: &'a RoomEventFilter,
}

/// Reads a page of at most `limit` events the viewer may see and the
/// filter wants.
async fn paginate(server: &Homeserver, room_id: &RoomId, viewer: &UserId, access: &HistoryAccess, query: PageQuery<'_>) -> ApiResult<Page> {
    let PageQuery { dir, from, bound, limit, filter: wanted } = query;
    filter::check_size(wanted, server.config.limits.max_filter_entries)?;
    let db = server.db.room_shard(room_id);
    let mut events = Vec::new();
    let mut cursor = from;
    let mut scanned = 0;
    loop {
        let batch = match dir {
            Direction::Backward => events::range(db, room_id, bound, cursor, BATCH, true).await?,
            Direction::Forward => events::range(db, room_id, cursor, bound, BATCH, false).await?,
        };
        let exhausted = batch.len() < usize::try_from(BATCH).unwrap_or(usize::MAX);
        scanned += batch.len();
        for event in access.filter(viewer, batch.clone()).into_iter().filter(|e| filter::allows_event(wanted, &e.pdu)) {
            let position = event.stream_pos;
            events.push(event);
            if events.len() == limit {
                let next = match dir { Direction::Backward => position - 1, Direction::Forward => position };
                return Ok(Page { events, next: Some(next) });
            }
        }
        if let Some(last) = batch.last() {
            cursor = match dir { Direction::Backward => last.stream_pos - 1, Direction::Forward => last.stream_pos };
        }
        if exhausted {
            return Ok(Page { events, next: None });
        }
        if scanned >= MAX_SCAN {
            return Ok(Page { events, next: Some(cursor) });
        }
    }
}

/// A pagination token for a position in the room's history.
fn position_token(server: &Homeserver, room_id: &RoomId, pos: i64) -> String {
    SyncToken::for_room(&server.db, room_id, pos).to_string()
}

fn page_limit(limit: UInt) -> usize {
    usize::try_from(u64::from(limit).clamp(1, MAX_LIMIT)).unwrap_or(10)
}

async fn messages(server: Homeserver, args: Args<get_message_events::v3::Request>) -> ApiResult<get_message_events::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let room_id = &request.room_id;
    let parse = |token: &Option<String>| token.as_deref().map(str::parse::<SyncToken>).transpose();
    let (from, to) = (parse(&request.from)?, parse(&request.to)?);
    for token in from.iter().chain(&to) {
        token.follow_map(&server.db).await?;
    }
    let from = from.map(|token| token.position_of(&server.db, room_id.as_str()));
    let to = to.map(|token| token.position_of(&server.db, room_id.as_str()));
    let db = server.db.room_shard(room_id);
    let access = HistoryAccess::load(db, room_id, &session.user_id).await?;
    let upto = access.readable_upto(storage::stream::current(db).await?)?;
    let (from, bound) = match request.dir {
        Direction::Backward => (from.unwrap_or(upto).min(upto), to.unwrap_or(-1)),
        Direction::Forward => (from.unwrap_or(0), to.unwrap_or(upto).min(upto)),
    };
    let page = paginate(&server, room_id, &session.user_id, &access, PageQuery { dir: request.dir, from, bound, limit: page_limit(request.limit), filter: &request.filter }).await?;

    let state = lazy_members(&server, room_id, upto, &request.filter, &page.events).await?;
    let viewer = Some((session.user_id.as_ref(), session.device_id.as_ref()));
    let mut response = get_message_events::v3::Response::new();
    response.start = position_token(&server, room_id, from);
    response.end = page.next.map(|next| position_token(&server, room_id, next));
    response.chunk = page.events.iter().map(|e| e.to_client(viewer).raw()).collect();
    response.state = state;
    Ok(response)
}

/// With lazy loading, the member events of the senders on the page (as
/// of `at`), so the client can show their names.
async fn lazy_members<T>(server: &Homeserver, room_id: &RoomId, at: i64, wanted: &RoomEventFilter, page: &[StoredEvent]) -> ApiResult<Vec<ruma::serde::Raw<T>>> {
    if wanted.lazy_load_options.is_disabled() {
        return Ok(Vec::new());
    }
    let senders: BTreeSet<&str> = page.iter().map(|e| e.sender.as_str()).collect();
    Ok(events::state_at(server.db.room_shard(room_id), room_id, at, None)
        .await?
        .into_iter()
        .filter(|e| e.pdu.get("type").and_then(JsonValue::as_str) == Some("m.room.member"))
        .filter(|e| e.pdu.get("state_key").and_then(JsonValue::as_str).is_some_and(|key| senders.contains(key)))
        .map(|e| e.to_client(None).raw())
        .collect())
}

async fn context(server: Homeserver, args: Args<get_context::v3::Request>) -> ApiResult<get_context::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let room_id = &request.room_id;
    let db = server.db.room_shard(room_id);
    let not_found = || ApiError::not_found("Event not found");
    let access = HistoryAccess::load(db, room_id, &session.user_id).await?;
    // 404 as in `get_event`.
    let upto = access.readable_upto(storage::stream::current(db).await?).map_err(|_| not_found())?;
    let event = events::event(db, room_id, &request.event_id).await?.ok_or_else(not_found)?;
    let event = access.filter(&session.user_id, vec![event]).pop().ok_or_else(not_found)?;

    let limit = page_limit(request.limit);
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let before = if before_limit == 0 {
        Page { events: Vec::new(), next: Some(event.stream_pos - 1) }
    } else {
        let query = PageQuery { dir: Direction::Backward, from: event.stream_pos - 1, bound: -1, limit: before_limit, filter: &request.filter };
        paginate(&server, room_id, &session.user_id, &access, query).await?
    };
    let after = if after_limit == 0 {
        Page { events: Vec::new(), next: Some(event.stream_pos) }
    } else {
        let query = PageQuery { dir: Direction::Forward, from: event.stream_pos, bound: upto, limit: after_limit, filter: &request.filter };
        paginate(&server, room_id, &session.user_id, &access, query).await?
    };

    let viewer = Some((session.user_id.as_ref(), session.device_id.as_ref()));
    let mut response = get_context::v3::Response::new();
    response.start = Some(position_token(&server, room_id, before.next.unwrap_or(-1).max(0)));
    response.end = Some(position_token(&server, room_id, after.next.unwrap_or(upto)));
    response.event = Some(event.to_client(viewer).raw());
    response.events_before = before.events.iter().map(|e| e.to_client(viewer).raw()).collect();
    response.events_after = after.events.iter().map(|e| e.to_client(viewer).raw()).collect();
    response.state = events::state_at(db, room_id, event.stream_pos, None).await?.iter().map(|e| e.to_client(None).raw()).collect();
    Ok(response)
}
