//! The homeserver's questions about users and aliases in our namespaces,
//! and the ping.

use axum::{
    Json,
    extract::{Path, State},
};
use http::{HeaderMap, Uri};
use ruma::UserId;
use serde_json::{Value as JsonValue, json};

use super::{
    auth::check_hs_token,
    error::{ApiError, ApiResult},
};
use crate::{bridge::Bridge, portal::ghosts};

/// `GET /_matrix/app/v1/users/{userId}`: a ghost of a valid KIM address is
/// registered on the spot (so staff can invite a practice the bridge has
/// never seen); anything else in our namespace does not exist.
pub async fn query_user(
    State(bridge): State<Bridge>,
    Path(user_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<JsonValue>> {
    check_hs_token(&bridge.config.appservice.hs_token, &headers, &uri)?;
    let user_id = UserId::parse(&user_id).map_err(|_| ApiError::not_found("Not a user id"))?;
    let Some(address) = bridge.address_of_ghost(&user_id) else {
        return Err(ApiError::not_found("Not the ghost of a KIM address"));
    };
    ghosts::ensure_registered(&bridge, &address)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/app/v1/rooms/{alias}`: no alias of our namespace names a
/// room. Portals come into being only when a staff member invites a ghost
/// into a room, so resolving `#kim_…` must not create one for anybody.
pub async fn query_alias(
    State(bridge): State<Bridge>,
    Path(_alias): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<JsonValue>> {
    check_hs_token(&bridge.config.appservice.hs_token, &headers, &uri)?;
    Err(ApiError::not_found(
        "KIM portals are opened by inviting a practice's ghost",
    ))
}

/// `POST /_matrix/app/v1/ping`: the homeserver checks that we are there
/// (after our `POST /_matrix/client/v1/appservice/{id}/ping`).
pub async fn ping(
    State(bridge): State<Bridge>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<JsonValue>> {
    check_hs_token(&bridge.config.appservice.hs_token, &headers, &uri)?;
    Ok(Json(json!({})))
}
