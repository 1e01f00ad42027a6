//! Accounts and sessions: registration, password and token login, logout,
//! password change, deactivation, device management with user-interactive
//! auth.

mod common;

use common::{
    TestServer,
    api::{Reply, enc, password_auth},
    matrix, password_of, user_id,
};
use matrix_sdk::ruma::{
    api::client::{
        account::register,
        uiaa::{AuthData, AuthType, Dummy},
    },
    assign,
};
use serde_json::{Value, json};

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// `POST /login` with a password for a new device named `device_name`.
async fn login_device(server: &TestServer, name: &str, password: &str, device_name: &str) -> Reply {
    server
        .api()
        .post(
            LOGIN,
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": name },
                "password": password,
                "initial_device_display_name": device_name,
            }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn register_and_log_in_with_matrix_sdk() {
    let server = TestServer::start().await;
    let registering = matrix::client(&server.base_url()).await;
    let mut request = assign!(register::v3::Request::new(), {
        username: Some("alice".to_owned()),
        password: Some(password_of("alice")),
    });
    let challenge = registering.matrix_auth().register(request.clone()).await.expect_err("registration starts with user-interactive auth");
    let info = challenge.as_uiaa_response().unwrap_or_else(|| panic!("expected a UIA challenge, got {challenge:?}"));
    assert!(info.flows.iter().any(|flow| flow.stages.contains(&AuthType::Dummy)), "no m.login.dummy flow: {info:?}");
    request.auth = Some(AuthData::Dummy(assign!(Dummy::new(), { session: info.session.clone() })));
    let registered = registering.matrix_auth().register(request).await.expect("registration with m.login.dummy");
    assert_eq!(registered.user_id, user_id("alice"));
    assert!(registered.access_token.is_some(), "registration logs in unless inhibit_login");

    let alice = server.matrix_login("alice", &password_of("alice")).await;
    let whoami = alice.whoami().await.expect("whoami");
    assert_eq!(whoami.user_id, user_id("alice"));
    assert_eq!(whoami.device_id.as_deref(), alice.device_id(), "whoami names the device of the token");
    assert_ne!(alice.device_id(), registered.device_id.as_deref(), "a login is a new device");
}

#[tokio::test]
async fn whoami_names_user_and_device() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let reply = server.api_as(&alice.access_token).get(WHOAMI).await;
    assert_eq!(reply.ok()["user_id"], alice.user_id, "{reply}");
    assert_eq!(reply.body["device_id"], alice.device_id, "{reply}");
}

#[tokio::test]
async fn wrong_password_is_forbidden() {
    let server = TestServer::start().await;
    server.register_user("alice").await;
    server.login("alice", "not the password").await.assert_error(403, "M_FORBIDDEN");
    server.login("nobody", "whatever").await.assert_error(403, "M_FORBIDDEN");
    // The full user id works like the localpart.
    server.login(&user_id("alice"), &password_of("alice")).await.ok();
}

#[tokio::test]
async fn login_token_works_exactly_once() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);

    let get_token = "/_matrix/client/v1/login/get_token";
    let session = api.post(get_token, json!({})).await.uia_session("m.login.password");
    let reply = api.post(get_token, json!({ "auth": password_auth("alice", &alice.password, &session) })).await;
    let login_token = reply.ok()["login_token"].as_str().unwrap_or_else(|| panic!("no login_token: {reply}")).to_owned();
    assert!(reply.body["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0), "{reply}");

    let token_login = json!({ "type": "m.login.token", "token": login_token });
    let first = server.api().post(LOGIN, token_login.clone()).await;
    assert_eq!(first.ok()["user_id"], alice.user_id, "{first}");
    let new_session = first.str("access_token");
    assert_eq!(server.api_as(&new_session).get(WHOAMI).await.ok()["user_id"], alice.user_id);

    server.api().post(LOGIN, token_login).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn logout_revokes_only_that_token() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let other = server.new_session("alice", &alice.password).await;

    server.api_as(&alice.access_token).post("/_matrix/client/v3/logout", json!({})).await.ok();
    server.api_as(&alice.access_token).get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    server.api_as(&other).get(WHOAMI).await.ok();
}

#[tokio::test]
async fn logout_all_revokes_every_token() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let other = server.new_session("alice", &alice.password).await;

    server.api_as(&other).post("/_matrix/client/v3/logout/all", json!({})).await.ok();
    for token in [&alice.access_token, &other] {
        server.api_as(token).get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    }
    // The account itself is fine.
    server.new_session("alice", &alice.password).await;
}

#[tokio::test]
async fn password_change_replaces_the_old_password() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let other = server.new_session("alice", &alice.password).await;
    let api = server.api_as(&alice.access_token);
    let new_password = "a-brand-new-password";

    let path = "/_matrix/client/v3/account/password";
    let session = api.post(path, json!({ "new_password": new_password })).await.uia_session("m.login.password");
    api.post(path, json!({ "new_password": new_password, "auth": password_auth("alice", &alice.password, &session) })).await.ok();

    server.login("alice", &alice.password).await.assert_error(403, "M_FORBIDDEN");
    server.new_session("alice", new_password).await;
    // `logout_devices` defaults to true: every other session ends, this one stays.
    api.get(WHOAMI).await.ok();
    server.api_as(&other).get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn deactivation_needs_the_password_and_ends_the_account() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);

    let path = "/_matrix/client/v3/account/deactivate";
    let session = api.post(path, json!({})).await.uia_session("m.login.password");
    let wrong = api.post(path, json!({ "auth": password_auth("alice", "wrong password", &session) })).await;
    assert_eq!(wrong.uia_session("m.login.password"), session, "a failed stage keeps the session");
    assert_eq!(wrong.errcode(), Some("M_FORBIDDEN"), "a failed stage says why: {wrong}");
    api.get(WHOAMI).await.ok();

    api.post(path, json!({ "auth": password_auth("alice", &alice.password, &session) })).await.ok();
    api.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    let login = server.login("alice", &alice.password).await;
    assert!(
        login.status == 403 && matches!(login.errcode(), Some("M_FORBIDDEN" | "M_USER_DEACTIVATED")),
        "login to a deactivated account must be refused with 403: {login}"
    );
}

#[tokio::test]
async fn devices_can_be_listed_renamed_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let phone = login_device(&server, "alice", &alice.password, "phone").await;
    let laptop = login_device(&server, "alice", &alice.password, "laptop").await;
    let (phone_token, laptop_token) = (phone.str("access_token"), laptop.str("access_token"));
    let laptop_id = laptop.str("device_id");
    let api = server.api_as(&phone_token);

    let listed = api.get("/_matrix/client/v3/devices").await;
    let names = device_names(listed.ok());
    assert!(names.contains(&(phone.str("device_id"), Some("phone".to_owned()))), "{listed}");
    assert!(names.contains(&(laptop_id.clone(), Some("laptop".to_owned()))), "{listed}");
    assert!(names.iter().any(|(id, _)| *id == alice.device_id), "the admin API's session is a device too: {listed}");

    let laptop_path = format!("/_matrix/client/v3/devices/{}", enc(&laptop_id));
    api.put(&laptop_path, json!({ "display_name": "work laptop" })).await.ok();
    let renamed = api.get(&laptop_path).await;
    assert_eq!(renamed.ok()["display_name"], "work laptop", "{renamed}");
    assert_eq!(renamed.body["device_id"], laptop_id.as_str(), "{renamed}");

    let session = api.delete(&laptop_path, json!({})).await.uia_session("m.login.password");
    let wrong = api.delete(&laptop_path, json!({ "auth": password_auth("alice", "wrong password", &session) })).await;
    assert_eq!(wrong.uia_session("m.login.password"), session, "a failed stage keeps the session");
    assert_eq!(wrong.errcode(), Some("M_FORBIDDEN"), "{wrong}");
    server.api_as(&laptop_token).get(WHOAMI).await.ok();
    api.delete(&laptop_path, json!({ "auth": password_auth("alice", &alice.password, &session) })).await.ok();

    server.api_as(&laptop_token).get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    api.get(&laptop_path).await.assert_error(404, "M_NOT_FOUND");
    let listed = api.get("/_matrix/client/v3/devices").await;
    assert!(!device_names(listed.ok()).iter().any(|(id, _)| *id == laptop_id), "deleted device still listed: {listed}");

    // Bulk deletion goes through the same auth.
    let tablet = login_device(&server, "alice", &alice.password, "tablet").await;
    let bulk = json!({ "devices": [tablet.str("device_id")] });
    let session = api.post("/_matrix/client/v3/delete_devices", bulk.clone()).await.uia_session("m.login.password");
    let mut authed = bulk;
    authed["auth"] = password_auth("alice", &alice.password, &session);
    api.post("/_matrix/client/v3/delete_devices", authed).await.ok();
    server.api_as(&tablet.str("access_token")).get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
}

/// `(device_id, display_name)` of a `GET /devices` answer.
fn device_names(body: &Value) -> Vec<(String, Option<String>)> {
    body["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|device| {
            (device["device_id"].as_str().unwrap_or_default().to_owned(), device["display_name"].as_str().map(str::to_owned))
        })
        .collect()
}
