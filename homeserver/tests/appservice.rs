//! The Application Service API, server side, against a real appservice: a
//! small HTTP server in the test that records the transactions it gets
//! (and can be told to fail). Registration files are real YAML files the
//! server reads at start.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post, put},
};
use common::{
    TestServer,
    api::{Api, enc, new_txn_id},
    matrix::sync_until,
};
use matrix_sdk::ruma::{OwnedRoomId, events::room::message::RoomMessageEventContent};
use serde_json::{Value, json};

const SOON: Duration = Duration::from_secs(20);
const AS_TOKEN: &str = "kim-as-token";
const HS_TOKEN: &str = "kim-hs-token";
const GHOST: &str = "@kim_praxis:localhost";

/// What the appservice saw.
#[derive(Default)]
struct Seen {
    /// Every transaction request, answered or refused: `(txn_id, body)`.
    attempts: Vec<(String, Value)>,
    /// The transactions it accepted, in the order it accepted them.
    accepted: Vec<(String, Value)>,
    pings: Vec<Value>,
}

/// A real appservice on a loopback port.
#[derive(Clone, Default)]
struct Appservice {
    seen: Arc<Mutex<Seen>>,
    /// Answer transactions and pings with 500 while set.
    failing: Arc<AtomicBool>,
    /// Refuse this many more transactions with 500.
    fail_next: Arc<AtomicUsize>,
    /// The homeserver it creates queried users and aliases on.
    homeserver: Arc<Mutex<Option<String>>>,
}

impl Appservice {
    async fn start(&self) -> String {
        let router = Router::new()
            .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
            .route("/_matrix/app/v1/ping", post(ping))
            .route("/_matrix/app/v1/users/{user_id}", get(query_user))
            .route("/_matrix/app/v1/rooms/{alias}", get(query_alias))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("binding");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().expect("lock"))
    }

    /// The events of the accepted transactions, each transaction id once,
    /// in the order they were accepted.
    fn events(&self) -> Vec<Value> {
        self.seen(|seen| {
            let mut ids = std::collections::HashSet::new();
            seen.accepted.iter().filter(|(id, _)| ids.insert(id.clone())).flat_map(|(_, body)| body["events"].as_array().cloned().unwrap_or_default()).collect()
        })
    }

    /// Waits until the accepted transactions satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + SOON;
        while !done(self) {
            assert!(Instant::now() < deadline, "the appservice did not get {what} within {SOON:?}; accepted: {:?}", self.seen(|seen| seen.accepted.clone()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_bodies(&self, bodies: &[String]) {
        self.wait_for(&format!("{bodies:?}"), |appservice| message_bodies(&appservice.events()).len() >= bodies.len()).await;
    }

    fn refuses(&self) -> bool {
        self.failing.load(Ordering::SeqCst) || self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|value| value.to_str().ok()) == Some(&format!("Bearer {HS_TOKEN}"))
}

async fn transaction(State(appservice): State<Appservice>, Path(txn_id): Path<String>, headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
    }
    let refused = appservice.refuses();
    let mut seen = appservice.seen.lock().expect("lock");
    seen.attempts.push((txn_id.clone(), body.clone()));
    if refused {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    seen.accepted.push((txn_id, body));
    (StatusCode::OK, Json(json!({})))
}

async fn ping(State(appservice): State<Appservice>, headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
    }
    if appservice.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "errcode": "M_UNKNOWN" })));
    }
    appservice.seen.lock().expect("lock").pings.push(body);
    (StatusCode::OK, Json(json!({})))
}

/// A user query: the appservice creates `@kim_…` users when asked.
async fn query_user(State(appservice): State<Appservice>, Path(user_id): Path<String>, headers: HeaderMap) -> StatusCode {
    let Some(localpart) = user_id.strip_prefix("@kim_").and_then(|rest| rest.strip_suffix(":localhost")) else { return StatusCode::NOT_FOUND };
    let body = json!({ "type": "m.login.application_service", "username": format!("kim_{localpart}"), "inhibit_login": true });
    appservice.call_homeserver(&headers, "/_matrix/client/v3/register", body).await
}

/// An alias query: the appservice creates a room for `#kim_…` aliases.
async fn query_alias(State(appservice): State<Appservice>, Path(alias): Path<String>, headers: HeaderMap) -> StatusCode {
    let Some(name) = alias.strip_prefix("#").and_then(|rest| rest.strip_suffix(":localhost")).filter(|name| name.starts_with("kim_")) else { return StatusCode::NOT_FOUND };
    appservice.call_homeserver(&headers, "/_matrix/client/v3/createRoom", json!({ "room_alias_name": name })).await
}

impl Appservice {
    /// Acts on the homeserver for a query the homeserver sent (200 when it
    /// worked, else 404: "no such thing").
    async fn call_homeserver(&self, headers: &HeaderMap, path: &str, body: Value) -> StatusCode {
        let homeserver = self.homeserver.lock().expect("lock").clone();
        let Some(homeserver) = homeserver.filter(|_| authorized(headers)) else { return StatusCode::FORBIDDEN };
        let response = reqwest::Client::new().post(format!("{homeserver}{path}")).bearer_auth(AS_TOKEN).json(&body).send().await;
        if response.is_ok_and(|response| response.status().is_success()) { StatusCode::OK } else { StatusCode::NOT_FOUND }
    }
}

/// The bridge's registration file for an appservice at `url`.
fn registration(url: Option<&str>) -> String {
    let url = url.map_or_else(|| "null".to_owned(), |url| format!("\"{url}\""));
    format!(
        "id: kim
url: {url}
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: kimbot
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
namespaces:
  users:
    - exclusive: true
      regex: '@kim_.*:localhost'
  aliases:
    - exclusive: true
      regex: '#kim_.*:localhost'
"
    )
}

/// A server with the registration file(s) in `files` (kept alive by the
/// returned directory).
async fn server_with(files: &[String]) -> (TestServer, tempfile::TempDir) {
    server_configured(files, |_| {}).await
}

/// The same, with `configure` adjusting the rest of the config.
async fn server_configured(files: &[String], configure: impl FnOnce(&mut homeserver::Config)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = dir.path().join(format!("registration{i}.yaml"));
            std::fs::write(&path, text).expect("writing the registration");
            path
        })
        .collect();
    let server = TestServer::start_with(|config| {
        config.appservices.registration_files = paths;
        configure(config);
    })
    .await;
    (server, dir)
}

/// A server with a running appservice registered.
async fn server_and_appservice() -> (TestServer, Appservice, tempfile::TempDir) {
    let appservice = Appservice::default();
    let url = appservice.start().await;
    let (server, dir) = server_with(&[registration(Some(&url))]).await;
    *appservice.homeserver.lock().expect("lock") = Some(server.base_url());
    (server, appservice, dir)
}

/// The appservice's API, acting as its sender or, with `as_user`, a ghost.
fn as_api(server: &TestServer) -> Api {
    server.api_as(AS_TOKEN)
}

fn as_user(user_id: &str) -> String {
    format!("user_id={}", enc(user_id))
}

/// Registers `GHOST` with `m.login.application_service`.
async fn register_ghost(server: &TestServer) {
    let reply = as_api(server).post("/_matrix/client/v3/register", json!({ "type": "m.login.application_service", "username": "kim_praxis", "inhibit_login": true })).await;
    assert_eq!(reply.ok()["user_id"], GHOST, "{reply}");
}

/// Alice's room with the ghost joined (masquerading); returns Alice's API
/// and the room id.
async fn room_with_ghost(server: &TestServer) -> (Api, String) {
    register_ghost(server).await;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let room_id = alice_api.create_room(json!({ "invite": [GHOST] })).await;
    as_api(server).post(&format!("/_matrix/client/v3/rooms/{}/join?{}", enc(&room_id), as_user(GHOST)), json!({})).await.ok();
    (alice_api, room_id)
}

fn message_bodies(events: &[Value]) -> Vec<String> {
    common::message_bodies(events.iter())
}

#[tokio::test(flavor = "multi_thread")]
async fn ghosts_register_and_act_through_the_appservice() {
    let (server, _appservice, _dir) = server_and_appservice().await;
    let (alice_api, room_id) = room_with_ghost(&server).await;

    // The ghost speaks through the appservice's token.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}?{}", enc(&room_id), new_txn_id(), as_user(GHOST));
    as_api(&server).put(&path, json!({ "msgtype": "m.text", "body": "Befund folgt" })).await.ok();
    let history = alice_api.messages(&room_id, "dir=b&limit=10").await;
    let newest = &history.ok()["chunk"][0];
    assert_eq!((newest["sender"].as_str(), newest["content"]["body"].as_str()), (Some(GHOST), Some("Befund folgt")), "{history}");
    let whoami = as_api(&server).get(&format!("/_matrix/client/v3/account/whoami?{}", as_user(GHOST))).await;
    assert_eq!(whoami.ok()["user_id"], GHOST);
    assert_eq!(as_api(&server).get("/_matrix/client/v3/account/whoami").await.ok()["user_id"], "@kimbot:localhost", "the sender without user_id");

    // Outside the namespace, or unregistered, no masquerading.
    as_api(&server).get(&format!("/_matrix/client/v3/account/whoami?{}", as_user("@alice:localhost"))).await.assert_error(403, "M_FORBIDDEN");
    as_api(&server).get(&format!("/_matrix/client/v3/account/whoami?{}", as_user("@kim_nobody:localhost"))).await.assert_error(403, "M_FORBIDDEN");
    // The appservice registers only inside its namespace.
    as_api(&server)
        .post("/_matrix/client/v3/register", json!({ "type": "m.login.application_service", "username": "praxis" }))
        .await
        .assert_error(400, "M_EXCLUSIVE");
    // Nobody else takes ids or aliases of the exclusive namespaces.
    let taken = server.api().post("/_matrix/client/v3/register", json!({ "username": "kim_fake", "password": "pw-pw-pw-pw", "auth": { "type": "m.login.dummy" } })).await;
    taken.assert_error(400, "M_EXCLUSIVE");
    server.api().get("/_matrix/client/v3/register/available?username=kim_fake").await.assert_error(400, "M_EXCLUSIVE");
    let alias = alice_api.put(&format!("/_matrix/client/v3/directory/room/{}", enc("#kim_praxis:localhost")), json!({ "room_id": room_id })).await;
    alias.assert_error(400, "M_EXCLUSIVE");
    let by_appservice = as_api(&server).put(&format!("/_matrix/client/v3/directory/room/{}?{}", enc("#kim_praxis:localhost"), as_user(GHOST)), json!({ "room_id": room_id })).await;
    by_appservice.ok();

    // m.login.application_service gives the ghost a device of its own.
    let login = as_api(&server)
        .post("/_matrix/client/v3/login", json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": GHOST } }))
        .await;
    let token = login.ok()["access_token"].as_str().expect("a token").to_owned();
    assert_eq!(server.api_as(&token).get("/_matrix/client/v3/account/whoami").await.ok()["user_id"], GHOST);
    let without_token = server.api().post("/_matrix/client/v3/login", json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": GHOST } })).await;
    without_token.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_messages_arrive_in_order() {
    let (server, appservice, _dir) = server_and_appservice().await;
    register_ghost(&server).await;
    let bob = server.matrix_client("bob").await;
    let bob_api = server.api_as(&bob.access_token().expect("logged in"));
    let room_id = OwnedRoomId::try_from(bob_api.create_room(json!({ "invite": [GHOST] })).await).expect("room id");
    as_api(&server).post(&format!("/_matrix/client/v3/rooms/{}/join?{}", enc(room_id.as_str()), as_user(GHOST)), json!({})).await.ok();
    sync_until(&bob, SOON, "the room", |response| response.rooms.joined.contains_key(&room_id)).await;
    let room = bob.get_room(&room_id).expect("joined");

    let bodies: Vec<String> = (1..=5).map(|i| format!("Anfrage {i}")).collect();
    for body in &bodies {
        room.send(RoomMessageEventContent::text_plain(body)).await.expect("sending");
    }
    appservice.wait_for_bodies(&bodies).await;
    let events = appservice.events();
    assert_eq!(message_bodies(&events), bodies);
    let join = events.iter().find(|event| event["type"] == "m.room.member" && event["state_key"] == GHOST);
    assert!(join.is_some_and(|join| join["room_id"] == room_id.as_str()), "the ghost's join is the appservice's too: {events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_appservice_gets_every_event_once_in_order() {
    let (server, appservice, _dir) = server_and_appservice().await;
    let (alice_api, room_id) = room_with_ghost(&server).await;
    appservice.wait_for("the join", |appservice| !appservice.events().is_empty()).await;

    appservice.fail_next.store(2, Ordering::SeqCst);
    let bodies: Vec<String> = (1..=6).map(|i| format!("Nachricht {i}")).collect();
    for body in &bodies {
        alice_api.send_text(&room_id, body).await.ok();
    }
    appservice.wait_for_bodies(&bodies).await;
    assert_eq!(message_bodies(&appservice.events()), bodies, "every event once, in order");
    appservice.seen(|seen| {
        assert!(seen.attempts.len() > seen.accepted.len(), "the appservice refused some");
        // A retry repeats the transaction: same id, same body.
        for (id, body) in &seen.attempts {
            let accepted = seen.accepted.iter().find(|(accepted, _)| accepted == id);
            assert_eq!(accepted.map(|(_, accepted)| accepted), Some(body), "transaction {id} was retried with another body or never accepted");
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_resumes_after_a_restart() {
    let (mut server, appservice, _dir) = server_and_appservice().await;
    let (alice_api, room_id) = room_with_ghost(&server).await;
    appservice.wait_for("the join", |appservice| !appservice.events().is_empty()).await;

    appservice.failing.store(true, Ordering::SeqCst);
    let bodies: Vec<String> = (1..=3).map(|i| format!("vor dem Neustart {i}")).collect();
    for body in &bodies {
        alice_api.send_text(&room_id, body).await.ok();
    }
    let refused_before = appservice.seen(|seen| seen.attempts.len());
    appservice.wait_for("a refused attempt", |appservice| appservice.seen(|seen| seen.attempts.len()) > refused_before).await;
    server.restart().await;
    appservice.failing.store(false, Ordering::SeqCst);
    alice_api.send_text(&room_id, "nach dem Neustart").await.ok();
    let mut expected = bodies.clone();
    expected.push("nach dem Neustart".to_owned());
    appservice.wait_for_bodies(&expected).await;
    assert_eq!(message_bodies(&appservice.events()), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn appservices_manage_their_users_devices() {
    let (server, _appservice, _dir) = server_and_appservice().await;
    register_ghost(&server).await;
    let device_path = format!("/_matrix/client/v3/devices/KIMBRIDGE?{}", as_user(GHOST));
    as_api(&server).put(&device_path, json!({ "display_name": "KIM bridge" })).await.ok();
    let devices = as_api(&server).get(&format!("/_matrix/client/v3/devices?{}", as_user(GHOST))).await;
    let listed: Vec<&str> = devices.ok()["devices"].as_array().into_iter().flatten().filter_map(|device| device["device_id"].as_str()).collect();
    assert_eq!(listed, ["KIMBRIDGE"], "{devices}");

    // MSC3202: the appservice acts as that device.
    let whoami = as_api(&server).get(&format!("/_matrix/client/v3/account/whoami?{}&org.matrix.msc3202.device_id=KIMBRIDGE", as_user(GHOST))).await;
    assert_eq!(whoami.ok()["device_id"], "KIMBRIDGE");
    as_api(&server).get(&format!("/_matrix/client/v3/account/whoami?{}&device_id=NOPE", as_user(GHOST))).await.assert_error(403, "M_FORBIDDEN");

    // Users still need a device they have; appservices delete without a password.
    let alice = server.register_user("alice").await;
    server.api_as(&alice.access_token).put("/_matrix/client/v3/devices/NEWDEVICE", json!({})).await.assert_error(404, "M_NOT_FOUND");
    as_api(&server).delete(&device_path, json!({})).await.ok();
    let devices = as_api(&server).get(&format!("/_matrix/client/v3/devices?{}", as_user(GHOST))).await;
    assert_eq!(devices.ok()["devices"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_appservice_can_ping_itself() {
    let (server, appservice, _dir) = server_and_appservice().await;
    let path = "/_matrix/client/v1/appservice/kim/ping";
    let reply = as_api(&server).post(path, json!({ "transaction_id": "ping-1" })).await;
    assert!(reply.ok()["duration_ms"].is_u64(), "{reply}");
    assert_eq!(appservice.seen(|seen| seen.pings.clone()), [json!({ "transaction_id": "ping-1" })]);

    appservice.failing.store(true, Ordering::SeqCst);
    let failed = as_api(&server).post(path, json!({})).await;
    failed.assert_error(502, "M_BAD_STATUS");
    assert_eq!(failed.body["status"], 500, "{failed}");
    as_api(&server).post("/_matrix/client/v1/appservice/other/ping", json!({})).await.assert_error(403, "M_FORBIDDEN");
    let alice = server.register_user("alice").await;
    server.api_as(&alice.access_token).post(path, json!({})).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread")]
async fn pinging_without_a_url_or_a_listener_fails_as_the_spec_says() {
    let closed = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("binding").local_addr().expect("address");
    let unreachable = registration(Some(&format!("http://{closed}")));
    let (server, _dir) = server_with(&[registration(None)]).await;
    as_api(&server).post("/_matrix/client/v1/appservice/kim/ping", json!({})).await.assert_error(400, "M_URL_NOT_SET");
    drop(server);
    let (server, _dir) = server_with(&[unreachable]).await;
    as_api(&server).post("/_matrix/client/v1/appservice/kim/ping", json!({})).await.assert_error(502, "M_CONNECTION_FAILED");
}

#[tokio::test(flavor = "multi_thread")]
async fn receipts_to_device_messages_and_device_lists_reach_the_appservice() {
    let (server, appservice, _dir) = server_and_appservice().await;
    let (alice_api, room_id) = room_with_ghost(&server).await;
    as_api(&server).put(&format!("/_matrix/client/v3/devices/KIMBRIDGE?{}", as_user(GHOST)), json!({})).await.ok();
    let event_id = alice_api.send_text(&room_id, "Bitte lesen").await.str("event_id");

    alice_api.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&event_id)), json!({})).await.ok();
    let receipt_seen = |appservice: &Appservice| {
        appservice.seen(|seen| {
            seen.accepted.iter().any(|(_, body)| {
                body["ephemeral"].as_array().into_iter().flatten().any(|edu| edu["type"] == "m.receipt" && edu["room_id"] == room_id.as_str() && edu["content"][&event_id]["m.read"]["@alice:localhost"].is_object())
                    && body["de.sorunome.msc2409.ephemeral"] == body["ephemeral"]
            })
        })
    };
    appservice.wait_for("Alice's receipt", receipt_seen).await;

    let path = format!("/_matrix/client/v3/sendToDevice/m.test/{}", new_txn_id());
    alice_api.put(&path, json!({ "messages": { GHOST: { "KIMBRIDGE": { "hallo": "bridge" } } } })).await.ok();
    let to_device = |appservice: &Appservice| {
        appservice.seen(|seen| {
            seen.accepted.iter().find_map(|(_, body)| {
                let message = body["de.sorunome.msc2409.to_device"].as_array()?.first()?.clone();
                Some((message, body["org.matrix.msc3202.device_one_time_keys_count"].clone()))
            })
        })
    };
    appservice.wait_for("the to-device message", |appservice| to_device(appservice).is_some()).await;
    let (message, key_counts) = to_device(&appservice).expect("seen");
    assert_eq!(
        (&message["type"], &message["sender"], &message["to_user_id"], &message["to_device_id"], &message["content"]),
        (&json!("m.test"), &json!("@alice:localhost"), &json!(GHOST), &json!("KIMBRIDGE"), &json!({ "hallo": "bridge" }))
    );
    assert!(key_counts[GHOST]["KIMBRIDGE"].is_object(), "MSC3202 key counts of the ghost's device: {key_counts}");
    // Carried by a stored transaction, it left the to-device queue (no sync
    // of the ghost's would ever acknowledge it).
    let ghost_id = ruma::UserId::parse(GHOST).expect("user id");
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM to_device_messages WHERE user_id = $1")
        .bind(GHOST)
        .fetch_one(server.server().db.user_shard(&ghost_id))
        .await
        .expect("counting");
    assert_eq!(queued, 0, "the delivered to-device message is no longer queued");

    // MSC3202: a room member's device list changes (a rename is one).
    let device_id = alice_api.get("/_matrix/client/v3/account/whoami").await.str("device_id");
    alice_api.put(&format!("/_matrix/client/v3/devices/{}", enc(&device_id)), json!({ "display_name": "Praxis-PC" })).await.ok();
    appservice
        .wait_for("Alice's device list change", |appservice| {
            appservice.seen(|seen| seen.accepted.iter().any(|(_, body)| body["org.matrix.msc3202.device_lists"]["changed"].as_array().is_some_and(|users| users.contains(&json!("@alice:localhost")))))
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_appservice_is_asked_about_unknown_users_and_aliases() {
    let (server, _appservice, _dir) = server_and_appservice().await;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);

    // Inviting a ghost nobody created yet: the appservice creates it.
    let room_id = alice_api.create_room(json!({})).await;
    let invite = alice_api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)), json!({ "user_id": "@kim_neu:localhost" })).await;
    invite.ok();
    let unknown = alice_api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)), json!({ "user_id": "@niemand:localhost" })).await;
    unknown.assert_error(404, "M_NOT_FOUND");

    // Resolving an alias of its namespace: the appservice creates the room.
    let resolved = alice_api.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#kim_portal:localhost"))).await;
    assert!(resolved.ok()["room_id"].is_string(), "{resolved}");
    alice_api.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#woanders:localhost"))).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn ghosts_register_while_registration_is_closed_and_are_not_rate_limited() {
    let tight = homeserver::config::RateLimit { per_second: 0.01, burst: 2 };
    let (server, _dir) = server_configured(&[registration(None)], |config| {
        config.registration.enabled = false;
        config.rate_limits.room_writes = tight;
    })
    .await;
    let (_alice_api, room_id) = room_with_ghost(&server).await;
    for i in 0..5 {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}?{}", enc(&room_id), new_txn_id(), as_user(GHOST));
        as_api(&server).put(&path, json!({ "msgtype": "m.text", "body": format!("Nachricht {i}") })).await.ok();
    }
    // Others still meet the limit (Alice spent her burst creating the room).
    let alice = server.login("alice", &common::password_of("alice")).await.str("access_token");
    let limited = (0..5).map(|i| {
        let api = server.api_as(&alice);
        let room_id = room_id.clone();
        async move { api.send_text(&room_id, &format!("Alice {i}")).await.status.as_u16() }
    });
    assert!(futures::future::join_all(limited).await.contains(&429), "Alice is limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn appservices_learn_whether_a_user_is_staff_or_insured() {
    let (server, _dir) = server_with(&[registration(None)]).await;
    let staff = server.register_user("alice").await;
    let insured = server.register_insured("versicherter", "A000000014").await;
    let kind = |user_id: &str| format!("/_tim/appservice/v1/users/{}/kind", enc(user_id));

    assert_eq!(as_api(&server).get(&kind(&staff.user_id)).await.ok()["kind"], "staff");
    assert_eq!(as_api(&server).get(&kind(&insured.user_id)).await.ok()["kind"], "insured");
    as_api(&server).get(&kind("@nobody:localhost")).await.assert_error(404, "M_NOT_FOUND");
    as_api(&server).get(&kind("@alice:elsewhere.example")).await.assert_error(404, "M_NOT_FOUND");
    // Only appservices may ask.
    server.api_as(&staff.access_token).get(&kind(&insured.user_id)).await.assert_error(401, "M_UNKNOWN_TOKEN");
    server.api().get(&kind(&insured.user_id)).await.assert_error(401, "M_MISSING_TOKEN");
}
