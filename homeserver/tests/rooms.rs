//! Rooms end to end: two people chat through matrix-sdk (invite, join,
//! messages in real time, history, display names, leaving), and the server
//! keeps outsiders and kicked members out.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestServer,
    api::{Reply, enc, query, sync_timeline},
    matrix::{history, sync_now, sync_until, timeline, wait_for_message},
    message_bodies, user_id,
};
use matrix_sdk::{
    Client, Room, RoomState,
    ruma::{OwnedUserId, api::client::room::create_room, assign, events::room::message::RoomMessageEventContent},
};
use serde_json::{Value, json};

/// What "in real time" means for a message between two clients.
const DELIVERY_BOUND: Duration = Duration::from_secs(1);
/// Deadline for things that should happen at once but go through a sync.
const SOON: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn two_users_chat_through_matrix_sdk() {
    let server = TestServer::start().await;
    let alice = server.matrix_client("alice").await;
    let bob = server.matrix_client("bob").await;
    let (alice_id, bob_id) = (owned_user_id("alice"), owned_user_id("bob"));
    sync_now(&alice).await;
    sync_now(&bob).await;

    // Alice opens a room and invites Bob; Bob sees the invite and joins.
    let request = assign!(create_room::v3::Request::new(), { invite: vec![bob_id.clone()], name: Some("Tea".to_owned()) });
    let alice_room = alice.create_room(request).await.expect("createRoom");
    let room_id = alice_room.room_id().to_owned();
    sync_until(&bob, SOON, "the invite", |response| response.rooms.invited.contains_key(&room_id)).await;
    assert_eq!(bob.get_room(&room_id).map(|room| room.state()), Some(RoomState::Invited));
    let bob_room = bob.join_room_by_id(&room_id).await.expect("joining the room");
    sync_until(&alice, SOON, "Bob's join", |response| member_content(&timeline(response, &room_id), &bob_id).is_some_and(|c| c["membership"] == "join")).await;
    sync_now(&bob).await;

    // Each sees the other's message within the bound.
    let latency = deliver(&server, &alice_room, &bob, "hello Bob").await;
    assert!(latency < DELIVERY_BOUND, "Alice → Bob took {latency:?}");
    let latency = deliver(&server, &bob_room, &alice, "hello Alice").await;
    assert!(latency < DELIVERY_BOUND, "Bob → Alice took {latency:?}");

    // History: both page back through /messages and find every message in order.
    for i in 1..=5 {
        alice_room.send(RoomMessageEventContent::text_plain(format!("message {i}"))).await.expect("sending");
    }
    let mut expected = vec!["hello Bob".to_owned(), "hello Alice".to_owned()];
    expected.extend((1..=5).map(|i| format!("message {i}")));
    let alice_history = history(&alice_room, 3).await;
    assert_eq!(message_bodies(&alice_history), expected, "Alice's history");
    assert_eq!(alice_history.first().map(|event| &event["type"]), Some(&json!("m.room.create")), "the creator's history starts at m.room.create");
    assert_eq!(message_bodies(&history(&bob_room, 2).await), expected, "Bob's history");

    // Display names show up in the member events the other one receives.
    alice.account().set_display_name(Some("Alice Liddell")).await.expect("setting Alice's display name");
    bob.account().set_display_name(Some("Bob Builder")).await.expect("setting Bob's display name");
    sync_until(&bob, SOON, "Alice's display name", |response| {
        member_content(&timeline(response, &room_id), &alice_id).is_some_and(|c| c["displayname"] == "Alice Liddell")
    })
    .await;
    sync_until(&alice, SOON, "Bob's display name", |response| {
        member_content(&timeline(response, &room_id), &bob_id).is_some_and(|c| c["displayname"] == "Bob Builder")
    })
    .await;
    let member = alice_room.get_member_no_sync(&bob_id).await.expect("member lookup").expect("Bob is a member");
    assert_eq!(member.display_name(), Some("Bob Builder"));

    // Bob leaves: Alice sees it, and the room moves to Bob's left rooms.
    bob_room.leave().await.expect("leaving");
    sync_until(&alice, SOON, "Bob's leave", |response| {
        member_content(&timeline(response, &room_id), &bob_id).is_some_and(|c| c["membership"] == "leave")
    })
    .await;
    sync_until(&bob, SOON, "the room among Bob's left rooms", |response| response.rooms.left.contains_key(&room_id)).await;
    assert_eq!(bob.get_room(&room_id).map(|room| room.state()), Some(RoomState::Left));
}

#[tokio::test]
async fn outsiders_cannot_read_or_write() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let carol = server.register_user("carol").await;
    let (alice_api, carol_api) = (server.api_as(&alice.access_token), server.api_as(&carol.access_token));
    let room_id = alice_api.create_room(json!({ "name": "private", "preset": "private_chat" })).await;
    alice_api.send_text(&room_id, "for members only").await.ok();
    let room = enc(&room_id);

    alice_api.messages(&room_id, "dir=b").await.ok();
    carol_api.messages(&room_id, "dir=b").await.assert_error(403, "M_FORBIDDEN");
    carol_api.get(&format!("/_matrix/client/v3/rooms/{room}/state")).await.assert_error(403, "M_FORBIDDEN");
    carol_api.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name")).await.assert_error(403, "M_FORBIDDEN");
    carol_api.send_text(&room_id, "let me in").await.assert_error(403, "M_FORBIDDEN");
    carol_api.join(&room_id).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_kicked_member_stops_receiving() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let (alice_api, bob_api) = (server.api_as(&alice.access_token), server.api_as(&bob.access_token));
    let room_id = alice_api.create_room(json!({ "invite": [bob.user_id] })).await;
    let room = enc(&room_id);
    bob_api.join(&room_id).await.ok();
    alice_api.send_text(&room_id, "before the kick").await.ok();

    let before = bob_api.sync(None, 0).await;
    assert!(message_bodies(&sync_timeline(before.ok(), &room_id)).contains(&"before the kick".to_owned()), "{before}");
    let since_before = before.str("next_batch");

    alice_api.post(&format!("/_matrix/client/v3/rooms/{room}/kick"), json!({ "user_id": bob.user_id, "reason": "bye" })).await.ok();
    let kicked = bob_api.sync(Some(&since_before), 0).await;
    let kick = kicked.ok()["rooms"]["leave"][&room_id]["timeline"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()))
        .unwrap_or_else(|| panic!("no kick in Bob's rooms.leave: {kicked}"));
    assert_eq!((&kick["content"]["membership"], &kick["sender"]), (&json!("leave"), &json!(alice.user_id)), "{kicked}");
    let since_kick = kicked.str("next_batch");

    // After the kick: a message and a state change Bob must not learn about.
    let hidden_message = alice_api.send_text(&room_id, "after the kick").await.str("event_id");
    let hidden_state = alice_api
        .put(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"), json!({ "topic": "not for Bob" }))
        .await
        .str("event_id");
    let hidden = [hidden_message.as_str(), hidden_state.as_str(), "after the kick", "not for Bob"];

    for reply in [bob_api.sync(Some(&since_kick), 0).await, bob_api.sync(None, 0).await] {
        assert_reveals_none(&reply, &hidden);
        assert!(reply.ok()["rooms"]["join"].get(&room_id).is_none(), "a kicked member's sync lists the room as joined: {reply}");
    }
    assert_refused_or_hidden(&bob_api.messages(&room_id, "dir=b&limit=50").await, &hidden);
    assert_refused_or_hidden(&bob_api.messages(&room_id, &format!("dir=f&limit=50&from={}", query(&since_kick))).await, &hidden);
    bob_api
        .get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&hidden_message)))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob_api.send_text(&room_id, "can I still talk?").await.assert_error(403, "M_FORBIDDEN");
}

/// Sends `body` from one side and returns how long it took, from the start of
/// the send, until the other side's sync delivered it. The receiver is
/// already long-polling when the message goes out, as a waiting client is.
async fn deliver(server: &TestServer, from: &Room, to: &Client, body: &str) -> Duration {
    let receiver = tokio::spawn({
        let (to, room_id, body) = (to.clone(), from.room_id().to_owned(), body.to_owned());
        async move { wait_for_message(&to, &room_id, &body, SOON).await }
    });
    let long_polling = server.wait_for_waiting_sync(Duration::from_secs(1)).await;
    let sent = Instant::now();
    from.send(RoomMessageEventContent::text_plain(body)).await.expect("sending");
    let received = receiver.await.expect("the receiving sync loop");
    let latency = received.saturating_duration_since(sent);
    eprintln!("{body:?} delivered in {latency:?} (receiver was long-polling: {long_polling})");
    latency
}

/// The content of the last `m.room.member` event about `user` among `events`.
fn member_content(events: &[Value], user: &OwnedUserId) -> Option<Value> {
    events
        .iter()
        .rev()
        .find(|event| event["type"] == "m.room.member" && event["state_key"] == user.as_str())
        .map(|event| event["content"].clone())
}

/// Asserts that a successful answer mentions none of `hidden`.
#[track_caller]
fn assert_reveals_none(reply: &Reply, hidden: &[&str]) {
    reply.ok();
    for needle in hidden {
        assert!(!reply.text.contains(needle), "{needle:?} leaked to a kicked member: {reply}");
    }
}

/// History after the kick is either refused outright or left out: the
/// Matrix spec lets a former member read up to their leave, so a 200 with
/// the earlier events is as correct as a 403.
#[track_caller]
fn assert_refused_or_hidden(reply: &Reply, hidden: &[&str]) {
    if reply.status == 403 {
        reply.assert_error(403, "M_FORBIDDEN");
    } else {
        assert_reveals_none(reply, hidden);
    }
}

fn owned_user_id(name: &str) -> OwnedUserId {
    OwnedUserId::try_from(user_id(name)).expect("a valid user id")
}
