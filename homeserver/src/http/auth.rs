//! Who is calling: access tokens from the `Authorization` header (or the
//! deprecated `access_token` query parameter) resolved to a user and device,
//! and appservices' `as_token`s (see `appservice::auth`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use ruma::{OwnedDeviceId, OwnedUserId};

use super::error::{ApiError, ApiResult};
use crate::{appservice::{self, Appservice}, auth::tokens, server::Homeserver, storage, tim::accounts::AccountKind};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_admin: bool,
    /// Insured person or staff: which TI-M rules apply to the caller.
    pub kind: AccountKind,
    /// The appservice whose `as_token` the request carries (acting as its
    /// sender or a user it masquerades as).
    pub appservice: Option<Arc<Appservice>>,
}

/// A caller authenticated as a server admin, for the operator's admin APIs
/// outside ruma: 401 without a valid token, 403 for everyone else.
pub struct ServerAdmin(pub Session);

impl FromRequestParts<Homeserver> for ServerAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Homeserver) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::missing_token)?;
        let session = authenticate(server, &token, parts.uri.query()).await?;
        if !session.is_admin {
            return Err(ApiError::forbidden("Only server admins may use this API"));
        }
        Ok(Self(session))
    }
}

/// The token the request carries, if any.
pub fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|token| token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
}

/// Resolves a token to its session; unknown, revoked or deactivated → 401.
/// `query` is the request's query string, where appservices name the user
/// and device they act as.
pub async fn authenticate(server: &Homeserver, token: &str, query: Option<&str>) -> ApiResult<Session> {
    if let Some(appservice) = server.appservices.by_token(token) {
        return appservice::auth::session(server, appservice, query).await;
    }
    let Some(user_id) = tokens::user_of_token(tokens::TokenKind::Access, token, server.server_name()) else {
        return Err(ApiError::unknown_token());
    };
    let db = server.db.user_shard(&user_id);
    match storage::users::session_for_token(db, &tokens::hash(token)).await? {
        Some(found) if found.user_id == user_id => Ok(found),
        _ => Err(ApiError::unknown_token()),
    }
}
