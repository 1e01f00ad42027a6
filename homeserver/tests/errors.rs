//! Requests the server must refuse, and how: the status and `errcode` the
//! Matrix spec names for each failure.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::json;

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn malformed_json_is_not_json() {
    let server = TestServer::start().await;
    let bodies: [&[u8]; 3] = [b"{\"type\": \"m.login.password\"", b"not json at all", b"{\"type\": \"m.login.password\", \"password\": 'quoted'}"];
    for body in bodies {
        let reply = server.api().send(Method::POST, LOGIN, Some(body.to_vec())).await;
        reply.assert_error(400, "M_NOT_JSON");
    }
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_bad_json() {
    let server = TestServer::start().await;
    let bodies = [
        json!([]),
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": 12 }),
        // No `type`: ruma-client-api 0.24's `LoginInfo` deserializer indexes
        // the map and panics, which must not become a 500.
        json!({}),
        json!({ "identifier": { "type": "m.id.user", "user": "alice" }, "password": "secret" }),
    ];
    for body in bodies {
        server.api().post(LOGIN, body).await.assert_error(400, "M_BAD_JSON");
    }
}

#[tokio::test]
async fn unknown_endpoint_is_unrecognized() {
    let server = TestServer::start().await;
    for path in ["/_matrix/client/v3/no_such_endpoint", "/_matrix/client/v1/no/such/thing"] {
        server.api().get(path).await.assert_error(404, "M_UNRECOGNIZED");
    }
}

#[tokio::test]
async fn wrong_method_on_a_known_path_is_method_not_allowed() {
    let server = TestServer::start().await;
    server.api().send(Method::DELETE, LOGIN, None).await.assert_error(405, "M_UNRECOGNIZED");
    server.api().post("/_matrix/client/versions", json!({})).await.assert_error(405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn unknown_token_is_rejected() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    // Garbage, and a token of the right form for a real user that was never issued.
    let forged = format!("{}XXXX", &alice.access_token[..alice.access_token.len() - 4]);
    for token in ["garbage", forged.as_str()] {
        let reply = server.api_as(token).get(WHOAMI).await;
        reply.assert_error(401, "M_UNKNOWN_TOKEN");
    }
}

#[tokio::test]
async fn missing_token_is_rejected() {
    let server = TestServer::start().await;
    server.api().get(WHOAMI).await.assert_error(401, "M_MISSING_TOKEN");
    server.api().post("/_matrix/client/v3/createRoom", json!({})).await.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn body_over_the_limit_is_too_large() {
    let server = TestServer::start().await;
    let limit = server.config().limits.max_request_bytes;
    assert_eq!(limit, 1024 * 1024, "the development config's limit");
    // Well-formed JSON, twice the limit: only the size is wrong.
    let padding = "x".repeat(2 * limit);
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": padding });
    server.api().post(LOGIN, body).await.assert_error(413, "M_TOO_LARGE");
}

/// TI-M answers 401 where the spec says 403 (see `oidc.rs` for insured
/// persons).
#[tokio::test]
async fn registration_is_refused_when_disabled() {
    let server = TestServer::start_with(|config| config.registration.enabled = false).await;
    let reply = server
        .api()
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "mallory", "password": "secret-enough", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    reply.assert_error(401, "M_FORBIDDEN");
}
