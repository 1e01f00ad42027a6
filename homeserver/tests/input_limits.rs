//! Hostile input: bodies, events, JSON, identifiers, item counts and filters
//! beyond the limits (`http/limits.rs`, `[limits]` in the config) are refused
//! with the spec's status and errcode, never a 500, and the server keeps
//! serving.

mod common;

use std::time::Duration;

use common::{
    TestServer,
    api::{enc, new_txn_id, query},
};
use reqwest::Method;
use serde_json::{Value, json};

/// `depth` arrays nested in each other: `[[[…]]]`.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn send_path(room_id: &str, event_type: &str, txn_id: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/send/{}/{}", enc(room_id), enc(event_type), enc(txn_id))
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large_on_an_authenticated_endpoint() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let room_id = api.create_room(json!({})).await;
    let padding = "x".repeat(server.config().limits.max_request_bytes + 1);
    api.put(&send_path(&room_id, "m.room.message", &new_txn_id()), json!({ "msgtype": "m.text", "body": padding }))
        .await
        .assert_error(413, "M_TOO_LARGE");
    api.send_text(&room_id, "still serving").await.ok();
}

#[tokio::test]
async fn an_event_over_65535_bytes_is_too_large_and_not_stored() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let room_id = api.create_room(json!({})).await;

    let big = "x".repeat(65_535);
    api.put(&send_path(&room_id, "m.room.message", &new_txn_id()), json!({ "msgtype": "m.text", "body": big }))
        .await
        .assert_error(413, "M_TOO_LARGE");
    api.put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room_id)), json!({ "topic": big }))
        .await
        .assert_error(413, "M_TOO_LARGE");
    // Just under the limit with the envelope, signatures and hashes.
    api.put(&send_path(&room_id, "m.room.message", &new_txn_id()), json!({ "msgtype": "m.text", "body": "x".repeat(64_000) })).await.ok();

    let page = api.messages(&room_id, "dir=b&limit=5").await;
    let sizes: Vec<usize> = page.ok()["chunk"].as_array().into_iter().flatten().filter_map(|event| event["content"]["body"].as_str()).map(str::len).collect();
    assert_eq!(sizes, vec![64_000], "only the event under the limit is stored");
}

#[tokio::test]
async fn json_nested_too_deep_is_bad_json_at_any_depth() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let room_id = api.create_room(json!({})).await;
    let max = server.config().limits.max_json_depth;

    for depth in [max, max + 10, 200, 100_000] {
        let body = format!(r#"{{"msgtype":"m.text","body":"deep","nested":{}}}"#, nested_arrays(depth));
        let reply = api.send(Method::PUT, &send_path(&room_id, "m.room.message", &new_txn_id()), Some(body.into_bytes())).await;
        reply.assert_error(400, "M_BAD_JSON");
    }
    // Anonymous endpoints too, and brackets inside strings do not count.
    let login = format!(r#"{{"type":"m.login.password","x":{}}}"#, nested_arrays(10_000));
    server.api().send(Method::POST, "/_matrix/client/v3/login", Some(login.into_bytes())).await.assert_error(400, "M_BAD_JSON");
    let body = json!({ "msgtype": "m.text", "body": nested_arrays(1000), "nested": serde_json::from_str::<Value>(&nested_arrays(max - 1)).unwrap() });
    api.put(&send_path(&room_id, "m.room.message", &new_txn_id()), body).await.ok();
}

#[tokio::test]
async fn identifiers_longer_than_the_spec_allows_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let room_id = api.create_room(json!({})).await;
    let long = "a".repeat(256);
    let message = json!({ "msgtype": "m.text", "body": "hi" });

    // Path parameters: transaction ids, event types, state keys, user ids.
    api.put(&send_path(&room_id, "m.room.message", &long), message.clone()).await.assert_error(400, "M_INVALID_PARAM");
    api.put(&send_path(&room_id, "m.room.message", &"t".repeat(255)), message.clone()).await.ok();
    api.put(&send_path(&room_id, &long, &new_txn_id()), message.clone()).await.assert_error(400, "M_INVALID_PARAM");
    api.put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/{long}", enc(&room_id)), json!({ "topic": "t" }))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let long_user = format!("@{long}:localhost");
    api.get(&format!("/_matrix/client/v3/profile/{}", enc(&long_user))).await.assert_error(400, "M_INVALID_PARAM");

    // In bodies: an invitee's user id (no such user can exist: 404 as for
    // any unknown invitee), a room alias, an initial state key and type.
    api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)), json!({ "user_id": long_user }))
        .await
        .assert_error(404, "M_NOT_FOUND");
    api.post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": long })).await.assert_error(400, "M_INVALID_PARAM");
    let initial_state = json!([{ "type": "m.room.topic", "state_key": long, "content": { "topic": "t" } }]);
    api.post("/_matrix/client/v3/createRoom", json!({ "initial_state": initial_state })).await.assert_error(413, "M_TOO_LARGE");
    let initial_state = json!([{ "type": long, "state_key": "", "content": {} }]);
    api.post("/_matrix/client/v3/createRoom", json!({ "initial_state": initial_state })).await.assert_error(413, "M_TOO_LARGE");
    // A username that would make a user id over 255 bytes.
    let register = json!({ "username": long, "password": "a long enough password", "auth": { "type": "m.login.dummy" } });
    server.api().post("/_matrix/client/v3/register", register).await.assert_error(400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn too_many_items_in_one_request_are_too_large() {
    let server = TestServer::start_with(|config| {
        config.limits.max_to_device_messages = 3;
        config.limits.max_keys_query_users = 2;
        config.limits.max_keys_claim_devices = 2;
        config.limits.max_uploaded_one_time_keys = 2;
    })
    .await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);

    let devices = |n: usize| (0..n).map(|i| (format!("DEVICE{i}"), json!({ "body": i }))).collect::<serde_json::Map<_, _>>();
    let to_device = |n| json!({ "messages": { alice.user_id.clone(): devices(n) } });
    api.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{}", new_txn_id()), to_device(4)).await.assert_error(413, "M_TOO_LARGE");
    api.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{}", new_txn_id()), to_device(3)).await.ok();

    let users = |n: usize| (0..n).map(|i| (format!("@user{i}:localhost"), json!([]))).collect::<serde_json::Map<_, _>>();
    api.post("/_matrix/client/v3/keys/query", json!({ "device_keys": users(3) })).await.assert_error(413, "M_TOO_LARGE");
    api.post("/_matrix/client/v3/keys/query", json!({ "device_keys": users(2) })).await.ok();

    let claimed = (0..3).map(|i| (format!("DEVICE{i}"), json!("signed_curve25519"))).collect::<serde_json::Map<_, _>>();
    api.post("/_matrix/client/v3/keys/claim", json!({ "one_time_keys": { alice.user_id.clone(): claimed } }))
        .await
        .assert_error(413, "M_TOO_LARGE");

    let keys = (0..3).map(|i| (format!("signed_curve25519:AAAA{i}"), json!({ "key": "k", "signatures": {} }))).collect::<serde_json::Map<_, _>>();
    api.post("/_matrix/client/v3/keys/upload", json!({ "one_time_keys": keys })).await.assert_error(413, "M_TOO_LARGE");
}

#[tokio::test]
async fn oversized_filters_are_bad_json() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let room_id = api.create_room(json!({})).await;
    let max = server.config().limits.max_filter_entries;
    let types: Vec<String> = (0..=max).map(|i| format!("t{i}")).collect();
    let room_filter = json!({ "not_types": types });

    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    api.post(&path, json!({ "room": { "timeline": room_filter } })).await.assert_error(400, "M_BAD_JSON");
    let inline = json!({ "room": { "timeline": room_filter } }).to_string();
    api.get(&format!("/_matrix/client/v3/sync?filter={}", query(&inline))).await.assert_error(400, "M_BAD_JSON");
    api.messages(&room_id, &format!("dir=b&filter={}", query(&room_filter.to_string()))).await.assert_error(400, "M_BAD_JSON");

    let within_limit = json!({ "not_types": types[..max] });
    api.post(&path, json!({ "room": { "timeline": within_limit } })).await.ok();
}

/// A type pattern with many `*` against a long event type: a backtracking
/// matcher takes exponential time, the server's answers at once.
#[tokio::test]
async fn a_wildcard_filter_cannot_stall_the_server() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let room_id = api.create_room(json!({})).await;
    let event_type = "a".repeat(200);
    api.put(&send_path(&room_id, &event_type, &new_txn_id()), json!({ "x": 1 })).await.ok();

    let pattern = format!("{}b", "a*".repeat(40));
    let filter = json!({ "types": [pattern] }).to_string();
    let page = tokio::time::timeout(Duration::from_secs(10), api.messages(&room_id, &format!("dir=b&filter={}", query(&filter))))
        .await
        .expect("/messages with a many-star filter answers within 10 s");
    assert_eq!(page.ok()["chunk"], json!([]), "nothing ends in `b`");
}

#[rustfmt::skip]
#[path = "../../fuzz/src/homeserver_targets.rs"]
mod homeserver_targets;
#[rustfmt::skip]
#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

/// The fuzz targets (`scripts/fuzz`) over their seeds and every crash they
/// once found, so each run of the suite repeats them without libFuzzer.
#[test]
fn the_fuzz_targets_pass_their_corpus_and_regressions() {
    let targets: [(&str, fn(&[u8])); 2] = [("event_json", homeserver_targets::event_json), ("sync_filter", homeserver_targets::sync_filter)];
    for (target, run) in targets {
        for (path, input) in corpus::inputs(target, &[]) {
            let outcome = std::panic::catch_unwind(|| run(&input));
            assert!(outcome.is_ok(), "fuzz target {target} panics on {}", path.display());
        }
    }
}
