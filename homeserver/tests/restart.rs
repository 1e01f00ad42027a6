//! A restart loses nothing: sync tokens from before it stay valid, syncing
//! from one returns exactly what happened after it, and long-polling works
//! again at once.

mod common;

use std::time::Duration;

use common::{
    TestServer,
    api::{enc, sync_timeline},
    matrix::{self, sync_until, timeline, wait_for_message},
    message_bodies, user_id,
};
use matrix_sdk::ruma::OwnedUserId;
use serde_json::{Value, json};

const SOON: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn sync_tokens_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let bob = server.matrix_client("bob").await;
    let bob_id = OwnedUserId::try_from(user_id("bob")).expect("a valid user id");

    let room_id = alice_api.create_room(json!({ "invite": [bob_id] })).await;
    let matrix_room_id = matrix_sdk::ruma::OwnedRoomId::try_from(room_id.as_str()).expect("a valid room id");
    sync_until(&bob, SOON, "the invite", |response| response.rooms.invited.contains_key(&matrix_room_id)).await;
    bob.join_room_by_id(&matrix_room_id).await.expect("joining");
    let before: Vec<String> = (1..=3).map(|i| format!("before the restart {i}")).collect();
    for body in &before {
        alice_api.send_text(&room_id, body).await.ok();
    }
    let token = alice_api.sync(None, 0).await.str("next_batch");
    wait_for_message(&bob, &matrix_room_id, &before[2], SOON).await;

    server.restart().await;

    // The old token is valid and nothing happened since.
    let quiet = alice_api.sync(Some(&token), 0).await;
    assert_eq!(sync_timeline(quiet.ok(), &room_id), Vec::<Value>::new(), "events before the token came back: {quiet}");

    // Nothing was lost.
    let history = alice_api.messages(&room_id, "dir=b&limit=100").await;
    let mut bodies = message_bodies(history.ok()["chunk"].as_array().into_iter().flatten());
    bodies.reverse();
    assert_eq!(bodies, before, "history after the restart: {history}");

    // From the old token comes exactly what is new, as often as it is asked.
    let new_event = alice_api.send_text(&room_id, "after the restart").await.str("event_id");
    for _ in 0..2 {
        let resumed = alice_api.sync(Some(&token), 0).await;
        let events = sync_timeline(resumed.ok(), &room_id);
        let ids: Vec<&str> = events.iter().filter_map(|event| event["event_id"].as_str()).collect();
        assert_eq!(ids, [new_event.as_str()], "sync from the pre-restart token: {resumed}");
    }

    // Long-polling works on the restarted server.
    let next = alice_api.sync(Some(&token), 0).await.str("next_batch");
    let waiting = tokio::spawn({
        let (api, room_id) = (alice_api.clone(), room_id.clone());
        async move { api.sync_until(&next, SOON, |reply| !sync_timeline(&reply.body, &room_id).is_empty()).await }
    });
    server.wait_for_waiting_sync(Duration::from_secs(1)).await;
    alice_api.send_text(&room_id, "live after the restart").await.ok();
    let replies = waiting.await.expect("the long-poll task");
    let bodies: Vec<String> = replies.iter().flat_map(|reply| message_bodies(&sync_timeline(&reply.body, &room_id))).collect();
    assert_eq!(bodies, ["live after the restart"], "long-poll answers after the restart");

    // A matrix-sdk client carries on from its stored token: only the new messages.
    let seen = sync_until(&bob, SOON, "the messages after the restart", |response| {
        message_bodies(&timeline(response, &matrix_room_id)).iter().any(|body| body == "live after the restart")
    })
    .await;
    let bob_bodies: Vec<String> = seen.iter().flat_map(|response| message_bodies(&timeline(response, &matrix_room_id))).collect();
    assert_eq!(bob_bodies, ["after the restart", "live after the restart"], "Bob's syncs after the restart");
    matrix::sync_now(&bob).await;
}

#[tokio::test]
async fn typing_after_a_restart_reaches_old_tokens() {
    let mut server = TestServer::start().await;
    let (alice, bob, room_id) = server.two_users_in_a_room().await;
    let (alice_api, bob_api) = (server.api_as(&alice.access_token), server.api_as(&bob.access_token));
    let typing_path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room_id), enc(&alice.user_id));

    // Typing state is in memory: these versions die with the process, the
    // token that carries them does not.
    for typing in [true, false, true, false] {
        alice_api.put(&typing_path, json!({ "typing": typing, "timeout": 30_000 })).await.ok();
    }
    let token = bob_api.sync(None, 0).await.str("next_batch");

    server.restart().await;

    alice_api.put(&typing_path, json!({ "typing": true, "timeout": 30_000 })).await.ok();
    let reply = bob_api.sync(Some(&token), 0).await;
    let typing = reply.ok()["rooms"]["join"][&room_id]["ephemeral"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|event| event["type"] == "m.typing"))
        .unwrap_or_else(|| panic!("no m.typing for a pre-restart token: {reply}"));
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]), "{reply}");
}

/// `http_requests_in_flight` of the server's own metrics.
fn requests_in_flight(server: &TestServer) -> u64 {
    let text = server.server().metrics.render().expect("rendering the metrics");
    text.lines().find_map(|line| line.strip_prefix("http_requests_in_flight ")).and_then(|value| value.trim().parse().ok()).unwrap_or(0)
}

/// The shutdown of `homeserver serve` (SIGTERM), driven in-process through
/// the same future: an upload whose body is still arriving finishes, a
/// long-polling `/sync` answers at once instead of after its timeout, new
/// connections are refused, and the server is gone well within the bound.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_requests_in_flight_and_refuses_new_ones() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut server = TestServer::start_one_worker().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let since = api.sync(None, 0).await.str("next_batch");
    let addr = server.base_url().trim_start_matches("http://").to_owned();

    let long_poll = tokio::spawn({
        let api = api.clone();
        async move { api.sync(Some(&since), 60_000).await }
    });
    assert!(server.wait_for_waiting_sync(SOON).await, "the /sync is long-polling");

    // An upload with half its body sent: in flight until the rest comes.
    let mut upload = tokio::net::TcpStream::connect(&addr).await.expect("connecting");
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello",
        alice.access_token
    );
    upload.write_all(head.as_bytes()).await.expect("sending the first half");
    let deadline = std::time::Instant::now() + SOON;
    while requests_in_flight(&server) < 2 {
        assert!(std::time::Instant::now() < deadline, "the upload never reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = std::time::Instant::now();
    let stop = server.stop();
    let clients = async {
        let synced = long_poll.await.expect("the /sync task");
        assert!(synced.status.is_success(), "the long-poll is answered: {synced}");
        assert!(started.elapsed() < SOON, "the long-poll answered at once, not after its timeout");
        // The listener closes as the long-polls are told to answer: allow
        // for that moment.
        while tokio::net::TcpStream::connect(&addr).await.is_ok() {
            assert!(started.elapsed() < SOON, "new connections are refused while stopping");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        upload.write_all(b"world").await.expect("sending the second half");
        let mut answer = String::new();
        upload.read_to_string(&mut answer).await.expect("reading the upload's answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "the upload in flight finishes: {answer}");
        assert!(answer.contains("content_uri"), "{answer}");
    };
    tokio::join!(stop, clients);
    assert!(started.elapsed() < SOON, "stopped within {SOON:?}, took {:?}", started.elapsed());
}
