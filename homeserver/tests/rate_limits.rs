//! Rate limits: 429 `M_LIMIT_EXCEEDED` with the time to wait, per user for
//! room writes, per client address for anonymous requests, per account for
//! wrong passwords; one limit for all workers through Redis, and per worker
//! while Redis is away.

mod common;

use std::time::Duration;

use common::{TestServer, api::Reply, redis};
use homeserver::config::RateLimit;
use serde_json::json;

/// A burst of `burst` at once, then one every ten seconds: no test waits
/// for a cell by accident.
fn slow(burst: u32) -> RateLimit {
    RateLimit { per_second: 0.1, burst }
}

/// The wait a 429 asks for.
fn retry_after(reply: &Reply) -> Duration {
    reply.assert_error(429, "M_LIMIT_EXCEEDED");
    let ms = reply.body["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("no retry_after_ms: {reply}"));
    Duration::from_millis(ms)
}

#[tokio::test]
async fn room_writes_are_limited_per_user_and_recover() {
    let server = TestServer::start_with(|config| config.rate_limits.room_writes = RateLimit { per_second: 2.0, burst: 4 }).await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let bob = server.api_as(&server.register_user("bob").await.access_token);

    // createRoom is a room write too: it and three messages use the burst.
    let room = alice.create_room(json!({})).await;
    for n in 0..3 {
        alice.send_text(&room, &format!("message {n}")).await.ok();
    }
    let refused = alice.send_text(&room, "one too many").await;
    let wait = retry_after(&refused);
    assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "one cell at 2/s: {wait:?}");

    // Another user's writes are not affected, nor Alice's reads.
    let bobs_room = bob.create_room(json!({})).await;
    bob.send_text(&bobs_room, "hello").await.ok();
    alice.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", common::api::enc(&room))).await.ok();

    tokio::time::sleep(wait).await;
    alice.send_text(&room, "after waiting").await.ok();
}

#[tokio::test]
async fn one_limit_for_all_workers() {
    let a = TestServer::start_with(|config| {
        redis::use_shared(config);
        config.rate_limits.room_writes = slow(5);
    })
    .await;
    let b = a.start_worker(|_| {}).await;
    for worker in [&a, &b] {
        redis::wait_until_connected(worker.server(), true, Duration::from_secs(10)).await;
    }
    let alice = a.register_user("alice").await;
    let (on_a, on_b) = (a.api_as(&alice.access_token), b.api_as(&alice.access_token));

    let room = on_a.create_room(json!({})).await;
    for n in 0..4 {
        let worker = if n % 2 == 0 { &on_b } else { &on_a };
        worker.send_text(&room, &format!("message {n}")).await.ok();
    }
    // Five writes in all, spread over both workers: each worker saw fewer
    // than five, so only a shared count refuses the sixth on either.
    retry_after(&on_a.send_text(&room, "sixth").await);
    retry_after(&on_b.send_text(&room, "seventh").await);
}

#[tokio::test]
async fn limits_hold_per_worker_while_redis_is_away() {
    let server = TestServer::start_with(|config| {
        config.redis.url = Some(redis::unreachable_url());
        config.redis.prefix = Some(redis::unique_prefix());
        config.rate_limits.room_writes = slow(3);
    })
    .await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let room = alice.create_room(json!({})).await;
    for n in 0..2 {
        alice.send_text(&room, &format!("message {n}")).await.ok();
    }
    retry_after(&alice.send_text(&room, "fourth").await);

    let metrics = server.server().metrics.render().expect("rendering metrics");
    assert!(metrics.contains(r#"rate_limited_requests_total{class="room_writes"} 1"#), "{metrics}");
}

#[tokio::test]
async fn anonymous_requests_are_limited_per_client_address() {
    let server = TestServer::start_with(|config| config.rate_limits.anonymous = slow(3)).await;
    let http = reqwest::Client::new();
    // The test's connections come from loopback, a trusted proxy by
    // default, so `X-Forwarded-For` names the client.
    let login_flows = |client: Option<&'static str>| {
        let mut request = http.get(format!("{}/_matrix/client/v3/login", server.base_url()));
        if let Some(client) = client {
            request = request.header("X-Forwarded-For", format!("6.6.6.6, {client}"));
        }
        async move { request.send().await.expect("GET /login") }
    };

    for _ in 0..3 {
        assert_eq!(login_flows(Some("198.51.100.1")).await.status(), 200);
    }
    let refused = login_flows(Some("198.51.100.1")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"), "429 carries Retry-After: {:?}", refused.headers());
    let body: serde_json::Value = refused.json().await.expect("a JSON error");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");

    // The address the client wrote itself (6.6.6.6) counts for nothing.
    assert_eq!(login_flows(Some("198.51.100.2")).await.status(), 200);
    assert_eq!(login_flows(None).await.status(), 200, "the proxy's own requests have their own count");
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_not_the_address() {
    let server = TestServer::start_with(|config| config.rate_limits.failed_logins = slow(3)).await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;

    for _ in 0..3 {
        server.login("alice", "wrong").await.assert_error(403, "M_FORBIDDEN");
    }
    // Used up: even the right password waits, so guessing on learns nothing.
    retry_after(&server.login("alice", &alice.password).await);
    // User-interactive auth checks passwords under the same limit.
    let alices = server.api_as(&alice.access_token);
    let delete_device = |api: common::api::Api, device: String, password: String, user: String| async move {
        let path = format!("/_matrix/client/v3/devices/{device}");
        let first = api.delete(&path, json!({})).await;
        let session = first.uia_session("m.login.password");
        api.delete(&path, json!({ "auth": { "type": "m.login.password", "session": session, "identifier": { "type": "m.id.user", "user": user }, "password": password } }))
            .await
    };
    retry_after(&delete_device(alices, alice.device_id.clone(), alice.password.clone(), alice.user_id.clone()).await);

    server.login("bob", &bob.password).await.ok();
}
