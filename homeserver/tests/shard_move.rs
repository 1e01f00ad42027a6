//! Moving logical shards between databases while clients write and sync
//! (`homeserver move-shard`): nothing lost, nothing twice, the old copy
//! gone, and no table forgotten by the mover.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{
    TestServer,
    api::{Api, enc, query, sync_timeline},
    message_bodies,
};
use homeserver::{
    rebalance::{
        self,
        tables::{SHARDED_TABLES, UNSHARDED_TABLES},
    },
    storage::shard_map::logical_shard,
};
use serde_json::json;

const SENDERS: usize = 4;
const MESSAGES_PER_SENDER: usize = 30;

/// Sends one message, retrying with the same transaction id while the
/// room's shard is fenced (503): what any client does on a 5xx.
async fn send_until_accepted(api: &Api, room_id: &str, txn_id: &str, body: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn_id}", enc(room_id));
    loop {
        let reply = api.put(&path, json!({ "msgtype": "m.text", "body": body })).await;
        if reply.status == 200 {
            return;
        }
        assert_eq!(reply.status, 503, "only a fenced write may fail: {reply}");
        assert_eq!(reply.body["errcode"], "M_UNKNOWN", "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Incremental syncs with a timeline limit no burst reaches, so that every
/// message arrives through sync itself (a gap would be `limited`).
async fn sync_messages(api: &Api, since: &str, received: &mut BTreeMap<String, Vec<String>>) -> String {
    let filter = query(&json!({ "room": { "timeline": { "limit": 1000 } } }).to_string());
    let reply = api.get(&format!("/_matrix/client/v3/sync?timeout=500&since={}&filter={filter}", query(since))).await;
    let body = reply.ok();
    for (room_id, room) in body["rooms"]["join"].as_object().into_iter().flatten() {
        assert_ne!(room["timeline"]["limited"], true, "a gap in {room_id}: {reply}");
        received.entry(room_id.clone()).or_default().extend(message_bodies(&sync_timeline(body, room_id)));
    }
    reply.str("next_batch")
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_move_under_write_load_and_every_event_arrives_once() {
    let server = TestServer::start_sharded(2, |_| {}).await;
    let db = server.server().db.clone();
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let (alice_api, bob_api) = (server.api_as(&alice.access_token), server.api_as(&bob.access_token));
    let mut rooms = Vec::new();
    for _ in 0..4 {
        let room_id = alice_api.create_room(json!({ "invite": [bob.user_id] })).await;
        bob_api.join(&room_id).await.ok();
        rooms.push(room_id);
    }
    // The first room's shard, and Bob's: his own rows (tokens, room index,
    // account data) move under his running sync.
    let mut moves = vec![logical_shard(&rooms[0]), logical_shard(&bob.user_id)];
    moves.dedup();
    let mut since = bob_api.sync(None, 0).await.str("next_batch");

    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (api, rooms) = (alice_api.clone(), rooms.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for n in 0..MESSAGES_PER_SENDER {
                    let (room_id, body) = (&rooms[(sender + n) % rooms.len()], format!("sender {sender} message {n}"));
                    send_until_accepted(&api, room_id, &format!("move-{sender}-{n}"), &body).await;
                    sent.push((room_id.clone(), body));
                }
                sent
            })
        })
        .collect();

    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    since = sync_messages(&bob_api, &since, &mut received).await;
    for logical in &moves {
        let from = db.database_of_logical(*logical);
        let moved = rebalance::move_shard(server.server(), *logical, 1 - from).await.expect("moving the shard");
        assert_eq!((moved.from, moved.to), (from, 1 - from));
        since = sync_messages(&bob_api, &since, &mut received).await;
    }
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sender in senders {
        for (room_id, body) in sender.await.expect("sender") {
            sent.entry(room_id).or_default().push(body);
        }
    }
    let total: usize = sent.values().map(Vec::len).sum();
    assert_eq!(total, SENDERS * MESSAGES_PER_SENDER);

    let deadline = Instant::now() + Duration::from_secs(30);
    while received.values().map(Vec::len).sum::<usize>() < total && Instant::now() < deadline {
        since = sync_messages(&bob_api, &since, &mut received).await;
    }
    for (room_id, bodies) in &sent {
        let expected: BTreeSet<&String> = bodies.iter().collect();
        let synced = received.get(room_id).cloned().unwrap_or_default();
        assert_eq!(synced.len(), bodies.len(), "{room_id}: every message once through sync, got {synced:?}");
        assert_eq!(synced.iter().collect::<BTreeSet<_>>(), expected, "{room_id}");
        let history = alice_api.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room_id))).await;
        let history = message_bodies(history.ok()["chunk"].as_array().expect("chunk"));
        assert_eq!(history.len(), bodies.len(), "{room_id}: every message once in the history");
        assert_eq!(history.iter().collect::<BTreeSet<_>>(), expected, "{room_id}");
    }

    // Each shard lives on one database only, and the map says which.
    for logical in &moves {
        let home = db.database_of_logical(*logical);
        for shard in db.shards() {
            let count: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM events WHERE logical_shard(room_id) = $1) + (SELECT count(*) FROM users WHERE logical_shard(user_id) = $1)")
                .bind(*logical as i32)
                .fetch_one(&shard.pool)
                .await
                .expect("counting");
            assert_eq!(count > 0, shard.index == home, "rows of logical shard {logical} on database {}", shard.index);
        }
    }
    // A token from before the moves still continues exactly.
    let new_message = alice_api.send_text(&rooms[0], "after the moves").await;
    new_message.ok();
    let mut late: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while late.get(&rooms[0]).is_none_or(Vec::is_empty) && Instant::now() < deadline {
        since = sync_messages(&bob_api, &since, &mut late).await;
    }
    assert_eq!(late.get(&rooms[0]).cloned().unwrap_or_default(), ["after the moves"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_before_a_move_is_translated_not_replayed() {
    let server = TestServer::start_sharded(2, |_| {}).await;
    let db = server.server().db.clone();
    let (alice, room_id) = {
        let alice = server.register_user("alice").await;
        let room_id = server.api_as(&alice.access_token).create_room(json!({})).await;
        (alice, room_id)
    };
    let api = server.api_as(&alice.access_token);
    api.send_text(&room_id, "before").await.ok();
    let before = api.sync(None, 0).await.str("next_batch");
    let logical = logical_shard(&room_id);
    rebalance::move_shard(server.server(), logical, 1 - db.database_of_logical(logical)).await.expect("moving the shard");
    api.send_text(&room_id, "after").await.ok();

    let mut received = BTreeMap::new();
    sync_messages(&api, &before, &mut received).await;
    assert_eq!(received.get(&room_id).cloned().unwrap_or_default(), ["after"], "old events are not replayed, new ones arrive");
    let history = api.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10", enc(&room_id))).await;
    assert_eq!(message_bodies(history.ok()["chunk"].as_array().expect("chunk")), ["after", "before"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_table_is_moved_or_listed_as_staying() {
    let server = TestServer::start().await;
    let tables: Vec<String> = sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        .fetch_all(server.server().db.global())
        .await
        .expect("listing tables");
    let known: BTreeSet<&str> = SHARDED_TABLES.iter().map(|table| table.name).chain(UNSHARDED_TABLES.iter().copied()).collect();
    let unknown: Vec<&String> = tables.iter().filter(|table| !known.contains(table.as_str())).collect();
    assert!(unknown.is_empty(), "tables neither moved by `move-shard` nor listed as staying: {unknown:?} (rebalance/tables.rs)");
}
