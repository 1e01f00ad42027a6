//! Every response carries the headers that keep browsers from sniffing,
//! framing or running what the server sends (`http/security_headers.rs`);
//! media responses also the spec's CORP for web clients of other origins.

mod common;

use common::{TestServer, api::Reply};
use reqwest::Method;

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

#[track_caller]
fn assert_security_headers(reply: &Reply, media: bool) {
    let wanted = [
        ("x-content-type-options", Some("nosniff")),
        ("x-frame-options", Some("DENY")),
        ("referrer-policy", Some("no-referrer")),
        ("content-security-policy", Some(CSP)),
        ("cross-origin-resource-policy", media.then_some("cross-origin")),
    ];
    for (name, value) in wanted {
        assert_eq!(reply.header(name), value, "{name} on {reply}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);

    // Successes, each kind of error, anonymous and authenticated.
    assert_security_headers(&server.api().get("/_matrix/client/versions").await, false);
    assert_security_headers(&api.get("/_matrix/client/v3/account/whoami").await, false);
    assert_security_headers(&server.api().get("/_matrix/client/v3/account/whoami").await, false);
    assert_security_headers(&server.api().get("/_matrix/client/v3/no/such/endpoint").await, false);
    assert_security_headers(&server.api().send(Method::POST, "/_matrix/client/v3/login", Some(b"{".to_vec())).await, false);
    assert_security_headers(&api.send(Method::OPTIONS, "/_matrix/client/v3/sync", None).await, false);

    // Media: the upload's answer, its download, a missing file.
    let upload = api.send(Method::POST, "/_matrix/media/v3/upload", Some(b"<html><script>alert(1)</script></html>".to_vec())).await;
    assert_security_headers(&upload, true);
    let content_uri = upload.str("content_uri");
    let media_id = content_uri.rsplit('/').next().expect("mxc://server/id");
    let download = api.get(&format!("/_matrix/client/v1/media/download/localhost/{media_id}")).await;
    assert_eq!(download.status, 200, "{download}");
    assert_security_headers(&download, true);
    assert_security_headers(&api.get("/_matrix/client/v1/media/download/localhost/nosuchmedia").await, true);
    assert_security_headers(&server.api().get(&format!("/_matrix/media/v3/download/localhost/{media_id}")).await, true);
}
