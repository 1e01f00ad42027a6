//! Push: pushers (`/pushers`, `/pushers/set`), notifications to a push
//! gateway that carry ids only (TI-M), their retries and a gateway's
//! rejection, and the notification counts of `/sync`.

mod common;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use common::{
    TestServer,
    api::{Api, Reply, enc, new_txn_id},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

/// Deadline for what the push processor and sender do in the background.
const SOON: Duration = Duration::from_secs(10);
const APP_ID: &str = "de.gematik.tim.messenger";

#[tokio::test]
async fn pushers_are_set_listed_replaced_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    assert_eq!(pushers(&api).await, Vec::<Value>::new());

    let url = "https://push.example.org/_matrix/push/v1/notify";
    set_pusher(&api, http_pusher("phone", url)).await.ok();
    set_pusher(&api, json!({ "kind": "email", "app_id": "m.email", "pushkey": "alice@example.org",
        "app_display_name": "Mail", "device_display_name": "Mail", "lang": "en", "data": {} }))
    .await
    .ok();
    let listed = pushers(&api).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let http = listed.iter().find(|p| p["kind"] == "http").expect("the http pusher");
    assert_eq!((&http["app_id"], &http["pushkey"], &http["data"]["url"]), (&json!(APP_ID), &json!("phone"), &json!(url)));
    assert_eq!(http["data"]["format"], "event_id_only");

    // The same ids again replace the pusher.
    let mut renamed = http_pusher("phone", url);
    renamed["device_display_name"] = json!("Alice's new phone");
    set_pusher(&api, renamed).await.ok();
    let listed = pushers(&api).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|p| p["device_display_name"] == "Alice's new phone"), "{listed:?}");

    // `kind: null` deletes; deleting again is fine.
    for _ in 0..2 {
        set_pusher(&api, json!({ "kind": null, "app_id": APP_ID, "pushkey": "phone" })).await.ok();
    }
    let listed = pushers(&api).await;
    assert_eq!(listed.iter().map(|p| p["kind"].clone()).collect::<Vec<_>>(), [json!("email")]);
}

#[tokio::test]
async fn invalid_pushers_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);

    for url in [
        "https://push.example.org/notify",
        "ftp://push.example.org/_matrix/push/v1/notify",
        "https://push.example.org/_matrix/push/v1/notify?token=1",
        "not a url",
    ] {
        set_pusher(&api, http_pusher("phone", url)).await.assert_error(400, "M_INVALID_PARAM");
    }
    let mut unknown_kind = http_pusher("phone", "https://push.example.org/_matrix/push/v1/notify");
    unknown_kind["kind"] = json!("carrier-pigeon");
    set_pusher(&api, unknown_kind).await.assert_error(400, "M_INVALID_PARAM");
    let mut long_app_id = http_pusher("phone", "https://push.example.org/_matrix/push/v1/notify");
    long_app_id["app_id"] = json!("a".repeat(65));
    set_pusher(&api, long_app_id).await.assert_error(400, "M_INVALID_PARAM");
    let without_url = json!({ "kind": "http", "app_id": APP_ID, "pushkey": "phone", "app_display_name": "TI-M",
        "device_display_name": "phone", "lang": "de", "data": {} });
    assert_eq!(set_pusher(&api, without_url).await.status.as_u16(), 400);
    set_pusher(&api.anonymous(), http_pusher("phone", "https://push.example.org/_matrix/push/v1/notify"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    assert_eq!(pushers(&api).await, Vec::<Value>::new());
}

/// With an operator allow-list, pushers may only name the listed gateways
/// (so users cannot make the server POST to arbitrary addresses).
#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_gateways_are_accepted() {
    let server = TestServer::start_with(|config| config.push.allowed_gateways = vec!["https://push.example.org/".to_owned()]).await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    set_pusher(&api, http_pusher("phone", "http://127.0.0.1:9/_matrix/push/v1/notify")).await.assert_error(400, "M_INVALID_PARAM");
    set_pusher(&api, http_pusher("phone", "https://push.example.org/_matrix/push/v1/notify")).await.ok();
    assert_eq!(pushers(&api).await.len(), 1);
}

#[tokio::test]
async fn a_pushkey_moves_to_the_user_who_set_it_last_unless_appended() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let bob = server.api_as(&server.register_user("bob").await.access_token);
    let url = "https://push.example.org/_matrix/push/v1/notify";

    set_pusher(&alice, http_pusher("shared-phone", url)).await.ok();
    let mut appended = http_pusher("shared-phone", url);
    appended["append"] = json!(true);
    set_pusher(&bob, appended).await.ok();
    assert_eq!((pushers(&alice).await.len(), pushers(&bob).await.len()), (1, 1), "append keeps both");

    set_pusher(&alice, http_pusher("shared-phone", url)).await.ok();
    assert_eq!((pushers(&alice).await.len(), pushers(&bob).await.len()), (1, 0), "without append the pushkey moves");
}

#[tokio::test]
async fn logging_out_removes_the_devices_pushers() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let first = server.api_as(&alice.access_token);
    let login = server.login("alice", &alice.password).await;
    let second = server.api_as(login.ok()["access_token"].as_str().expect("an access token"));
    set_pusher(&second, http_pusher("second-phone", "https://push.example.org/_matrix/push/v1/notify")).await.ok();
    assert_eq!(pushers(&first).await.len(), 1);

    second.post("/_matrix/client/v3/logout", json!({})).await.ok();
    assert_eq!(pushers(&first).await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_message_is_pushed_with_ids_only() {
    let server = TestServer::start().await;
    let gateway = Gateway::start().await;
    let (alice, bob, room_id) = server.two_users_in_a_room().await;
    let alice_api = server.api_as(&alice.access_token);
    let mut pusher = http_pusher("alice-phone", &gateway.url());
    pusher["data"]["custom"] = json!("kept for the gateway");
    set_pusher(&alice_api, pusher).await.ok();

    // Alice's own message is not pushed to her; Bob's is.
    send_text(&alice_api, &room_id, "a note to myself").await;
    let event_id = send_text(&server.api_as(&bob.access_token), &room_id, "the secret diagnosis").await;
    let notification = gateway.wait_for(&event_id).await;

    assert_eq!(notification["room_id"], room_id.as_str());
    for hidden in ["content", "sender", "sender_display_name", "room_name", "room_alias", "type", "user_is_target"] {
        assert!(notification.get(hidden).is_none(), "the notification carries {hidden:?}: {notification}");
    }
    assert!(!notification.to_string().contains("secret diagnosis"), "{notification}");
    assert_eq!(notification["counts"]["unread"], 1, "{notification}");
    let devices = notification["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{notification}");
    let device = &devices[0];
    assert_eq!((&device["app_id"], &device["pushkey"]), (&json!(APP_ID), &json!("alice-phone")));
    assert!(device["pushkey_ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000), "{device}");
    assert_eq!(device["data"], json!({ "format": "event_id_only", "custom": "kept for the gateway" }), "the data goes without its url");
    assert!(device["tweaks"].get("sound").is_some(), "a one-to-one message rings: {device}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<Value> = gateway.received().iter().map(|n| n["event_id"].clone()).collect();
    assert_eq!(ids, [json!(event_id)], "only Bob's message is pushed, once");
}

#[tokio::test]
async fn failed_pushes_are_retried() {
    let server = TestServer::start().await;
    let gateway = Gateway::start().await;
    gateway.answer_next([Answer::Status(500), Answer::Status(500)]);
    let (alice, bob, room_id) = server.two_users_in_a_room().await;
    set_pusher(&server.api_as(&alice.access_token), http_pusher("alice-phone", &gateway.url())).await.ok();

    let event_id = send_text(&server.api_as(&bob.access_token), &room_id, "are you there?").await;
    eventually(SOON, "the third attempt", || async {
        (gateway.received().iter().filter(|n| n["event_id"] == event_id.as_str()).count() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gateway.received().len(), 3, "delivered once accepted, not again");
}

#[tokio::test]
async fn a_queued_push_survives_a_restart() {
    let mut server = TestServer::start().await;
    let gateway = Gateway::start().await;
    gateway.answer_next([Answer::Status(503)]);
    let (alice, bob, room_id) = server.two_users_in_a_room().await;
    set_pusher(&server.api_as(&alice.access_token), http_pusher("alice-phone", &gateway.url())).await.ok();

    let event_id = send_text(&server.api_as(&bob.access_token), &room_id, "still there?").await;
    gateway.wait_for(&event_id).await;
    server.restart().await;
    eventually(SOON, "the retry after the restart", || async {
        (gateway.received().iter().filter(|n| n["event_id"] == event_id.as_str()).count() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rejected_pushkey_loses_its_pusher() {
    let server = TestServer::start().await;
    let gateway = Gateway::start().await;
    gateway.answer_next([Answer::Reject]);
    let (alice, bob, room_id) = server.two_users_in_a_room().await;
    let alice_api = server.api_as(&alice.access_token);
    set_pusher(&alice_api, http_pusher("uninstalled-app", &gateway.url())).await.ok();

    let event_id = send_text(&server.api_as(&bob.access_token), &room_id, "hello?").await;
    gateway.wait_for(&event_id).await;
    eventually(SOON, "the pusher's removal", || async { pushers(&alice_api).await.is_empty().then_some(()) }).await;
    send_text(&server.api_as(&bob.access_token), &room_id, "anyone?").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.received().len(), 1, "nothing is pushed to a rejected pushkey");
}

#[tokio::test]
async fn sync_counts_notifications_and_highlights_until_read() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    alice_api
        .put(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)), json!({ "displayname": "Alice Liddell" }))
        .await
        .ok();
    // The legacy display-name rule, as older clients set it.
    alice_api
        .put(
            "/_matrix/client/v3/pushrules/global/override/display_name",
            json!({ "conditions": [{ "kind": "contains_display_name" }], "actions": ["notify", { "set_tweak": "highlight" }] }),
        )
        .await
        .ok();
    let (bob, room_id) = server.bob_joins_a_room_of(&alice).await;
    let bob_api = server.api_as(&bob.access_token);
    let since = alice_api.sync(None, 0).await.str("next_batch");
    assert_eq!(counts(&alice_api.sync(None, 0).await, &room_id), (0, 0));

    // A count that changes after the message arrived wakes the long-poll.
    send_text(&bob_api, &room_id, "good morning").await;
    alice_api.sync_until(&since, SOON, |reply| counts(reply, &room_id) == (1, 0)).await;

    send_text(&bob_api, &room_id, "have you seen Alice Liddell today?").await;
    let mention = json!({ "msgtype": "m.text", "body": "Alice: lunch?", "m.mentions": { "user_ids": [alice.user_id] } });
    let last = send(&bob_api, &room_id, mention).await;
    wait_for_counts(&alice_api, &room_id, (3, 2)).await;

    alice_api
        .post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&last)), json!({}))
        .await
        .ok();
    assert_eq!(counts(&alice_api.sync(None, 0).await, &room_id), (0, 0), "a read receipt clears the counts");
    send_text(&bob_api, &room_id, "one more thing").await;
    wait_for_counts(&alice_api, &room_id, (1, 0)).await;
}

// ------------------------------------------------------------------ helpers

/// An http pusher of [`APP_ID`] to `url`, asking for `event_id_only`.
fn http_pusher(pushkey: &str, url: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": APP_ID,
        "pushkey": pushkey,
        "app_display_name": "TI-Messenger",
        "device_display_name": "Alice's phone",
        "lang": "de",
        "data": { "url": url, "format": "event_id_only" },
    })
}

async fn set_pusher(api: &Api, body: Value) -> Reply {
    api.post("/_matrix/client/v3/pushers/set", body).await
}

async fn pushers(api: &Api) -> Vec<Value> {
    let reply = api.get("/_matrix/client/v3/pushers").await;
    reply.ok()["pushers"].as_array().cloned().unwrap_or_else(|| panic!("no pushers list: {reply}"))
}

/// Alice and Bob, joined to a room Alice created.
async fn send_text(api: &Api, room_id: &str, body: &str) -> String {
    send(api, room_id, json!({ "msgtype": "m.text", "body": body })).await
}

/// Sends an `m.room.message`; returns its event id.
async fn send(api: &Api, room_id: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room_id), new_txn_id());
    api.put(&path, content).await.str("event_id")
}

/// `(notification_count, highlight_count)` of a joined room in a sync answer.
fn counts(reply: &Reply, room_id: &str) -> (u64, u64) {
    let unread = &reply.ok()["rooms"]["join"][room_id]["unread_notifications"];
    (unread["notification_count"].as_u64().unwrap_or(0), unread["highlight_count"].as_u64().unwrap_or(0))
}

async fn wait_for_counts(api: &Api, room_id: &str, expected: (u64, u64)) {
    eventually(SOON, &format!("counts {expected:?}"), || async { (counts(&api.sync(None, 0).await, room_id) == expected).then_some(()) }).await;
}

/// Polls `check` until it yields a value, failing the test after `within`:
/// pushes happen in the background, after the request that caused them.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the fake gateway answers to one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// 200 with the request's pushkeys as `rejected`.
    Reject,
}

/// A push gateway on a loopback port that records every notification and
/// answers 200 `{"rejected": []}` unless told otherwise.
struct Gateway {
    addr: SocketAddr,
    state: GatewayState,
    task: JoinHandle<()>,
}

#[derive(Clone, Default)]
struct GatewayState {
    received: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

impl Gateway {
    async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("binding the gateway's port");
        let addr = listener.local_addr().expect("the gateway's address");
        let state = GatewayState::default();
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serving the gateway");
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/_matrix/push/v1/notify", self.addr)
    }

    /// Answers the next requests so, then 200 again.
    fn answer_next(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.answers.lock().expect("gateway lock").extend(answers);
    }

    /// The `notification` of every request so far.
    fn received(&self) -> Vec<Value> {
        self.state.received.lock().expect("gateway lock").clone()
    }

    /// The first notification for `event_id`.
    async fn wait_for(&self, event_id: &str) -> Value {
        eventually(SOON, &format!("a push for {event_id}"), || async {
            self.received().into_iter().find(|notification| notification["event_id"] == event_id)
        })
        .await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(State(state): State<GatewayState>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let notification = body["notification"].clone();
    state.received.lock().expect("gateway lock").push(notification.clone());
    let answer = state.answers.lock().expect("gateway lock").pop_front();
    match answer {
        Some(Answer::Status(status)) => (StatusCode::from_u16(status).expect("a valid status"), Json(json!({}))),
        Some(Answer::Reject) => {
            let pushkeys: Vec<Value> = notification["devices"].as_array().into_iter().flatten().map(|d| d["pushkey"].clone()).collect();
            (StatusCode::OK, Json(json!({ "rejected": pushkeys })))
        }
        None => (StatusCode::OK, Json(json!({ "rejected": [] }))),
    }
}
