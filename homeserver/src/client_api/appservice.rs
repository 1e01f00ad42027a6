//! Endpoints for appservices themselves: `POST /appservice/{id}/ping`
//! (the appservice asks the server to call its `/_matrix/app/v1/ping`, to
//! check both directions), and TI-M's account-kind query the KIM bridge
//! asks before it lets someone add a KIM address to a room.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::request::Parts,
    routing::get,
};
use ruma::{UserId, api::client::appservice::request_ping};

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt, auth::bearer_token},
    server::Homeserver,
    storage,
    tim::accounts::AccountKind,
};

/// `GET`: `{"kind": "staff" | "insured"}` of an active local account.
pub const ACCOUNT_KIND_PATH: &str = "/_tim/appservice/v1/users/{user_id}/kind";

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(ping).route(ACCOUNT_KIND_PATH, get(account_kind))
}

/// Only the appservice itself may ping itself; failures are the spec's
/// `M_URL_NOT_SET`, `M_CONNECTION_FAILED`, `M_CONNECTION_TIMEOUT` and
/// `M_BAD_STATUS`.
async fn ping(server: Homeserver, args: Args<request_ping::v1::Request>) -> ApiResult<request_ping::v1::Response> {
    let session = args.session()?;
    let Some(appservice) = session.appservice.as_ref().filter(|appservice| appservice.id == args.body.appservice_id) else {
        return Err(ApiError::forbidden("Only the application service itself may ping it"));
    };
    let duration = server.appservices.client.ping(appservice, args.body.transaction_id.as_deref().map(|id| id.as_str())).await?;
    Ok(request_ping::v1::Response::new(duration))
}

#[derive(serde::Serialize)]
struct AccountKindResponse {
    kind: AccountKind,
}

/// Whether a user is staff or an insured person, for appservices only (the
/// KIM bridge lets only staff add KIM addresses to a room): 401 without an
/// appservice's `as_token`, 404 for unknown, remote and deactivated users.
async fn account_kind(State(server): State<Homeserver>, Path(user_id): Path<String>, parts: Parts) -> ApiResult<Json<AccountKindResponse>> {
    let token = bearer_token(&parts).ok_or_else(ApiError::missing_token)?;
    if server.appservices.by_token(&token).is_none() {
        return Err(ApiError::unknown_token());
    }
    let user_id = UserId::parse(&user_id).map_err(|_| ApiError::invalid_param(format!("{user_id:?} is not a user id")))?;
    let kind = if user_id.server_name() == server.server_name() {
        storage::users::account_kind(server.db.user_shard(&user_id), &user_id).await?
    } else {
        None
    };
    let kind = kind.ok_or_else(|| ApiError::not_found(format!("No active local account {user_id}")))?;
    Ok(Json(AccountKindResponse { kind }))
}
