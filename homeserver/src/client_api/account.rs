//! Accounts: `/register`, `/account/whoami`, `/account/password`,
//! `/account/deactivate`, username and registration-token checks.

use axum::Router;
use ruma::{
    OwnedUserId, UserId,
    api::{
        client::account::{
            change_password, check_registration_token_validity, deactivate, get_3pids, get_username_availability,
            register::{self, LoginType, RegistrationKind},
            whoami, ThirdPartyIdRemovalStatus,
        },
        error::ErrorKind,
    },
};

use super::session::{delete_devices, open_session};
use crate::{
    appservice::Appservice,
    auth::{password, uiaa},
    http::{ApiError, ApiResult, Args, RouterExt, Session, limits},
    rooms::membership,
    server::Homeserver,
    storage::{self, users},
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(register)
        .endpoint(whoami)
        .endpoint(change_password)
        .endpoint(deactivate)
        .endpoint(username_available)
        .endpoint(registration_token_validity)
        .endpoint(third_party_ids)
}

/// A new local user id from a requested username: lowercase, the spec's
/// localpart characters, at most 255 bytes as a full id.
pub fn new_user_id(server: &Homeserver, username: &str) -> ApiResult<OwnedUserId> {
    let invalid = || ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, "Invalid username");
    let localpart = username.to_lowercase();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c);
    if localpart.is_empty() || !localpart.chars().all(allowed) {
        return Err(invalid());
    }
    let user_id = UserId::parse_with_server_name(localpart, server.server_name()).map_err(|_| invalid())?;
    if user_id.as_str().len() > limits::MAX_ID_BYTES {
        return Err(invalid());
    }
    Ok(user_id)
}

/// Creates a staff account with a password (CLI, admin APIs and
/// `/register`: see `tim::accounts` for why all of them make staff
/// accounts); `M_USER_IN_USE` when taken.
pub async fn create_account(server: &Homeserver, user_id: &UserId, password: &str, is_admin: bool) -> ApiResult<()> {
    let hash = password::hash(password.to_owned()).await?;
    if !users::create(server.db.user_shard(user_id), user_id, Some(&hash), is_admin, None).await? {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken"));
    }
    tracing::info!(%user_id, is_admin, "account created");
    Ok(())
}

async fn register(server: Homeserver, args: Args<register::v3::Request>) -> ApiResult<register::v3::Response> {
    let request = args.body;
    if request.login_type == Some(LoginType::ApplicationService) {
        return register_appservice_user(&server, args.session.as_ref(), request).await;
    }
    if !server.config.registration.enabled {
        // TI-M: insured persons get their accounts only through the
        // insurer's IdP (`m.login.sso`), the rest from the insurer's
        // admins; gematik answers 401 here where the spec says 403.
        return Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden,
            "Registration is closed: insured persons sign in through their insurer's identity provider",
        ));
    }
    if request.kind == RegistrationKind::Guest {
        return Err(ApiError::new(http::StatusCode::FORBIDDEN, ErrorKind::GuestAccessForbidden, "Guest accounts are not offered"));
    }
    let user_id = match &request.username {
        Some(username) => new_user_id(&server, username)?,
        None => new_user_id(&server, &crate::auth::tokens::random_string(12))?,
    };
    server.appservices.ensure_user_unclaimed(user_id.as_str(), None)?;
    if users::exists(server.db.user_shard(&user_id), &user_id).await? {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken"));
    }
    let Some(password) = request.password.as_deref().filter(|p| !p.is_empty()) else {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::MissingParam, "A password is required"));
    };
    uiaa::require_registration_stage(&server, request.auth.as_ref()).await?;
    create_account(&server, &user_id, password, false).await?;

    let mut response = register::v3::Response::new(user_id.clone());
    if !request.inhibit_login {
        let (token, device_id) = open_session(&server, &user_id, request.device_id, request.initial_device_display_name.as_deref()).await?;
        response.access_token = Some(token);
        response.device_id = Some(device_id);
    }
    Ok(response)
}

/// `m.login.application_service`: an appservice creates a user of its
/// namespace (a ghost) with its `as_token`, without user-interactive auth
/// and whether or not registration is open. Ghosts have no password.
async fn register_appservice_user(server: &Homeserver, session: Option<&Session>, request: register::v3::Request) -> ApiResult<register::v3::Response> {
    let appservice: &Appservice = match session {
        None => return Err(ApiError::missing_token()),
        Some(Session { appservice: Some(appservice), .. }) => appservice,
        Some(_) => return Err(ApiError::forbidden("m.login.application_service needs an application service's token")),
    };
    let Some(username) = request.username.as_deref() else {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::MissingParam, "A username is required"));
    };
    let user_id = new_user_id(server, username)?;
    if !appservice.namespaces.is_user(user_id.as_str()) {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::Exclusive, "The user ID is not in the application service's namespace"));
    }
    server.appservices.ensure_user_unclaimed(user_id.as_str(), Some(appservice))?;
    if !users::create(server.db.user_shard(&user_id), &user_id, None, false, None).await? {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken"));
    }
    tracing::info!(%user_id, appservice = %appservice.id, "appservice user registered");
    let mut response = register::v3::Response::new(user_id.clone());
    if !request.inhibit_login {
        let (token, device_id) = open_session(server, &user_id, request.device_id, request.initial_device_display_name.as_deref()).await?;
        response.access_token = Some(token);
        response.device_id = Some(device_id);
    }
    Ok(response)
}

async fn whoami(_: Homeserver, args: Args<whoami::v3::Request>) -> ApiResult<whoami::v3::Response> {
    let session = args.session()?;
    let mut response = whoami::v3::Response::new(session.user_id.clone(), false);
    response.device_id = Some(session.device_id.clone());
    Ok(response)
}

async fn change_password(server: Homeserver, args: Args<change_password::v3::Request>) -> ApiResult<change_password::v3::Response> {
    let session = args.session()?;
    uiaa::require_password(&server, &session.user_id, args.body.auth.as_ref()).await?;
    if args.body.new_password.is_empty() {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::WeakPassword, "Password must not be empty"));
    }
    let hash = password::hash(args.body.new_password.clone()).await?;
    users::set_password_hash(server.db.user_shard(&session.user_id), &session.user_id, &hash).await?;
    if args.body.logout_devices {
        let others: Vec<_> = users::device_ids(server.db.user_shard(&session.user_id), &session.user_id)
            .await?
            .into_iter()
            .filter(|device| *device != session.device_id)
            .collect();
        delete_devices(&server, &session.user_id, &others).await?;
    }
    Ok(change_password::v3::Response::new())
}

async fn deactivate(server: Homeserver, args: Args<deactivate::v3::Request>) -> ApiResult<deactivate::v3::Response> {
    let session = args.session()?;
    uiaa::require_password(&server, &session.user_id, args.body.auth.as_ref()).await?;
    deactivate_account(&server, &session.user_id).await?;
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

/// Leaves every room, logs out every device and marks the account
/// deactivated. The user id stays reserved.
pub async fn deactivate_account(server: &Homeserver, user_id: &UserId) -> ApiResult<()> {
    membership::leave_all_rooms(server, user_id).await?;
    let devices = users::device_ids(server.db.user_shard(user_id), user_id).await?;
    delete_devices(server, user_id, &devices).await?;
    users::deactivate(server.db.user_shard(user_id), user_id).await?;
    tracing::info!(%user_id, "account deactivated");
    Ok(())
}

async fn username_available(server: Homeserver, args: Args<get_username_availability::v3::Request>) -> ApiResult<get_username_availability::v3::Response> {
    if !server.config.registration.enabled {
        return Err(ApiError::forbidden("Registration is disabled"));
    }
    let user_id = new_user_id(&server, &args.body.username)?;
    server.appservices.ensure_user_unclaimed(user_id.as_str(), None)?;
    if users::exists(server.db.user_shard(&user_id), &user_id).await? {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken"));
    }
    Ok(get_username_availability::v3::Response::new(true))
}

async fn registration_token_validity(
    server: Homeserver,
    args: Args<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    if !server.config.registration.enabled {
        return Err(ApiError::forbidden("Registration is disabled"));
    }
    let valid = storage::uiaa::registration_token_valid(server.db.global(), &args.body.token).await?;
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

/// Accounts carry no e-mail addresses or phone numbers (identities come
/// from the insurer's IdP); clients still ask, so the list is empty.
async fn third_party_ids(_: Homeserver, args: Args<get_3pids::v3::Request>) -> ApiResult<get_3pids::v3::Response> {
    args.session()?;
    Ok(get_3pids::v3::Response::new(Vec::new()))
}
