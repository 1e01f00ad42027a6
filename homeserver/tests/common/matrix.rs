//! matrix-sdk clients against the test server: how Element X and every other
//! matrix-sdk app talk to it.

use std::time::{Duration, Instant};

use matrix_sdk::{
    Client, Room,
    config::{RequestConfig, SyncSettings},
    deserialized_responses::TimelineEvent,
    room::MessagesOptions,
    ruma::{RoomId, UInt},
    sync::SyncResponse,
};
use serde_json::Value;

/// How long one request may take; generous, a test's own deadlines are
/// shorter where latency is the point.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Most `/messages` pages [`history`] follows before it gives up.
const MAX_PAGES: usize = 100;
/// Longest single long-poll `/sync` the helpers make.
const LONG_POLL: Duration = Duration::from_secs(2);

/// A client with in-memory stores, not logged in. It talks to `base_url`
/// exactly (plain HTTP, no discovery) and never retries: a 5xx or a dropped
/// connection is a failure the test must see, not something to paper over.
pub async fn client(base_url: &str) -> Client {
    Client::builder()
        .homeserver_url(base_url)
        .respect_login_well_known(false)
        .request_config(RequestConfig::new().disable_retry().timeout(REQUEST_TIMEOUT))
        .build()
        .await
        .expect("building a matrix-sdk client")
}

/// One `/sync` that returns at once.
pub async fn sync_now(client: &Client) -> SyncResponse {
    sync_once(client, Duration::ZERO).await
}

/// One `/sync` (from the client's last token) long-polling up to `timeout`.
pub async fn sync_once(client: &Client, timeout: Duration) -> SyncResponse {
    client
        .sync_once(SyncSettings::default().timeout(timeout))
        .await
        .unwrap_or_else(|err| panic!("sync of {}: {err}", who(client)))
}

/// Syncs until `done` accepts a response, for at most `within`; returns every
/// response seen, the accepted one last.
pub async fn sync_until(client: &Client, within: Duration, what: &str, mut done: impl FnMut(&SyncResponse) -> bool) -> Vec<SyncResponse> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(!remaining.is_zero(), "{}: timed out after {within:?} waiting for {what}", who(client));
        let response = sync_once(client, remaining.min(LONG_POLL)).await;
        let accepted = done(&response);
        seen.push(response);
        if accepted {
            return seen;
        }
    }
}

/// Syncs until a message with `body` arrives in `room_id`; returns when it
/// was seen.
pub async fn wait_for_message(client: &Client, room_id: &RoomId, body: &str, within: Duration) -> Instant {
    sync_until(client, within, &format!("message {body:?} in {room_id}"), |response| {
        super::message_bodies(&timeline(response, room_id)).iter().any(|b| b == body)
    })
    .await;
    Instant::now()
}

/// The timeline events of `room_id` in a sync response (joined or left), as
/// the JSON the server sent.
pub fn timeline(response: &SyncResponse, room_id: &RoomId) -> Vec<Value> {
    let joined = response.rooms.joined.get(room_id).map(|room| &room.timeline.events);
    let left = response.rooms.left.get(room_id).map(|room| &room.timeline.events);
    joined.into_iter().chain(left).flatten().map(event_json).collect()
}

/// The room's history as its client may see it, read backwards from the newest
/// event in pages of `page` with `/messages` until the server says there is
/// no more, and returned oldest first.
pub async fn history(room: &Room, page: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = UInt::from(page);
        let messages = room.messages(options).await.unwrap_or_else(|err| panic!("/messages in {}: {err}", room.room_id()));
        assert!(messages.chunk.len() <= page as usize, "/messages returned {} events for limit {page}", messages.chunk.len());
        events.extend(messages.chunk.iter().map(event_json));
        match messages.end {
            None => {
                events.reverse();
                return events;
            }
            Some(end) => {
                assert_ne!(from.as_deref(), Some(end.as_str()), "/messages does not progress: end == from == {end:?}");
                from = Some(end);
            }
        }
    }
    panic!("/messages in {} did not end within {MAX_PAGES} pages", room.room_id())
}

/// An event as the server sent it.
pub fn event_json(event: &TimelineEvent) -> Value {
    serde_json::from_str(event.raw().json().get()).expect("events are JSON objects")
}

fn who(client: &Client) -> String {
    client.user_id().map_or_else(|| "anonymous client".to_owned(), ToString::to_string)
}
