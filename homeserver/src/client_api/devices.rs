//! A user's devices: `/devices` (list, show, rename, delete) and
//! `/delete_devices`. Deleting a device logs it out, so it takes the
//! password again (user-interactive auth). Appservices manage their users'
//! devices without it (MSC4190): `PUT /devices/{id}` creates a missing
//! device, deleting needs no password.

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
    api::client::{
        device::{self, delete_device, delete_devices, get_device, get_devices, update_device},
        uiaa::AuthData,
    },
};

use super::session;
use crate::{
    auth::uiaa,
    e2ee,
    http::{ApiError, ApiResult, Args, RouterExt, Session},
    server::Homeserver,
    storage::{device_keys, users},
};

/// Longest device name we store; clients show it in device lists.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(list_devices)
        .endpoint(show_device)
        .endpoint(rename_device)
        .endpoint(delete_device)
        .endpoint(delete_devices)
}

/// A stored device as the API shows it.
fn to_api(stored: users::Device) -> device::Device {
    let mut device = device::Device::new(OwnedDeviceId::from(stored.device_id));
    device.display_name = stored.display_name;
    device.last_seen_ip = stored.last_seen_ip;
    device.last_seen_ts = stored.last_seen_ts.and_then(|ts| UInt::try_from(ts).ok()).map(MilliSecondsSinceUnixEpoch);
    device
}

fn unknown_device() -> ApiError {
    ApiError::not_found("Unknown device")
}

async fn list_devices(server: Homeserver, args: Args<get_devices::v3::Request>) -> ApiResult<get_devices::v3::Response> {
    let user_id = &args.session()?.user_id;
    let devices = users::devices(server.db.user_shard(user_id), user_id).await?;
    Ok(get_devices::v3::Response::new(devices.into_iter().map(to_api).collect()))
}

async fn show_device(server: Homeserver, args: Args<get_device::v3::Request>) -> ApiResult<get_device::v3::Response> {
    let user_id = &args.session()?.user_id;
    let stored = users::device(server.db.user_shard(user_id), user_id, &args.body.device_id).await?.ok_or_else(unknown_device)?;
    Ok(get_device::v3::Response::new(to_api(stored)))
}

/// Renames a device; without a `display_name` the name stays as it is.
/// For an appservice a missing device is created (MSC4190).
async fn rename_device(server: Homeserver, args: Args<update_device::v3::Request>) -> ApiResult<update_device::v3::Response> {
    let session = args.session()?;
    let user_id = &session.user_id;
    let request = &args.body;
    let db = server.db.user_shard(user_id);
    let found = match request.display_name.as_deref() {
        Some(name) if name.chars().count() > MAX_DISPLAY_NAME_CHARS => {
            return Err(ApiError::invalid_param(format!("Device name is longer than {MAX_DISPLAY_NAME_CHARS} characters")));
        }
        name if session.appservice.is_some() && users::device(db, user_id, &request.device_id).await?.is_none() => {
            // A new device is a device-list change like a login's.
            let mut tx = db.begin().await?;
            users::upsert_device(&mut *tx, user_id, &request.device_id, name, None).await?;
            device_keys::mark_device_list_changed(&mut tx, user_id).await?;
            tx.commit().await?;
            e2ee::device_lists::notify_observers(&server, user_id).await?;
            tracing::info!(%user_id, device_id = %request.device_id, "appservice created a device");
            true
        }
        Some(name) => {
            // Other users see device names in `keys/query`: a rename is a
            // device-list change for them.
            let mut tx = db.begin().await?;
            let renamed = users::rename_device(&mut *tx, user_id, &request.device_id, Some(name)).await?;
            if renamed {
                device_keys::mark_device_list_changed(&mut tx, user_id).await?;
            }
            tx.commit().await?;
            if renamed {
                e2ee::device_lists::notify_observers(&server, user_id).await?;
            }
            renamed
        }
        None => users::device(db, user_id, &request.device_id).await?.is_some(),
    };
    if !found {
        return Err(unknown_device());
    }
    Ok(update_device::v3::Response::new())
}

/// Deletes one device. An unknown device is a 404 before any password
/// prompt, like the other methods on this path.
async fn delete_device(server: Homeserver, args: Args<delete_device::v3::Request>) -> ApiResult<delete_device::v3::Response> {
    let session = args.session()?;
    let user_id = &session.user_id;
    let request = &args.body;
    if users::device(server.db.user_shard(user_id), user_id, &request.device_id).await?.is_none() {
        return Err(unknown_device());
    }
    require_password_unless_appservice(&server, session, request.auth.as_ref()).await?;
    session::delete_devices(&server, user_id, std::slice::from_ref(&request.device_id)).await?;
    tracing::info!(%user_id, device_id = %request.device_id, "device deleted");
    Ok(delete_device::v3::Response::new())
}

/// Deletes several devices at once; ids the user does not have are
/// ignored.
async fn delete_devices(server: Homeserver, args: Args<delete_devices::v3::Request>) -> ApiResult<delete_devices::v3::Response> {
    let session = args.session()?;
    let user_id = &session.user_id;
    let request = &args.body;
    require_password_unless_appservice(&server, session, request.auth.as_ref()).await?;
    session::delete_devices(&server, user_id, &request.devices).await?;
    tracing::info!(%user_id, count = request.devices.len(), "devices deleted");
    Ok(delete_devices::v3::Response::new())
}

/// Deleting devices takes the password, except for appservices (MSC4190:
/// their users have none).
async fn require_password_unless_appservice(server: &Homeserver, session: &Session, auth: Option<&AuthData>) -> ApiResult<()> {
    if session.appservice.is_some() {
        return Ok(());
    }
    uiaa::require_password(server, &session.user_id, auth).await
}
