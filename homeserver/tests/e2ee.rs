//! End-to-end encryption through real Olm/Megolm clients (matrix-sdk with
//! e2e-encryption): key upload, query and claim, room-key sharing over
//! to-device messages, decryption on both sides, device deletion; and the
//! exactly-once guarantee of one-time key claims under concurrency.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{TestServer, api::{enc, new_txn_id, password_auth}, matrix::{sync_now, sync_until}, password_of};
use matrix_sdk::{
    Client,
    deserialized_responses::TimelineEvent,
    ruma::{OwnedRoomId, OwnedUserId, RoomId, api::client::room::create_room, assign, events::room::message::RoomMessageEventContent},
};
use serde_json::{Value, json};

const SOON: Duration = Duration::from_secs(10);

/// Messages of `room_id` in a sync response that the client decrypted.
fn decrypted_bodies(events: &[TimelineEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.encryption_info().is_some())
        .filter_map(|event| serde_json::from_str::<Value>(event.raw().json().get()).ok())
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Syncs `client` until it decrypted a message with `body` in `room_id`.
async fn wait_for_decrypted(client: &Client, room_id: &RoomId, body: &str) {
    sync_until(client, SOON, &format!("decrypted {body:?}"), |response| {
        response.rooms.joined.get(room_id).is_some_and(|room| decrypted_bodies(&room.timeline.events).iter().any(|b| b == body))
    })
    .await;
}

/// Alice creates an encrypted room with Bob; both are joined and synced.
async fn encrypted_room(alice: &Client, bob: &Client) -> OwnedRoomId {
    let bob_id: OwnedUserId = bob.user_id().expect("logged in").to_owned();
    let encryption = serde_json::from_value(json!({
        "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" }
    }))
    .expect("initial state event");
    let request = assign!(create_room::v3::Request::new(), { invite: vec![bob_id.clone()], initial_state: vec![encryption] });
    let room = alice.create_room(request).await.expect("createRoom");
    let room_id = room.room_id().to_owned();
    sync_until(bob, SOON, "the invite", |response| response.rooms.invited.contains_key(&room_id)).await;
    bob.join_room_by_id(&room_id).await.expect("joining");
    sync_until(alice, SOON, "Bob's join", |response| response.rooms.joined.get(&room_id).is_some_and(|r| !r.timeline.events.is_empty())).await;
    sync_now(bob).await;
    room_id
}

/// Two fresh matrix-sdk users in an encrypted room of Alice's.
async fn alice_and_bob_in_encrypted_room(server: &TestServer) -> (Client, Client, OwnedRoomId) {
    let alice = server.matrix_client("alice").await;
    let bob = server.matrix_client("bob").await;
    sync_now(&alice).await;
    sync_now(&bob).await;
    let room_id = encrypted_room(&alice, &bob).await;
    (alice, bob, room_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_exchange_encrypted_messages() {
    let server = TestServer::start().await;
    let (alice, bob, room_id) = alice_and_bob_in_encrypted_room(&server).await;

    let alice_room = alice.get_room(&room_id).expect("Alice's room");
    assert!(alice_room.latest_encryption_state().await.expect("encryption state").is_encrypted());
    alice_room.send(RoomMessageEventContent::text_plain("secret from Alice")).await.expect("sending");
    wait_for_decrypted(&bob, &room_id, "secret from Alice").await;

    let bob_room = bob.get_room(&room_id).expect("Bob's room");
    bob_room.send(RoomMessageEventContent::text_plain("secret from Bob")).await.expect("sending");
    wait_for_decrypted(&alice, &room_id, "secret from Bob").await;

    // What the server stored is ciphertext only.
    let stored: Vec<Value> = sqlx::query_scalar("SELECT pdu FROM events WHERE room_id = $1 AND event_type = 'm.room.encrypted'")
        .bind(room_id.as_str())
        .fetch_all(server.server().db.room_shard(&room_id))
        .await
        .expect("reading events");
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|pdu| pdu["content"]["ciphertext"].is_string() && pdu["content"].get("body").is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_device_stops_being_encrypted_to() {
    let server = TestServer::start().await;
    let alice = server.matrix_client("alice").await;
    let alice_phone = server.matrix_login("alice", &password_of("alice")).await;
    let bob = server.matrix_client("bob").await;
    for client in [&alice, &alice_phone, &bob] {
        sync_now(client).await;
    }
    let room_id = encrypted_room(&alice, &bob).await;
    sync_now(&alice_phone).await;

    // Bob's message reaches both of Alice's devices.
    let bob_room = bob.get_room(&room_id).expect("Bob's room");
    bob_room.send(RoomMessageEventContent::text_plain("to both devices")).await.expect("sending");
    wait_for_decrypted(&alice, &room_id, "to both devices").await;
    wait_for_decrypted(&alice_phone, &room_id, "to both devices").await;
    let alice_id = alice.user_id().expect("logged in").to_owned();
    let phone_id = alice_phone.device_id().expect("logged in").to_owned();
    assert!(bob.encryption().get_user_devices(&alice_id).await.expect("devices").get(&phone_id).is_some());

    // Alice deletes the phone (user-interactive auth with her password).
    let api = server.api_as(alice.access_token().as_deref().expect("token"));
    let path = format!("/_matrix/client/v3/devices/{}", enc(phone_id.as_str()));
    let session = api.delete(&path, json!({})).await.uia_session("m.login.password");
    api.delete(&path, json!({ "auth": password_auth(alice_id.as_str(), &password_of("alice"), &session) })).await.ok();

    // Bob learns of it through device_lists.changed (his client re-queries
    // Alice's keys) and stops encrypting to it.
    let deadline = std::time::Instant::now() + SOON;
    while bob.encryption().get_user_devices(&alice_id).await.expect("devices").get(&phone_id).is_some() {
        assert!(std::time::Instant::now() < deadline, "Bob still sees the deleted device");
        common::matrix::sync_once(&bob, Duration::from_millis(500)).await;
    }
    bob_room.send(RoomMessageEventContent::text_plain("after the deletion")).await.expect("sending");
    wait_for_decrypted(&alice, &room_id, "after the deletion").await;
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM to_device_messages WHERE user_id = $1 AND device_id = $2")
        .bind(alice_id.as_str())
        .bind(phone_id.as_str())
        .fetch_one(server.server().db.user_shard(&alice_id))
        .await
        .expect("counting");
    assert_eq!(queued, 0, "nothing is queued for the deleted device");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claims_never_hand_out_a_one_time_key_twice() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let alice_api = server.api_as(&alice.access_token);
    let one_time_keys: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("signed_curve25519:KEY{i:03}"), json!({ "key": format!("public key {i}"), "signatures": {} })))
        .collect();
    let uploaded = alice_api
        .post(
            "/_matrix/client/v3/keys/upload",
            json!({
                "one_time_keys": one_time_keys,
                "fallback_keys": { "signed_curve25519:FALLBACK": { "key": "fallback", "fallback": true, "signatures": {} } },
            }),
        )
        .await;
    assert_eq!(uploaded.ok()["one_time_key_counts"]["signed_curve25519"], 40);

    // 50 claims at once for 40 keys: 40 distinct one-time keys, then the fallback key.
    let bob_api = server.api_as(&bob.access_token);
    let body = json!({ "one_time_keys": { alice.user_id.as_str(): { alice.device_id.as_str(): "signed_curve25519" } } });
    let claims = futures::future::join_all((0..50).map(|_| bob_api.post("/_matrix/client/v3/keys/claim", body.clone()))).await;
    let mut claimed = Vec::new();
    for reply in &claims {
        let keys = reply.ok()["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()].as_object().cloned().unwrap_or_default();
        assert_eq!(keys.len(), 1, "every claim gets exactly one key: {keys:?}");
        claimed.extend(keys.keys().cloned());
    }
    let one_time: Vec<&String> = claimed.iter().filter(|id| id.as_str() != "signed_curve25519:FALLBACK").collect();
    assert_eq!(one_time.len(), 40);
    assert_eq!(one_time.iter().collect::<BTreeSet<_>>().len(), 40, "no one-time key was handed out twice");

    // The device is told how many keys are left and that its fallback key was used.
    let sync = alice_api.sync(None, 0).await;
    assert_eq!(sync.ok()["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync.ok()["device_unused_fallback_key_types"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn to_device_messages_are_delivered_once_and_kept_until_acknowledged() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let bob_api = server.api_as(&bob.access_token);
    let first = bob_api.sync(None, 0).await.str("next_batch");

    let alice_api = server.api_as(&alice.access_token);
    let txn = new_txn_id();
    let path = format!("/_matrix/client/v3/sendToDevice/m.test/{txn}");
    let body = json!({ "messages": { bob.user_id.as_str(): { bob.device_id.as_str(): { "n": 1 } } } });
    alice_api.put(&path, body.clone()).await.ok();
    alice_api.put(&path, body).await.ok(); // a retried transaction is not delivered twice

    let delivered = bob_api.sync(Some(&first), 5_000).await;
    let events = delivered.ok()["to_device"]["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events, vec![json!({ "type": "m.test", "sender": alice.user_id, "content": { "n": 1 } })]);

    // Syncing again from the old token (the answer was lost) delivers it again…
    let again = bob_api.sync(Some(&first), 0).await;
    assert_eq!(again.ok()["to_device"]["events"].as_array().map(Vec::len), Some(1));
    // …and from the new token it is acknowledged and gone.
    let next = again.str("next_batch");
    let after = bob_api.sync(Some(&next), 0).await;
    assert!(after.ok()["to_device"]["events"].as_array().is_none_or(Vec::is_empty));
    let bob_id = ruma::UserId::parse(bob.user_id.as_str()).expect("user id");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM to_device_messages")
        .fetch_one(server.server().db.user_shard(&bob_id))
        .await
        .expect("counting");
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_device_reads_old_messages_through_key_backup() {
    let server = TestServer::start().await;
    let (alice, bob, room_id) = alice_and_bob_in_encrypted_room(&server).await;

    // Alice sets up recovery: cross-signing, secret storage and a key backup.
    let recovery_key = alice.encryption().recovery().enable().await.expect("enabling recovery");

    let alice_room = alice.get_room(&room_id).expect("Alice's room");
    alice_room.send(RoomMessageEventContent::text_plain("before the new phone (Alice)")).await.expect("sending");
    let bob_room = bob.get_room(&room_id).expect("Bob's room");
    bob_room.send(RoomMessageEventContent::text_plain("before the new phone (Bob)")).await.expect("sending");
    wait_for_decrypted(&alice, &room_id, "before the new phone (Bob)").await;
    alice.encryption().backups().wait_for_steady_state().await.expect("room keys backed up");

    // A new phone: log in, recover with the key, fetch the room keys, read history.
    let phone = server.matrix_login("alice", &password_of("alice")).await;
    sync_now(&phone).await;
    phone.encryption().recovery().recover(&recovery_key).await.expect("recovering");
    phone.encryption().backups().download_room_keys_for_room(&room_id).await.expect("downloading room keys");
    let room = phone.get_room(&room_id).expect("the phone knows the room");
    let mut options = matrix_sdk::room::MessagesOptions::backward();
    options.limit = 50u32.into();
    let history = room.messages(options).await.expect("/messages");
    let mut bodies = decrypted_bodies(&history.chunk);
    bodies.sort();
    assert_eq!(bodies, vec!["before the new phone (Alice)", "before the new phone (Bob)"]);
}
