//! User-interactive authentication for sensitive account operations
//! (deleting devices, changing the password, deactivating, registering).
//! Sessions are rows in PostgreSQL so a client may continue on any worker.

use ruma::{
    UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::{password, tokens};
use crate::{
    http::{ApiError, ApiResult},
    server::Homeserver,
    storage,
};

/// A 401 that starts (or continues) a session with the given flow.
async fn challenge(
    server: &Homeserver,
    user_id: Option<&UserId>,
    flow: Vec<AuthType>,
    session: Option<String>,
    error: Option<StandardErrorBody>,
) -> ApiError {
    let session = match session {
        Some(session) => session,
        None => {
            let session = tokens::random_string(24);
            let db = match user_id {
                Some(user) => server.db.user_shard(user),
                None => server.db.global(),
            };
            if let Err(err) = storage::uiaa::create(db, &session, user_id).await {
                return err.into();
            }
            session
        }
    };
    let mut info = UiaaInfo::new(vec![AuthFlow::new(flow)]);
    info.session = Some(session);
    info.auth_error = error;
    ApiError::Uiaa(Box::new(info))
}

/// Requires the account password of `user_id` (the `m.login.password`
/// stage). Returns `Ok` once the client proved it.
pub async fn require_password(server: &Homeserver, user_id: &UserId, auth: Option<&AuthData>) -> ApiResult<()> {
    let flow = vec![AuthType::Password];
    let Some(auth) = auth else {
        return Err(challenge(server, Some(user_id), flow, None, None).await);
    };
    let session = auth.session().map(str::to_owned);
    if let Some(session) = &session
        && !storage::uiaa::exists(server.db.user_shard(user_id), session).await?
    {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unknown UIAA session"));
    }
    let AuthData::Password(given) = auth else {
        return Err(challenge(server, Some(user_id), flow, session, None).await);
    };
    let claims_self = match &given.identifier {
        UserIdentifier::Matrix(id) => id.user == user_id.as_str() || id.user == user_id.localpart(),
        _ => false,
    };
    let stored = storage::users::password_hash(server.db.user_shard(user_id), user_id).await?;
    let valid = match stored {
        Some(stored) if claims_self => server.rate_limiter.verify_password(user_id, password::verify(given.password.clone(), stored)).await?,
        _ => false,
    };
    if !valid {
        let error = StandardErrorBody::new(ErrorKind::Forbidden, "Invalid password".to_owned());
        return Err(challenge(server, Some(user_id), flow, session, Some(error)).await);
    }
    if let Some(session) = session {
        storage::uiaa::delete(server.db.user_shard(user_id), &session).await?;
    }
    Ok(())
}

/// The registration stage: `m.login.registration_token` when the server
/// requires tokens, else `m.login.dummy`.
pub async fn require_registration_stage(server: &Homeserver, auth: Option<&AuthData>) -> ApiResult<()> {
    let needs_token = server.config.registration.require_token;
    let flow = vec![if needs_token { AuthType::RegistrationToken } else { AuthType::Dummy }];
    let Some(auth) = auth else {
        return Err(challenge(server, None, flow, None, None).await);
    };
    let session = auth.session().map(str::to_owned);
    match auth {
        AuthData::Dummy(_) if !needs_token => Ok(()),
        AuthData::RegistrationToken(given) if needs_token => {
            if storage::uiaa::use_registration_token(server.db.global(), &given.token).await? {
                Ok(())
            } else {
                let error = StandardErrorBody::new(ErrorKind::Forbidden, "Invalid registration token".to_owned());
                Err(challenge(server, None, flow, session, Some(error)).await)
            }
        }
        _ => Err(challenge(server, None, flow, session, None).await),
    }
}
