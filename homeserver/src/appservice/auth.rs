//! Requests carrying an appservice's `as_token`: they act as the
//! appservice's sender, or with `?user_id=` as any registered user of its
//! user namespaces (identity assertion), and with `?device_id=` (MSC3202,
//! also `org.matrix.msc3202.device_id`) as one of that user's devices.

use std::sync::Arc;

use ruma::{OwnedDeviceId, OwnedUserId};

use super::Appservice;
use crate::{
    http::{ApiError, ApiResult, Session},
    server::Homeserver,
    storage::users,
};

/// The device of a request that names none: one per appservice, so
/// transaction ids of its users' sends stay idempotent without a real
/// device behind them.
fn implicit_device(appservice: &Appservice) -> OwnedDeviceId {
    OwnedDeviceId::from(format!("appservice:{}", appservice.id))
}

/// The session of an `as_token` request with the query `query`.
pub async fn session(server: &Homeserver, appservice: &Arc<Appservice>, query: Option<&str>) -> ApiResult<Session> {
    let mut asserted_user = None;
    let mut asserted_device = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "user_id" => asserted_user = Some(value.into_owned()),
            "device_id" | "org.matrix.msc3202.device_id" => asserted_device = Some(value.into_owned()),
            _ => {}
        }
    }
    let user_id = match asserted_user {
        None => appservice.sender.clone(),
        Some(raw) => OwnedUserId::try_from(raw).map_err(|_| ApiError::invalid_param("user_id is not a valid user ID"))?,
    };
    if user_id.server_name() != server.server_name() || !appservice.is_user(user_id.as_str()) {
        return Err(ApiError::forbidden("The application service may not masquerade as this user"));
    }
    let db = server.db.user_shard(&user_id);
    let Some((is_admin, kind)) = users::active_account(db, &user_id).await? else {
        return Err(ApiError::forbidden("The application service has not registered this user"));
    };
    let device_id = match asserted_device {
        None => implicit_device(appservice),
        Some(_) if !appservice.msc3202 => return Err(ApiError::forbidden("Device masquerading (MSC3202) is not enabled for this application service")),
        Some(raw) => {
            let device_id = OwnedDeviceId::from(raw);
            if users::device(db, &user_id, &device_id).await?.is_none() {
                return Err(ApiError::forbidden("The user has no such device"));
            }
            device_id
        }
    };
    Ok(Session { user_id, device_id, is_admin, kind, appservice: Some(appservice.clone()) })
}
