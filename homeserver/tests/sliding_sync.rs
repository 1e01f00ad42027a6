//! Simplified sliding sync (MSC4186): Element X's room list (matrix-sdk-ui's
//! `RoomListService`) against this server, and the protocol details over
//! raw HTTP: list ranges and counts, `required_state` with `$LAZY` and
//! `$ME`, timeline limits, unknown positions, the extensions, long-polling
//! and connection state across a restart.

// matrix-sdk-ui's futures nest deeper than the default limit lets clippy
// compute the test's layout.
#![recursion_limit = "256"]

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    TestServer,
    api::{Api, Reply, enc, new_txn_id, query},
    matrix::{sync_now, sync_until},
};
use futures::{StreamExt as _, pin_mut};
use matrix_sdk::ruma::{OwnedRoomId, api::client::room::create_room, assign, events::room::message::RoomMessageEventContent};
use matrix_sdk_ui::{
    eyeball_im::Vector,
    room_list_service::{RoomListService, filters},
    sync_service::SyncService,
    timeline::{RoomExt as _, TimelineItem},
};
use serde_json::{Value, json};

const SOON: Duration = Duration::from_secs(10);
const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request from `pos` (a new connection when `None`).
async fn sliding(api: &Api, pos: Option<&str>, timeout_ms: u64, body: Value) -> Reply {
    let pos = pos.map(|pos| format!("&pos={}", query(pos))).unwrap_or_default();
    api.post(&format!("{PATH}?timeout={timeout_ms}{pos}"), body).await
}

/// A request with one list `all` over `range`.
fn list_request(range: [u64; 2], required_state: Value, timeline_limit: u64) -> Value {
    json!({ "lists": { "all": { "ranges": [range], "required_state": required_state, "timeline_limit": timeline_limit } } })
}

/// The `(type, state_key)` pairs of a room's `required_state`, sorted.
fn state_keys(room: &Value) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = room["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["type"].as_str().unwrap_or_default().to_owned(), e["state_key"].as_str().unwrap_or_default().to_owned()))
        .collect();
    keys.sort();
    keys
}

/// Whether a timeline shows a (decrypted) text message with `body`.
fn has_message(items: &Vector<Arc<TimelineItem>>, body: &str) -> bool {
    items.iter().filter_map(|item| item.as_event()).any(|event| event.content().as_message().is_some_and(|message| message.body() == body))
}

fn bodies(room: &Value) -> Vec<String> {
    common::message_bodies(room["timeline"].as_array().into_iter().flatten())
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_advertise_simplified_sliding_sync() {
    let server = TestServer::start().await;
    let versions = server.api().get("/_matrix/client/versions").await;
    assert_eq!(versions.ok()["unstable_features"]["org.matrix.simplified_msc3575"], true);
}

/// What Element X does: the room list service lists the user's rooms, and
/// an opened room's timeline receives a new message from someone else.
#[tokio::test(flavor = "multi_thread")]
async fn room_list_service_lists_rooms_and_receives_new_messages() {
    let server = TestServer::start().await;
    // The rooms are made over raw HTTP, so the client learns of them only
    // through sliding sync.
    let alice_user = server.register_user("alice").await;
    let alice_api = server.api_as(&alice_user.access_token);
    let bob = server.register_user("bob").await;
    let bob_api = server.api_as(&bob.access_token);
    let notes_id = OwnedRoomId::try_from(alice_api.create_room(json!({ "name": "Notes" })).await).expect("room id");
    let tea_id = OwnedRoomId::try_from(bob_api.create_room(json!({ "name": "Tea", "invite": [alice_user.user_id] })).await).expect("room id");
    alice_api.join(tea_id.as_str()).await.ok();
    let alice = server.matrix_login("alice", &alice_user.password).await;

    let service = Arc::new(RoomListService::new(alice.clone()).await.expect("room list service"));
    let sync = tokio::spawn({
        let service = service.clone();
        async move {
            let stream = service.sync();
            pin_mut!(stream);
            while let Some(result) = stream.next().await {
                result.map_err(|err| err.to_string())?;
            }
            Ok::<(), String>(())
        }
    });

    let all_rooms = service.all_rooms().await.expect("the all_rooms list");
    let (entries, controller) = all_rooms.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(filters::new_filter_non_left()));
    pin_mut!(entries);
    let mut rooms = Vector::new();
    let listed = tokio::time::timeout(SOON, async {
        loop {
            let ids: Vec<OwnedRoomId> = rooms.iter().map(|room: &matrix_sdk_ui::room_list_service::RoomListItem| room.room_id().to_owned()).collect();
            if ids.contains(&notes_id) && ids.contains(&tea_id) {
                return ids;
            }
            for diff in entries.next().await.expect("the room list stream ended") {
                diff.apply(&mut rooms);
            }
        }
    })
    .await;
    assert!(!sync.is_finished(), "the sync loop stopped: {:?}", sync.await);
    let listed = listed.expect("the room list shows both rooms");
    assert_eq!(listed.len(), 2, "only Alice's rooms: {listed:?}");
    // The list shows a room as soon as the client knows it; its state is
    // stored with the rest of the response.
    let tea = service.room(&tea_id).expect("the room is known");
    let named = tokio::time::timeout(SOON, async {
        while tea.name().as_deref() != Some("Tea") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(named.is_ok(), "the room's name arrives with its required state; it is {:?}", tea.name());

    // Alice opens the room (Element X subscribes to it and shows its
    // timeline); Bob writes.
    service.subscribe_to_rooms(&[&tea_id]).await;
    let timeline = tea.timeline().await.expect("the room's timeline");
    let (mut items, stream) = timeline.subscribe().await;
    pin_mut!(stream);
    bob_api.send_text(tea_id.as_str(), "Earl Grey?").await.ok();
    let arrived = tokio::time::timeout(SOON, async {
        while !has_message(&items, "Earl Grey?") {
            for diff in stream.next().await.expect("the timeline stream ended") {
                diff.apply(&mut items);
            }
        }
    })
    .await;
    assert!(!sync.is_finished(), "the sync loop stopped: {:?}", sync.await);
    arrived.expect("Bob's message reaches Alice's timeline");
    sync.abort();
}

/// Element X's whole sync: the sync service runs the room list and the
/// encryption sync (to-device and e2ee extensions) side by side; a message
/// Bob encrypts reaches Alice's timeline decrypted, the room key having come
/// over the to-device extension.
#[tokio::test(flavor = "multi_thread")]
async fn sync_service_decrypts_an_encrypted_message() {
    let server = TestServer::start().await;
    let bob = server.matrix_client("bob").await;
    sync_now(&bob).await;
    let alice_user = server.register_user("alice").await;
    let alice = server.matrix_login("alice", &alice_user.password).await;
    let sync_service = SyncService::builder(alice.clone()).build().await.expect("the sync service");
    sync_service.start().await;

    // Alice's client uploads its device keys from the encryption sync.
    let keys_query = json!({ "device_keys": { alice_user.user_id.as_str(): [] } });
    let alice_device = alice.device_id().expect("logged in").to_string();
    let uploaded = tokio::time::timeout(SOON, async {
        loop {
            let reply = server.api_as(&alice_user.access_token).post("/_matrix/client/v3/keys/query", keys_query.clone()).await;
            if reply.ok()["device_keys"][&alice_user.user_id][&alice_device].is_object() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(uploaded.is_ok(), "Alice's device keys were uploaded");

    let encryption = serde_json::from_value(json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } })).expect("state event");
    let alice_id = alice.user_id().expect("logged in").to_owned();
    let request = assign!(create_room::v3::Request::new(), { invite: vec![alice_id], initial_state: vec![encryption] });
    let room_id = bob.create_room(request).await.expect("createRoom").room_id().to_owned();
    server.api_as(&alice_user.access_token).join(room_id.as_str()).await.ok();
    sync_until(&bob, SOON, "Alice's join", |response| response.rooms.joined.get(&room_id).is_some_and(|room| !room.timeline.events.is_empty())).await;
    bob.get_room(&room_id).expect("Bob's room").send(RoomMessageEventContent::text_plain("for Alice only")).await.expect("sending");

    let room_list = sync_service.room_list_service();
    let room = tokio::time::timeout(SOON, async {
        loop {
            if let Ok(room) = room_list.room(&room_id) {
                return room;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the room reaches Alice's room list");
    room_list.subscribe_to_rooms(&[&room_id]).await;
    let timeline = room.timeline().await.expect("the room's timeline");
    let (mut items, stream) = timeline.subscribe().await;
    pin_mut!(stream);
    let decrypted = tokio::time::timeout(SOON, async {
        while !has_message(&items, "for Alice only") {
            for diff in stream.next().await.expect("the timeline stream ended") {
                diff.apply(&mut items);
            }
        }
    })
    .await;
    assert!(decrypted.is_ok(), "Bob's message is decrypted in Alice's timeline");
    sync_service.stop().await;
}

/// Lists are sorted by recency, cut to their ranges, and count every room;
/// invites come with their stripped state.
#[tokio::test(flavor = "multi_thread")]
async fn lists_are_sorted_by_recency_cut_to_ranges_and_counted() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let alice_api = server.api_as(&alice.access_token);
    let bob_api = server.api_as(&bob.access_token);
    let first = alice_api.create_room(json!({ "name": "first" })).await;
    let second = alice_api.create_room(json!({ "name": "second" })).await;
    let third = alice_api.create_room(json!({ "name": "third" })).await;
    alice_api.send_text(&first, "first is busiest").await.ok();
    let invite = bob_api.create_room(json!({ "name": "invite", "invite": [alice.user_id] })).await;

    let reply = sliding(&alice_api, None, 0, list_request([0, 1], json!([["m.room.name", ""]]), 1)).await;
    let body = reply.ok();
    assert_eq!(body["lists"]["all"]["count"], 4, "{reply}");
    let rooms = body["rooms"].as_object().expect("rooms");
    let mut sent: Vec<&String> = rooms.keys().collect();
    sent.sort();
    let mut expected = vec![&invite, &first];
    expected.sort();
    assert_eq!(sent, expected, "the two most recent rooms: {reply}");
    assert_eq!(rooms[&first]["initial"], true);
    assert_eq!(rooms[&first]["name"], "first");
    assert_eq!(bodies(&rooms[&first]), vec!["first is busiest"]);
    let invite_state = rooms[&invite]["invite_state"].as_array().expect("stripped state of the invite");
    assert!(invite_state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "invite"), "{reply}");
    assert!(rooms[&invite].get("timeline").is_none(), "no timeline before joining: {reply}");
    assert!(rooms[&invite]["bump_stamp"].as_u64() > rooms[&first]["bump_stamp"].as_u64());

    // Moving the range sends the rooms not sent yet, from scratch.
    let pos = reply.str("pos");
    let reply = sliding(&alice_api, Some(&pos), 0, list_request([0, 3], json!([["m.room.name", ""]]), 1)).await;
    let rooms = reply.ok()["rooms"].as_object().cloned().unwrap_or_default();
    let mut sent: Vec<&String> = rooms.keys().collect();
    sent.sort();
    let mut expected = vec![&second, &third];
    expected.sort();
    assert_eq!(sent, expected, "{reply}");
    assert!(rooms.values().all(|room| room["initial"] == true));

    // is_invite filters.
    let only_invites = json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 0, "filters": { "is_invite": true } } } });
    let reply = sliding(&alice_api, None, 0, only_invites).await;
    assert_eq!(reply.ok()["lists"]["all"]["count"], 1, "{reply}");
    assert_eq!(reply.body["rooms"].as_object().map(|rooms| rooms.keys().cloned().collect::<Vec<_>>()), Some(vec![invite.clone()]));

    let backwards = json!({ "lists": { "all": { "ranges": [[3, 1]], "timeline_limit": 1 } } });
    sliding(&alice_api, None, 0, backwards).await.assert_error(400, "M_INVALID_PARAM");
}

/// `required_state` sends what was asked: exact keys, `$ME`, wildcards, and
/// for `$LAZY` the members of the timeline's senders only.
#[tokio::test(flavor = "multi_thread")]
async fn required_state_is_filtered_with_lazy_members() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let carol = server.register_user("carol").await;
    let alice_api = server.api_as(&alice.access_token);
    let room = alice_api.create_room(json!({ "name": "Garden", "topic": "Roses", "preset": "public_chat" })).await;
    server.api_as(&carol.access_token).join(&room).await.ok();
    let bob_api = server.api_as(&bob.access_token);
    bob_api.join(&room).await.ok();
    bob_api.send_text(&room, "hello").await.ok();

    let lazy = json!([["m.room.name", ""], ["m.room.member", "$LAZY"]]);
    let reply = sliding(&alice_api, None, 0, list_request([0, 0], lazy, 1)).await;
    let keys = state_keys(&reply.ok()["rooms"][&room]);
    assert_eq!(keys, vec![("m.room.member".to_owned(), bob.user_id.clone()), ("m.room.name".to_owned(), String::new())], "{reply}");

    let me = json!([["m.room.member", "$ME"], ["m.room.topic", ""]]);
    let reply = sliding(&alice_api, None, 0, list_request([0, 0], me, 1)).await;
    let keys = state_keys(&reply.ok()["rooms"][&room]);
    assert_eq!(keys, vec![("m.room.member".to_owned(), alice.user_id.clone()), ("m.room.topic".to_owned(), String::new())], "{reply}");

    let all_members = json!([["m.room.member", "*"]]);
    let reply = sliding(&alice_api, None, 0, list_request([0, 0], all_members, 1)).await;
    let members: Vec<String> = state_keys(&reply.ok()["rooms"][&room]).into_iter().map(|(_, key)| key).collect();
    assert_eq!(members, vec![alice.user_id.clone(), bob.user_id.clone(), carol.user_id.clone()], "{reply}");

    let mut everything = list_request([0, 0], json!([["*", "*"]]), 0);
    everything["conn_id"] = json!("everything");
    let everything = sliding(&alice_api, None, 0, everything).await;
    let keys = state_keys(&everything.ok()["rooms"][&room]);
    assert!(keys.contains(&("m.room.create".to_owned(), String::new())) && keys.len() > 6, "{everything}");
    assert_eq!(everything.body["rooms"][&room]["joined_count"], 3);

    // Widening `required_state` on a connection sends the newly wanted state.
    let pos = reply.str("pos");
    let wider = json!([["m.room.member", "*"], ["m.room.topic", ""]]);
    let reply = sliding(&alice_api, Some(&pos), 0, list_request([0, 0], wider, 1)).await;
    let room_entry = &reply.ok()["rooms"][&room];
    assert!(room_entry.get("initial").is_none(), "{reply}");
    assert!(state_keys(room_entry).contains(&("m.room.topic".to_owned(), String::new())), "{reply}");
}

/// `timeline_limit` bounds the timeline and sets `limited`; the next
/// response sends only what is new.
#[tokio::test(flavor = "multi_thread")]
async fn timeline_limit_and_deltas() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let room = alice_api.create_room(json!({})).await;
    for n in 1..=5 {
        alice_api.send_text(&room, &format!("message {n}")).await.ok();
    }

    let request = list_request([0, 0], json!([]), 3);
    let reply = sliding(&alice_api, None, 0, request.clone()).await;
    let entry = &reply.ok()["rooms"][&room];
    assert_eq!(bodies(entry), vec!["message 3", "message 4", "message 5"], "{reply}");
    assert_eq!(entry["limited"], true);
    let prev_batch = entry["prev_batch"].as_str().expect("prev_batch");
    let older = alice_api.messages(&room, &format!("dir=b&limit=2&from={}", query(prev_batch))).await;
    let older: Vec<String> = common::message_bodies(older.ok()["chunk"].as_array().into_iter().flatten());
    assert_eq!(older, vec!["message 2", "message 1"]);

    // Nothing new: a zero-timeout request returns the room no more.
    let pos = reply.str("pos");
    let quiet = sliding(&alice_api, Some(&pos), 0, request.clone()).await;
    assert!(quiet.ok()["rooms"].as_object().is_none_or(|rooms| rooms.is_empty()), "{quiet}");
    assert_eq!(quiet.body["lists"]["all"]["count"], 1);

    alice_api.send_text(&room, "message 6").await.ok();
    let reply = sliding(&alice_api, Some(&quiet.str("pos")), 0, request.clone()).await;
    let entry = &reply.ok()["rooms"][&room];
    assert_eq!(bodies(entry), vec!["message 6"], "{reply}");
    assert!(entry.get("initial").is_none() && entry.get("limited").is_none(), "{reply}");
    assert_eq!(entry["num_live"], 1);

    // That response was lost: the client repeats its request, and the room
    // comes again (from scratch, as the server cannot know what it has).
    let repeated = sliding(&alice_api, Some(&quiet.str("pos")), 0, request).await;
    let entry = &repeated.ok()["rooms"][&room];
    assert_eq!(bodies(entry).last().map(String::as_str), Some("message 6"), "{repeated}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_positions_restart_the_connection() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let request = list_request([0, 9], json!([]), 1);
    for pos in ["garbage", "12", "999_s1_t0", "0_s99999_t0"] {
        sliding(&alice_api, Some(pos), 0, request.clone()).await.assert_error(400, "M_UNKNOWN_POS");
    }
    // A position of one connection is unknown to another.
    alice_api.create_room(json!({})).await;
    let reply = sliding(&alice_api, None, 0, json!({ "conn_id": "one", "lists": request["lists"] })).await;
    let pos = reply.str("pos");
    sliding(&alice_api, Some(&pos), 0, json!({ "conn_id": "two", "lists": request["lists"] })).await.assert_error(400, "M_UNKNOWN_POS");
    sliding(&alice_api, Some(&pos), 0, json!({ "conn_id": "one", "lists": request["lists"] })).await.ok();
}

/// The to-device extension delivers a message until it is acknowledged by
/// `since`; the e2ee extension reports device list changes and key counts.
#[tokio::test(flavor = "multi_thread")]
async fn e2ee_and_to_device_extensions() {
    let server = TestServer::start().await;
    // Sharing a room makes Bob's key changes Alice's business.
    let (alice, bob, _shared_room) = server.two_users_in_a_room().await;
    let alice_api = server.api_as(&alice.access_token);
    let bob_api = server.api_as(&bob.access_token);

    let extensions = |since: Option<&str>| json!({ "conn_id": "encryption", "extensions": { "to_device": { "enabled": true, "since": since }, "e2ee": { "enabled": true } } });
    let first = sliding(&alice_api, None, 0, extensions(None)).await;
    assert_eq!(first.ok()["extensions"]["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 0, "{first}");
    let since = first.body["extensions"]["to_device"]["next_batch"].as_str().expect("next_batch").to_owned();

    let path = format!("/_matrix/client/v3/sendToDevice/m.test/{}", new_txn_id());
    bob_api.put(&path, json!({ "messages": { alice.user_id.as_str(): { alice.device_id.as_str(): { "n": 1 } } } })).await.ok();
    bob_api.post("/_matrix/client/v3/keys/upload", json!({ "device_keys": device_keys(&bob.user_id, &bob.device_id) })).await.ok();

    let pos = first.str("pos");
    let delivered = sliding(&alice_api, Some(&pos), 5_000, extensions(Some(&since))).await;
    let to_device = &delivered.ok()["extensions"]["to_device"];
    assert_eq!(to_device["events"], json!([{ "type": "m.test", "sender": bob.user_id, "content": { "n": 1 } }]), "{delivered}");
    let changed = delivered.body["extensions"]["e2ee"]["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
    assert!(changed.contains(&json!(bob.user_id)), "Bob's new keys are a device list change: {delivered}");

    // A lost response: the same `since` delivers the message again …
    let again = sliding(&alice_api, Some(&pos), 0, extensions(Some(&since))).await;
    assert_eq!(again.ok()["extensions"]["to_device"]["events"].as_array().map(Vec::len), Some(1), "{again}");
    // … and the next `since` acknowledges it for good.
    let next = again.body["extensions"]["to_device"]["next_batch"].as_str().expect("next_batch").to_owned();
    let after = sliding(&alice_api, Some(&again.str("pos")), 0, extensions(Some(&next))).await;
    assert!(after.ok()["extensions"]["to_device"]["events"].as_array().is_none_or(Vec::is_empty), "{after}");
}

fn device_keys(user_id: &str, device_id: &str) -> Value {
    json!({
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device_id}"): "curve", format!("ed25519:{device_id}"): "ed" },
        "signatures": {},
    })
}

/// Account data, receipts and typing of the rooms in view.
#[tokio::test(flavor = "multi_thread")]
async fn account_data_receipts_and_typing_extensions() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.two_users_in_a_room().await;
    let alice_api = server.api_as(&alice.access_token);
    let bob_api = server.api_as(&bob.access_token);
    let tag_path = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/u.work", enc(&alice.user_id), enc(&room));
    alice_api.put(&tag_path, json!({ "order": 0.5 })).await.ok();

    let mut request = list_request([0, 9], json!([]), 1);
    request["extensions"] = json!({ "account_data": { "enabled": true }, "receipts": { "enabled": true }, "typing": { "enabled": true } });
    let first = sliding(&alice_api, None, 0, request.clone()).await;
    let extensions = &first.ok()["extensions"];
    assert!(extensions["account_data"]["global"].as_array().into_iter().flatten().any(|e| e["type"] == "m.push_rules"), "{first}");
    assert_eq!(extensions["account_data"]["rooms"][&room][0]["type"], "m.tag", "{first}");

    let sent = bob_api.send_text(&room, "ping").await.str("event_id");
    bob_api.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&sent)), json!({})).await.ok();
    bob_api.put(&format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)), json!({ "typing": true, "timeout": 30_000 })).await.ok();

    let next = sliding(&alice_api, Some(&first.str("pos")), 0, request).await;
    let extensions = &next.ok()["extensions"];
    assert!(extensions["receipts"]["rooms"][&room]["content"][&sent]["m.read"][&bob.user_id].is_object(), "{next}");
    assert_eq!(extensions["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob.user_id]), "{next}");
    assert!(extensions.get("account_data").is_none(), "nothing changed: {next}");
}

/// A long-poll returns as soon as a message arrives, not at its timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_wakes_on_a_new_message() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.two_users_in_a_room().await;
    let alice_api = server.api_as(&alice.access_token);
    let bob_api = server.api_as(&bob.access_token);
    let request = list_request([0, 9], json!([]), 5);
    let pos = sliding(&alice_api, None, 0, request.clone()).await.str("pos");

    let poll = tokio::spawn({
        let (alice_api, request) = (alice_api.clone(), request.clone());
        async move { sliding(&alice_api, Some(&pos), 20_000, request).await }
    });
    assert!(server.wait_for_waiting_sync(SOON).await, "the sliding sync long-polls");
    let sent_at = std::time::Instant::now();
    bob_api.send_text(&room, "wake up").await.ok();
    let reply = poll.await.expect("the long-poll task");
    let latency = sent_at.elapsed();
    assert_eq!(bodies(&reply.ok()["rooms"][&room]), vec!["wake up"], "{reply}");
    assert!(latency < Duration::from_secs(1), "answered after {latency:?}");
}

/// The connection state is in the database: after a restart the same `pos`
/// continues with deltas, not from scratch.
#[tokio::test(flavor = "multi_thread")]
async fn connections_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let room = alice_api.create_room(json!({})).await;
    let request = list_request([0, 9], json!([["m.room.create", ""]]), 5);
    let pos = sliding(&alice_api, None, 0, request.clone()).await.str("pos");

    server.restart().await;
    alice_api.send_text(&room, "after the restart").await.ok();
    let reply = sliding(&alice_api, Some(&pos), 0, request).await;
    let entry = &reply.ok()["rooms"][&room];
    assert!(entry.get("initial").is_none(), "{reply}");
    assert_eq!(bodies(entry), vec!["after the restart"]);
    assert!(entry.get("required_state").is_none(), "unchanged state is not sent again: {reply}");
}
