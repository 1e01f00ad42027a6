//! Presence: what users set reaches the people they share rooms with, a
//! status message survives the syncs that keep a user online, and a user
//! whose client stops syncing goes offline (also across a restart, which
//! loses a single process's in-memory activity).

mod common;

use std::time::Duration;

use common::{
    RegisteredUser, TestServer,
    api::{Api, enc},
};
use serde_json::{Value, json};

/// Deadline for a presence change to reach a syncing room member: the
/// inactivity period (1 s here), a sweep interval (5 s) and a sync.
const OFFLINE_WITHIN: Duration = Duration::from_secs(15);
const SOON: Duration = Duration::from_secs(5);

async fn server_with_short_presence() -> TestServer {
    TestServer::start_with(|config| config.presence.offline_after_secs = 1).await
}

/// Bob's syncs from `since` until one carries Alice's presence accepted by
/// `accept`; returns the next token and that presence content.
async fn presence_of(bob: &Api, alice: &RegisteredUser, since: &str, within: Duration, accept: impl Fn(&Value) -> bool) -> (String, Value) {
    let mut seen = Value::Null;
    let replies = bob
        .sync_until(since, within, |reply| {
            let events = reply.ok()["presence"]["events"].as_array().cloned().unwrap_or_default();
            let found = events.iter().rev().find(|event| event["sender"] == alice.user_id.as_str()).map(|event| event["content"].clone());
            match found {
                Some(content) if accept(&content) => {
                    seen = content;
                    true
                }
                _ => false,
            }
        })
        .await;
    (replies.last().expect("at least one answer").str("next_batch"), seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn inactive_users_go_offline_and_status_messages_survive_syncs() {
    let server = server_with_short_presence().await;
    let (alice, bob, _room) = server.two_users_in_a_room().await;
    let (alice_api, bob_api) = (server.api_as(&alice.access_token), server.api_as(&bob.access_token));
    let presence_path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let since = bob_api.sync(None, 0).await.str("next_batch");

    alice_api.put(&presence_path, json!({ "presence": "online", "status_msg": "at the front desk" })).await.ok();
    // A sync with the default `set_presence=online` keeps the status message.
    alice_api.sync(None, 0).await.ok();
    let status = alice_api.get(&presence_path).await;
    assert_eq!(status.ok()["presence"], "online");
    assert_eq!(status.ok()["status_msg"], "at the front desk");
    assert_eq!(status.ok()["currently_active"], true);

    let (since, content) = presence_of(&bob_api, &alice, &since, SOON, |content| content["presence"] == "online").await;
    assert_eq!(content["status_msg"], "at the front desk");
    assert_eq!(content["currently_active"], true);

    // Alice's client goes away; Bob, still syncing, sees her go offline.
    let (since, content) = presence_of(&bob_api, &alice, &since, OFFLINE_WITHIN, |content| content["presence"] == "offline").await;
    assert_eq!(content["currently_active"], false);
    let status = bob_api.get(&presence_path).await;
    assert_eq!(status.ok()["presence"], "offline");
    assert_eq!(status.ok()["status_msg"], "at the front desk", "going offline for inactivity keeps the status message");

    // She syncs again: online again, once.
    alice_api.sync(None, 0).await.ok();
    presence_of(&bob_api, &alice, &since, SOON, |content| content["presence"] == "online").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_online_before_a_restart_go_offline_after_it() {
    let mut server = server_with_short_presence().await;
    let (alice, bob, _room) = server.two_users_in_a_room().await;
    server.api_as(&alice.access_token).sync(None, 0).await.ok();
    let bob_api = server.api_as(&bob.access_token);
    let since = bob_api.sync(None, 0).await.str("next_batch");

    // A restart loses a single process's record of who is active; the
    // database still says Alice is online.
    server.restart().await;
    let bob_api = server.api_as(&bob.access_token);
    presence_of(&bob_api, &alice, &since, OFFLINE_WITHIN, |content| content["presence"] == "offline").await;
}
