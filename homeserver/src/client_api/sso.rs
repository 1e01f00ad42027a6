//! Single sign-on for insured persons through the insurer's identity
//! provider (TI-M ePA): `/login/sso/redirect[/{idpId}]` sends the browser
//! to the IdP, [`CALLBACK_PATH`] takes it back, creates the account at the
//! first login and sends the browser on to the client with a `loginToken`,
//! which the client redeems with `m.login.token` (`session.rs`).
//!
//! Between the two requests the login lives in `oidc_sessions` (database
//! 0), so a worker can finish what another started. A cookie binds it to
//! the browser that started it: a login link sent to someone else ends at
//! the callback with an error instead of sending their login token to the
//! sender's `redirectUrl`.

use std::time::Duration;

use axum::{
    Router,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, StatusCode, header};
use ruma::api::{
    client::session::{sso_login, sso_login_with_provider},
    error::ErrorKind,
};
use url::Url;

use super::session::issue_login_token;
use crate::{
    auth::tokens,
    config::{OidcConfig, OidcProviderConfig},
    http::{ApiError, ApiResult, Args, RouterExt},
    server::Homeserver,
    storage::{self, oidc_sessions::{self, OidcSession}, users},
    tim::accounts,
};

/// Where the IdP sends the browser back: the path Synapse uses, so proxies
/// and IdP registrations carry over. Register
/// `<public_baseurl>/_synapse/client/oidc/callback` at the IdP.
pub const CALLBACK_PATH: &str = "/_synapse/client/oidc/callback";
/// The cookie that binds a login to its browser.
const BROWSER_COOKIE: &str = "tim_oidc_browser";
/// How long a person may take at the IdP.
const LOGIN_LIFETIME: Duration = Duration::from_secs(600);

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(redirect).endpoint(redirect_to_provider).route(CALLBACK_PATH, get(callback))
}

/// Without an `idpId`: the one configured provider.
async fn redirect(server: Homeserver, args: Args<sso_login::v3::Request>) -> ApiResult<sso_login::v3::Response> {
    let provider = match server.config.oidc.providers.as_slice() {
        [provider] => provider,
        [] => return Err(ApiError::not_found("Single sign-on is not offered")),
        _ => return Err(ApiError::invalid_param("Several identity providers: choose one with /login/sso/redirect/{idpId}")),
    };
    let (location, cookie) = start(&server, provider, &args.body.redirect_url).await?;
    let mut response = sso_login::v3::Response::new(location);
    response.cookie = Some(cookie);
    Ok(response)
}

async fn redirect_to_provider(server: Homeserver, args: Args<sso_login_with_provider::v3::Request>) -> ApiResult<sso_login_with_provider::v3::Response> {
    let provider = server.config.oidc.provider(&args.body.idp_id).ok_or_else(|| ApiError::not_found("Unknown identity provider"))?;
    let (location, cookie) = start(&server, provider, &args.body.redirect_url).await?;
    let mut response = sso_login_with_provider::v3::Response::new(location);
    response.cookie = Some(cookie);
    Ok(response)
}

/// Starts a login at `provider`: stores what the callback needs and
/// returns the IdP's authorization URL and the browser cookie.
async fn start(server: &Homeserver, provider: &OidcProviderConfig, redirect_url: &str) -> ApiResult<(String, String)> {
    let client_redirect = client_redirect_url(&server.config.oidc, redirect_url)?;
    let callback = callback_url(server)?;
    let authorization = server.oidc.authorize(provider, &callback).await?;
    let browser = tokens::random_string(32);
    let session = OidcSession {
        provider_id: provider.id.clone(),
        nonce: authorization.nonce,
        pkce_verifier: authorization.pkce_verifier,
        callback_url: callback.to_string(),
        client_redirect_url: client_redirect.to_string(),
    };
    let expires = storage::now_ms() + i64::try_from(LOGIN_LIFETIME.as_millis()).unwrap_or(i64::MAX);
    oidc_sessions::create(server.db.global(), &authorization.state, &tokens::hash(&browser), &session, expires).await?;
    let secure = if callback.scheme() == "https" { "; Secure" } else { "" };
    let cookie = format!("{BROWSER_COOKIE}={browser}; Path={CALLBACK_PATH}; Max-Age={}; HttpOnly; SameSite=Lax{secure}", LOGIN_LIFETIME.as_secs());
    Ok((authorization.location.into(), cookie))
}

/// The IdP's redirect back: code for token, id_token for KVNR, KVNR for
/// account, account for a login token that goes to the client.
async fn callback(State(server): State<Homeserver>, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult<Response> {
    let query = query.unwrap_or_default();
    let param = |name: &str| url::form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned());
    let missing = |name: &str| ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, format!("{name} is missing"));

    let state = param("state").ok_or_else(|| missing("state"))?;
    let browser = cookie(&headers, BROWSER_COOKIE).unwrap_or_default();
    let session = oidc_sessions::take(server.db.global(), &state, &tokens::hash(browser))
        .await?
        .ok_or_else(|| ApiError::forbidden("Unknown or expired login, or one this browser did not start: start the login again"))?;
    if let Some(error) = param("error") {
        return Err(ApiError::forbidden(format!("The identity provider ended the login: {error}")));
    }
    let code = param("code").ok_or_else(|| missing("code"))?;
    let provider = server
        .config
        .oidc
        .provider(&session.provider_id)
        .ok_or_else(|| ApiError::forbidden("The identity provider of this login is no longer offered"))?;
    let callback = Url::parse(&session.callback_url).map_err(anyhow::Error::from)?;
    let identity = server.oidc.identify(provider, &callback, &code, &session.pkce_verifier, &session.nonce).await?;

    let user_id = accounts::insured_account(&server, &identity.kvnr, identity.display_name.as_deref()).await?;
    if !users::is_active(server.db.user_shard(&user_id), &user_id).await? {
        return Err(ApiError::new(StatusCode::FORBIDDEN, ErrorKind::UserDeactivated, "This account is deactivated"));
    }
    let token = issue_login_token(&server, &user_id).await?;
    let mut target = Url::parse(&session.client_redirect_url).map_err(anyhow::Error::from)?;
    target.query_pairs_mut().append_pair("loginToken", &token);
    tracing::info!(%user_id, provider = provider.id, "single sign-on");
    let expired = format!("{BROWSER_COOKIE}=; Path={CALLBACK_PATH}; Max-Age=0; HttpOnly; SameSite=Lax");
    Ok((StatusCode::FOUND, [(header::LOCATION, target.to_string()), (header::SET_COOKIE, expired)]).into_response())
}

/// The client's `redirectUrl`, if it is one to send a login token to: an
/// absolute URL under one of the configured prefixes, or without any,
/// http(s) or an app's reverse-domain scheme (RFC 8252 7.1: `de.insurer.app:/…`).
fn client_redirect_url(config: &OidcConfig, given: &str) -> ApiResult<Url> {
    let refused = || ApiError::invalid_param("redirectUrl is not an address this server sends login tokens to");
    let url = Url::parse(given).map_err(|_| refused())?;
    let allowed = if config.allowed_redirect_urls.is_empty() {
        matches!(url.scheme(), "http" | "https") || url.scheme().contains('.')
    } else {
        // Prefixes compared in their parsed form, so `https://app.example`
        // means `https://app.example/` and admits no `https://app.example.evil/`.
        config.allowed_redirect_urls.iter().filter_map(|prefix| Url::parse(prefix).ok()).any(|prefix| url.as_str().starts_with(prefix.as_str()))
    };
    if !allowed {
        return Err(refused());
    }
    Ok(url)
}

/// The redirect URI registered at the IdP, under the public base URL.
fn callback_url(server: &Homeserver) -> ApiResult<Url> {
    let base = server.config.client_base_url();
    Url::parse(&format!("{}{CALLBACK_PATH}", base.trim_end_matches('/'))).map_err(|err| ApiError::Internal(err.into()))
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_urls_are_absolute_and_allowed() {
        let open = OidcConfig::default();
        for url in ["https://app.example/done", "http://127.0.0.1:8080/", "de.insurer.tim:/sso"] {
            assert!(client_redirect_url(&open, url).is_ok(), "{url}");
        }
        for url in ["/relative", "javascript:alert(1)", "data:text/html,x", "not a url", ""] {
            assert_eq!(client_redirect_url(&open, url).unwrap_err().errcode(), "M_INVALID_PARAM", "{url}");
        }
        let listed = OidcConfig { allowed_redirect_urls: vec!["https://app.example".into(), "de.insurer.tim:/".into()], ..OidcConfig::default() };
        assert!(client_redirect_url(&listed, "https://app.example/done").is_ok());
        assert!(client_redirect_url(&listed, "de.insurer.tim:/sso").is_ok());
        for url in ["https://app.example.evil/done", "https://other.example/", "http://app.example/done"] {
            assert!(client_redirect_url(&listed, url).is_err(), "{url}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; tim_oidc_browser=secret; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, BROWSER_COOKIE), Some("secret"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
