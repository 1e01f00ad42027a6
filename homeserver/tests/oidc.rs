//! Insured persons' login through the insurer's identity provider (TI-M ePA,
//! `shared/TI-MESSENGER.md` "Login for insured persons"; see
//! docs/TIM-RULES.md), end to end against a real OpenID Connect provider
//! (panva's oidc-provider, `common/oidc_provider.rs`): `/login` offers
//! `m.login.sso`, the browser goes to the IdP (PAR, PKCE) and back, the
//! account is created at the first login with the KVNR and display name
//! the id_token carries, and the client logs in with the `loginToken`.
//!
//! gematik's public test suite names no requirement id for the login flow
//! itself; the tests name the ids of the rules they check on the resulting
//! account (A_28587, A_25043). With `HOMESERVER_TEST_WORKERS=2` every login
//! starts at one worker and the IdP's callback goes to the other.

mod common;

use common::{
    TestServer,
    api::{enc, query},
    matrix,
    oidc_provider::{Browser, IDP_ID, OidcProvider},
};
use matrix_sdk::ruma::api::client::session::get_login_types::v3::LoginType;
use serde_json::json;
use url::Url;

/// KVNRs with valid check digits.
const KVNR_IDA: &str = "A000000014";
const KVNR_INA: &str = "B000000028";
/// Where the (pretend) client wants its login token.
const CLIENT_REDIRECT: &str = "https://client.example/sso-done?app=tim";
const CALLBACK_PATH: &str = "/_synapse/client/oidc/callback";

/// A homeserver with the provider configured and registration closed, as
/// an insurer runs it.
async fn server_with(idp: &OidcProvider) -> TestServer {
    let provider = idp.config();
    TestServer::start_with(move |config| {
        config.registration.enabled = false;
        config.oidc.providers = vec![provider];
    })
    .await
}

/// `/login/sso/redirect/{idpId}` on the first worker, for `redirect_url`.
fn start_url(server: &TestServer, redirect_url: &str) -> Url {
    let worker = &server.worker_urls()[0];
    Url::parse(&format!("{worker}/_matrix/client/v3/login/sso/redirect/{IDP_ID}?redirectUrl={}", query(redirect_url))).unwrap()
}

/// Walks a browser from the homeserver to the IdP, logs in there, and
/// returns the IdP's redirect to our callback, moved to the last worker.
async fn through_the_idp(server: &TestServer, idp: &OidcProvider, browser: &Browser, kvnr: &str, name: &str) -> Url {
    let at_idp = browser.redirect(&start_url(server, CLIENT_REDIRECT)).await;
    assert!(at_idp.as_str().starts_with(idp.issuer()), "to the IdP: {at_idp}");
    let params: Vec<String> = at_idp.query_pairs().map(|(key, _)| key.into_owned()).collect();
    assert_eq!(params, ["client_id", "request_uri"], "PAR: the request itself went to the IdP directly");
    let login_page = browser.redirect(&at_idp).await;
    let mut next = browser.log_in_at_idp(&login_page, kvnr, name).await;
    while next.as_str().starts_with(idp.issuer()) {
        next = browser.redirect(&next).await;
    }
    assert_eq!(next.path(), CALLBACK_PATH, "back to the homeserver: {next}");
    let last_worker = Url::parse(server.worker_urls().last().unwrap()).unwrap();
    next.set_port(last_worker.port()).unwrap();
    next
}

/// A whole login up to the client's `redirectUrl`; returns the loginToken.
async fn sso_login(server: &TestServer, idp: &OidcProvider, kvnr: &str, name: &str) -> String {
    let browser = Browser::new();
    let callback = through_the_idp(server, idp, &browser, kvnr, name).await;
    let back = browser.redirect(&callback).await;
    assert!(back.as_str().starts_with(CLIENT_REDIRECT), "to the client with the token: {back}");
    assert_eq!(back.query_pairs().filter(|(key, _)| key == "app").count(), 1, "the client's own query stays");
    back.query_pairs().find(|(key, _)| key == "loginToken").map(|(_, token)| token.into_owned()).expect("a loginToken")
}

/// The login (TI-MESSENGER.md: `m.login.sso`, account at first login with
/// the display name from the id_token, `m.login.token`), and the account it
/// makes is an insured person's: A_28587 (no `/publicRooms`), A_25043 (the
/// default permission config).
#[tokio::test]
async fn insured_person_logs_in_through_the_idp_and_gets_an_insured_account() {
    let idp = OidcProvider::start().await;
    let server = server_with(&idp).await;

    let client = matrix::client(&server.base_url()).await;
    let types = client.matrix_auth().get_login_types().await.expect("login types");
    let sso = types.flows.iter().find_map(|flow| match flow {
        LoginType::Sso(sso) => Some(sso),
        _ => None,
    });
    let providers: Vec<(&str, &str)> = sso.expect("m.login.sso offered").identity_providers.iter().map(|p| (p.id.as_str(), p.name.as_str())).collect();
    assert_eq!(providers, [(IDP_ID, "Insurer IdP")]);
    assert!(types.flows.iter().any(|flow| matches!(flow, LoginType::Token(_))), "m.login.token offered");

    let token = sso_login(&server, &idp, KVNR_IDA, "Ida Insured").await;
    client.matrix_auth().login_token(&token).initial_device_display_name("Ida's phone").send().await.expect("m.login.token");
    let user_id = client.whoami().await.expect("whoami").user_id;
    assert_eq!(client.account().get_display_name().await.expect("display name").as_deref(), Some("Ida Insured"));

    let ida = server.api_as(client.access_token().as_deref().unwrap());
    ida.get("/_matrix/client/v3/publicRooms").await.assert_error(403, "M_FORBIDDEN");
    let config = ida.get(&format!("/_matrix/client/v3/user/{}/account_data/de.gematik.tim.account.permissionconfig.epa.v1", enc(user_id.as_str()))).await;
    assert_eq!(config.ok()["defaultSetting"], "allow all");
}

/// One account per person: the same KVNR logs in to the same account (its
/// display name stays the one the person has), another KVNR gets another.
#[tokio::test]
async fn the_same_kvnr_always_logs_in_to_the_same_account() {
    let idp = OidcProvider::start().await;
    let server = server_with(&idp).await;
    let login = async |kvnr: &str, name: &str| {
        let token = sso_login(&server, &idp, kvnr, name).await;
        let reply = server.api().post("/_matrix/client/v3/login", json!({ "type": "m.login.token", "token": token })).await;
        (reply.str("user_id"), reply.str("access_token"))
    };

    let (first, _) = login(KVNR_IDA, "Ida Insured").await;
    let (again, access_token) = login(KVNR_IDA, "Ida Renamed").await;
    assert_eq!(first, again);
    let profile = server.api_as(&access_token).get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&first))).await;
    assert_eq!(profile.ok()["displayname"], "Ida Insured");
    let (other, _) = login(KVNR_INA, "Ina Insured").await;
    assert_ne!(first, other);
}

/// A login token works once: the replay is refused (403 `M_FORBIDDEN`), as
/// is a made-up one.
#[tokio::test]
async fn login_tokens_work_once() {
    let idp = OidcProvider::start().await;
    let server = server_with(&idp).await;
    let token = sso_login(&server, &idp, KVNR_IDA, "Ida Insured").await;
    let login = |token: &str| json!({ "type": "m.login.token", "token": token });

    server.api().post("/_matrix/client/v3/login", login(&token)).await.ok();
    server.api().post("/_matrix/client/v3/login", login(&token)).await.assert_error(403, "M_FORBIDDEN");
    server.api().post("/_matrix/client/v3/login", login("mlt_bm9ib2R5_0123456789")).await.assert_error(403, "M_FORBIDDEN");
}

/// What a client or browser gets wrong is a Matrix error, never a 500:
/// unknown provider, bad `redirectUrl`, a callback without or with an
/// unknown `state`, one from another browser than the one that started the
/// login, one the IdP ended with an error, and a code the IdP does not know.
#[tokio::test]
async fn broken_logins_are_refused_with_matrix_errors() {
    let idp = OidcProvider::start().await;
    let server = server_with(&idp).await;
    let api = server.api();

    api.get(&format!("/_matrix/client/v3/login/sso/redirect/nobody?redirectUrl={}", query(CLIENT_REDIRECT))).await.assert_error(404, "M_NOT_FOUND");
    for bad in ["/relative", "javascript:alert(1)", "not a url"] {
        api.get(&format!("/_matrix/client/v3/login/sso/redirect/{IDP_ID}?redirectUrl={}", query(bad))).await.assert_error(400, "M_INVALID_PARAM");
    }
    api.get(&format!("/_matrix/client/v3/login/sso/redirect/{IDP_ID}")).await.assert_error(400, "M_INVALID_PARAM");
    api.get(CALLBACK_PATH).await.assert_error(400, "M_MISSING_PARAM");
    api.get(&format!("{CALLBACK_PATH}?state=made-up&code=made-up")).await.assert_error(403, "M_FORBIDDEN");

    // The IdP's answer reaches a browser that did not start the login.
    let callback = through_the_idp(&server, &idp, &Browser::new(), KVNR_IDA, "Ida Insured").await;
    assert_eq!(Browser::new().get(&callback).await.0, 403);

    // The right browser, but the IdP ended the login, or the code is wrong.
    for ending in ["error=access_denied", "code=made-up"] {
        let browser = Browser::new();
        let at_idp = browser.redirect(&start_url(&server, CLIENT_REDIRECT)).await;
        let state = browser_state(&browser, &at_idp).await;
        let callback = Url::parse(&format!("{}{CALLBACK_PATH}?state={}&{ending}", server.worker_urls()[0], query(&state))).unwrap();
        assert_eq!(browser.get(&callback).await.0, 403, "{ending}");
        assert_eq!(browser.get(&callback).await.0, 403, "{ending}, again: the login is used up");
    }
}

/// The `state` of a login the browser started: the IdP hands it back on
/// the redirect to the callback, so log in and read it from there.
async fn browser_state(browser: &Browser, at_idp: &Url) -> String {
    let login_page = browser.redirect(at_idp).await;
    let mut next = browser.log_in_at_idp(&login_page, KVNR_IDA, "Ida Insured").await;
    while next.path() != CALLBACK_PATH {
        next = browser.redirect(&next).await;
    }
    next.query_pairs().find(|(key, _)| key == "state").map(|(_, state)| state.into_owned()).expect("a state")
}

/// TI-MESSENGER.md: `POST /register` answers 401; insured persons get their
/// accounts only through the IdP, also once they have one.
#[tokio::test]
async fn registration_answers_401_also_to_insured_persons() {
    let idp = OidcProvider::start().await;
    let server = server_with(&idp).await;
    let token = sso_login(&server, &idp, KVNR_IDA, "Ida Insured").await;
    let ida = server.api().post("/_matrix/client/v3/login", json!({ "type": "m.login.token", "token": token })).await;
    let register = json!({ "username": "ida2", "password": "secret-enough", "auth": { "type": "m.login.dummy" } });

    server.api().post("/_matrix/client/v3/register", register.clone()).await.assert_error(401, "M_FORBIDDEN");
    server.api_as(&ida.str("access_token")).post("/_matrix/client/v3/register", register).await.assert_error(401, "M_FORBIDDEN");
}
