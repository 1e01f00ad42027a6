//! Pushers: `GET /pushers` and `POST /pushers/set`. A pusher tells the
//! server where to send a user's notifications: an http pusher names a push
//! gateway (`data.url`), which wakes the app on the device through APNs or
//! FCM. `(app_id, pushkey)` is unique per user; `kind: null` deletes.
//! Pushers belong to the device that set them and go when it logs out.

use axum::Router;
use ruma::{
    UserId,
    api::client::push::{
        Pusher, PusherIds, PusherInit, PusherKind, get_pushers,
        set_pusher::{
            self,
            v3::{PusherAction, PusherPostData},
        },
    },
};
use serde_json::json;

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt, Session},
    push::gateway_base_url,
    server::Homeserver,
    storage::{
        self,
        pushers::{self, KIND_HTTP, PusherRow},
    },
};

/// The spec's limits on the ids of a pusher.
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;
const KIND_EMAIL: &str = "email";

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(list_pushers).endpoint(set_pusher)
}

async fn list_pushers(server: Homeserver, args: Args<get_pushers::v3::Request>) -> ApiResult<get_pushers::v3::Response> {
    let user_id = &args.session()?.user_id;
    let rows = pushers::list(server.db.user_shard(user_id), user_id).await?;
    let pushers = rows.into_iter().map(to_api).collect::<serde_json::Result<_>>()?;
    Ok(get_pushers::v3::Response::new(pushers))
}

/// A stored pusher as the API shows it (its data as the client set it).
fn to_api(row: PusherRow) -> serde_json::Result<Pusher> {
    let kind: PusherKind = serde_json::from_value(json!({ "kind": row.kind, "data": row.data }))?;
    Ok(PusherInit {
        ids: PusherIds::new(row.pushkey, row.app_id),
        kind,
        app_display_name: row.app_display_name,
        device_display_name: row.device_display_name,
        profile_tag: row.profile_tag,
        lang: row.lang,
    }
    .into())
}

/// Creates, replaces or (with `kind: null`) deletes one of the caller's
/// pushers. Deleting a pusher that does not exist succeeds: the caller's
/// wish, no pusher, holds.
async fn set_pusher(server: Homeserver, args: Args<set_pusher::v3::Request>) -> ApiResult<set_pusher::v3::Response> {
    let session = args.session()?;
    match &args.body.action {
        PusherAction::Post(post) => add_pusher(&server, session, post).await?,
        PusherAction::Delete(ids) => {
            let user_id = &session.user_id;
            pushers::delete(server.db.user_shard(user_id), user_id, &ids.app_id, &ids.pushkey).await?;
        }
        _ => return Err(ApiError::invalid_param("Unsupported pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}

async fn add_pusher(server: &Homeserver, session: &Session, post: &PusherPostData) -> ApiResult<()> {
    let pusher = &post.pusher;
    let PusherIds { app_id, pushkey, .. } = &pusher.ids;
    validate_ids(app_id, pushkey)?;
    let (kind, data) = match &pusher.kind {
        PusherKind::Http(data) => {
            if gateway_base_url(&data.url, &server.config.push.allowed_gateways).is_none() {
                return Err(ApiError::invalid_param("data.url must be the URL of an allowed push gateway ending in /_matrix/push/v1/notify"));
            }
            (KIND_HTTP, serde_json::to_value(data)?)
        }
        // Stored for the client; this server sends no mail.
        PusherKind::Email(data) => (KIND_EMAIL, serde_json::to_value(data)?),
        _ => return Err(ApiError::invalid_param("Unsupported pusher kind: use http, email or null")),
    };
    let row = PusherRow {
        app_id: app_id.clone(),
        pushkey: pushkey.clone(),
        kind: kind.to_owned(),
        app_display_name: pusher.app_display_name.clone(),
        device_display_name: pusher.device_display_name.clone(),
        profile_tag: pusher.profile_tag.clone(),
        lang: pusher.lang.clone(),
        data,
        pushkey_ts: storage::now_ms(),
    };
    let user_id: &UserId = &session.user_id;
    pushers::upsert(server.db.user_shard(user_id), user_id, &session.device_id, &row).await?;
    if !post.append {
        // A pushkey names one app on one device: whoever set it last gets
        // its notifications, no one else.
        for shard in server.db.shards() {
            pushers::delete_for_other_users(&shard.pool, user_id, app_id, pushkey).await?;
        }
    }
    Ok(())
}

fn validate_ids(app_id: &str, pushkey: &str) -> ApiResult<()> {
    if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(ApiError::invalid_param(format!("app_id must have 1 to {MAX_APP_ID_CHARS} characters")));
    }
    if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(ApiError::invalid_param(format!("pushkey must have 1 to {MAX_PUSHKEY_BYTES} bytes")));
    }
    Ok(())
}
