//! Logging in and out: `/login` (password, `m.login.token`,
//! `m.login.application_service`),
//! `/login/get_token`, `/logout`, `/logout/all`. Single sign-on, which
//! ends in `m.login.token`, is in `sso.rs`.

use std::time::Duration;

use axum::Router;
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::client::{
        session::{
            get_login_token,
            get_login_types::{self, v3::{ApplicationServiceLoginType, IdentityProvider, LoginType, PasswordLoginType, SsoLoginType, TokenLoginType}},
            login::{self, v3::LoginInfo},
            logout, logout_all,
        },
        uiaa::UserIdentifier,
    },
};

use crate::{
    auth::{password, tokens::{self, TokenKind}, uiaa},
    http::{ApiError, ApiResult, Args, RouterExt},
    server::Homeserver,
    e2ee,
    storage::{self, device_keys, pushers, sliding_sync, users},
};

/// How long a login token from `/login/get_token` or single sign-on stays
/// valid.
const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(120);

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(login_types)
        .endpoint(login)
        .endpoint(get_login_token)
        .endpoint(logout)
        .endpoint(logout_all)
}

/// Passwords (staff), login tokens, appservices, and single sign-on
/// through the configured identity providers (insured persons,
/// `client_api/sso.rs`).
async fn login_types(server: Homeserver, _: Args<get_login_types::v3::Request>) -> ApiResult<get_login_types::v3::Response> {
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    let mut types = vec![LoginType::Password(PasswordLoginType::new()), LoginType::Token(token), LoginType::ApplicationService(ApplicationServiceLoginType::new())];
    let providers = &server.config.oidc.providers;
    if !providers.is_empty() {
        let mut sso = SsoLoginType::new();
        sso.identity_providers = providers.iter().map(|provider| IdentityProvider::new(provider.id.clone(), provider.name.clone())).collect();
        types.push(LoginType::Sso(sso));
    }
    Ok(get_login_types::v3::Response::new(types))
}

/// Resolves `m.id.user` (full id or localpart) to a local user id.
pub fn local_user_from_identifier(server: &Homeserver, identifier: Option<&UserIdentifier>, user: Option<&str>) -> Option<OwnedUserId> {
    let given = match identifier {
        Some(UserIdentifier::Matrix(id)) => id.user.as_str(),
        Some(_) => return None,
        None => user?,
    };
    let user_id = UserId::parse_with_server_name(given.to_lowercase(), server.server_name()).ok()?;
    (user_id.server_name() == server.server_name()).then_some(user_id)
}

async fn login(server: Homeserver, args: Args<login::v3::Request>) -> ApiResult<login::v3::Response> {
    let appservice = args.session.as_ref().and_then(|session| session.appservice.clone());
    let request = args.body;
    let forbidden = || ApiError::forbidden("Invalid username or password");
    let user_id = match &request.login_info {
        LoginInfo::Password(given) => {
            #[allow(deprecated)]
            let user_id = local_user_from_identifier(&server, given.identifier.as_ref(), given.user.as_deref()).ok_or_else(forbidden)?;
            let stored = users::password_hash(server.db.user_shard(&user_id), &user_id).await?.ok_or_else(forbidden)?;
            if !server.rate_limiter.verify_password(&user_id, password::verify(given.password.clone(), stored)).await? {
                return Err(forbidden());
            }
            user_id
        }
        LoginInfo::Token(given) => {
            let invalid = || ApiError::forbidden("Invalid or expired login token");
            let claimed = tokens::user_of_token(TokenKind::Login, &given.token, server.server_name()).ok_or_else(invalid)?;
            let user_id = users::take_login_token(server.db.user_shard(&claimed), &tokens::hash(&given.token)).await?.ok_or_else(invalid)?;
            if user_id != claimed || !users::is_active(server.db.user_shard(&user_id), &user_id).await? {
                return Err(invalid());
            }
            user_id
        }
        // An appservice logs in a user of its namespace (a device of its
        // own for a ghost, e.g. the bridge's encryption device).
        LoginInfo::ApplicationService(given) => {
            let appservice = appservice.ok_or_else(ApiError::missing_token)?;
            #[allow(deprecated)]
            let user_id = local_user_from_identifier(&server, given.identifier.as_ref(), given.user.as_deref()).ok_or_else(forbidden)?;
            if !appservice.is_user(user_id.as_str()) {
                return Err(ApiError::forbidden("The user is not in the application service's namespace"));
            }
            if !users::is_active(server.db.user_shard(&user_id), &user_id).await? {
                return Err(forbidden());
            }
            user_id
        }
        _ => return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ruma::api::error::ErrorKind::Unknown, "Unsupported login type")),
    };
    let (access_token, device_id) = open_session(&server, &user_id, request.device_id, request.initial_device_display_name.as_deref()).await?;
    tracing::info!(%user_id, %device_id, "login");
    let mut response = login::v3::Response::new(user_id, access_token, device_id);
    #[allow(deprecated)]
    {
        response.home_server = Some(server.server_name().to_owned());
    }
    Ok(response)
}

/// Creates (or reuses) a device and issues a fresh access token for it.
/// A login with an existing device id replaces that device's old tokens.
pub async fn open_session(server: &Homeserver, user_id: &UserId, device_id: Option<OwnedDeviceId>, display_name: Option<&str>) -> ApiResult<(String, OwnedDeviceId)> {
    let device_id = device_id.unwrap_or_else(|| OwnedDeviceId::from(tokens::random_string(10).to_uppercase()));
    let token = tokens::new_token(TokenKind::Access, user_id);
    let mut tx = server.db.user_shard(user_id).begin().await?;
    users::upsert_device(&mut *tx, user_id, &device_id, display_name, None).await?;
    users::delete_device_tokens(&mut *tx, user_id, &device_id).await?;
    users::add_access_token(&mut *tx, &tokens::hash(&token), user_id, &device_id).await?;
    tx.commit().await?;
    Ok((token, device_id))
}

async fn get_login_token(server: Homeserver, args: Args<get_login_token::v1::Request>) -> ApiResult<get_login_token::v1::Response> {
    let session = args.session()?;
    uiaa::require_password(&server, &session.user_id, args.body.auth.as_ref()).await?;
    let token = issue_login_token(&server, &session.user_id).await?;
    Ok(get_login_token::v1::Response::new(LOGIN_TOKEN_LIFETIME, token))
}

/// A login token for `user_id` (for `/login/get_token` and the end of a
/// single sign-on): redeemed once with `m.login.token`, within
/// [`LOGIN_TOKEN_LIFETIME`], on any worker (it is stored on the user's
/// shard).
pub async fn issue_login_token(server: &Homeserver, user_id: &UserId) -> ApiResult<String> {
    let token = tokens::new_token(TokenKind::Login, user_id);
    let expires = storage::now_ms() + i64::try_from(LOGIN_TOKEN_LIFETIME.as_millis()).unwrap_or(i64::MAX);
    users::add_login_token(server.db.user_shard(user_id), &tokens::hash(&token), user_id, expires).await?;
    Ok(token)
}

async fn logout(server: Homeserver, args: Args<logout::v3::Request>) -> ApiResult<logout::v3::Response> {
    let session = args.session()?;
    delete_devices(&server, &session.user_id, std::slice::from_ref(&session.device_id)).await?;
    Ok(logout::v3::Response::new())
}

async fn logout_all(server: Homeserver, args: Args<logout_all::v3::Request>) -> ApiResult<logout_all::v3::Response> {
    let session = args.session()?;
    let devices = users::device_ids(server.db.user_shard(&session.user_id), &session.user_id).await?;
    delete_devices(&server, &session.user_id, &devices).await?;
    Ok(logout_all::v3::Response::new())
}

/// Deletes devices with their tokens, pushers and encryption keys (logout,
/// device deletion, deactivation), and tells everyone who shares a room with the
/// user, so their clients stop encrypting to the devices.
pub async fn delete_devices(server: &Homeserver, user_id: &UserId, devices: &[OwnedDeviceId]) -> ApiResult<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
    let mut tx = server.db.user_shard(user_id).begin().await?;
    users::delete_devices(&mut tx, user_id, devices).await?;
    pushers::delete_for_devices(&mut tx, user_id, devices).await?;
    device_keys::delete_for_devices(&mut tx, user_id, &ids).await?;
    sliding_sync::delete_for_devices(&mut tx, user_id, devices).await?;
    device_keys::mark_device_list_changed(&mut tx, user_id).await?;
    tx.commit().await?;
    e2ee::device_lists::notify_observers(server, user_id).await
}
