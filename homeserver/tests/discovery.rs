//! What a client asks before and right after logging in: supported versions,
//! well-known discovery, support contacts, capabilities.

mod common;

use common::TestServer;
use serde_json::Value;

/// TI-M A_25641-01: Matrix v1.11.
#[tokio::test]
async fn versions_lists_v1_11() {
    let server = TestServer::start().await;
    let reply = server.api().get("/_matrix/client/versions").await;
    let versions = reply.ok()["versions"].as_array().unwrap_or_else(|| panic!("no versions array: {reply}"));
    assert!(versions.iter().any(|v| v == "v1.11"), "v1.11 missing: {reply}");
}

#[tokio::test]
async fn well_known_client_names_the_homeserver() {
    let server = TestServer::start().await;
    let reply = server.api().get("/.well-known/matrix/client").await;
    let base_url = reply.ok()["m.homeserver"]["base_url"].as_str().unwrap_or_default();
    assert!(!base_url.is_empty(), "no m.homeserver.base_url: {reply}");
}

/// TI-M A_26265: the support endpoint answers with content.
#[tokio::test]
async fn well_known_support_is_not_empty() {
    let server = TestServer::start().await;
    let reply = server.api().get("/.well-known/matrix/support").await;
    let body = reply.ok();
    let contacts = body["contacts"].as_array().map_or(0, Vec::len);
    assert!(contacts > 0 || body["support_page"].is_string(), "neither contacts nor support_page: {reply}");
}

/// TI-M A_26202, A_26203, A_26248.
#[tokio::test]
async fn capabilities_offer_room_versions_9_and_10_with_10_default() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let reply = server.api_as(&alice.access_token).get("/_matrix/client/v3/capabilities").await;
    let room_versions = &reply.ok()["capabilities"]["m.room_versions"];
    assert_eq!(room_versions["default"], "10", "{reply}");
    let available = room_versions["available"].as_object().unwrap_or_else(|| panic!("no available room versions: {reply}"));
    for version in ["9", "10"] {
        assert_eq!(available.get(version).and_then(Value::as_str), Some("stable"), "room version {version}: {reply}");
    }
}
