//! Server-side key backups (`/room_keys/version…`, `/room_keys/keys…`):
//! numbered backup versions per user, and the megolm session keys the
//! user's devices store in them, encrypted for a key only those devices
//! hold. The server can neither read nor verify any of it. It keeps the
//! versions apart, takes new keys only into the current version (a device
//! still writing to a backup another device replaced learns so from the
//! 403 and its `current_version`), and keeps the better of two keys for a
//! session.
//!
//! Every write of keys holds the version's row lock for its transaction
//! and checks that the version is current only once it holds it, so
//! devices uploading at once take turns and each answer's `count` and
//! `etag` are the state its own write left.

use std::collections::BTreeMap;

use axum::Router;
use http::StatusCode;
use ruma::{
    OwnedRoomId, RoomId, UInt, UserId,
    api::{
        client::backup::{
            BackupAlgorithm, KeyBackupData, RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
            delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
            get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
        },
        error::{ErrorKind, WrongRoomKeysVersionErrorData},
    },
    serde::{JsonObject, Raw},
};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;
use sqlx::PgConnection;

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt},
    server::Homeserver,
    storage::key_backup::{self, KeyScope, SessionKey, VersionInfo},
};

/// The backup algorithm new versions may use: the only one the spec
/// defines.
const MEGOLM_BACKUP_V1: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

/// Longest session id we store. Megolm session ids are 43 characters; the
/// bound keeps hostile ids from overflowing the primary-key index, whose
/// entries PostgreSQL caps at about 2.7 kB.
const MAX_SESSION_ID_BYTES: usize = 255;

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(create_version)
        .endpoint(latest_version)
        .endpoint(get_version)
        .endpoint(update_version)
        .endpoint(delete_version)
        .endpoint(put_all_keys)
        .endpoint(put_room_keys)
        .endpoint(put_session_key)
        .endpoint(get_all_keys)
        .endpoint(get_room_keys)
        .endpoint(get_session_key)
        .endpoint(delete_all_keys)
        .endpoint(delete_room_keys)
        .endpoint(delete_session_key)
}

// ------------------------------------------------------------------ versions

/// The body of `POST` and `PUT /room_keys/version…`. Read into our own type
/// rather than ruma's `BackupAlgorithm`, which demands `signatures` (the
/// spec leaves them optional) and would re-serialize `auth_data`, which we
/// store exactly as the client signed it.
#[derive(Deserialize)]
struct VersionBody {
    algorithm: String,
    auth_data: JsonObject,
    /// `PUT` only: when present, must repeat the version of the path.
    version: Option<String>,
}

impl VersionBody {
    fn parse(raw: &Raw<BackupAlgorithm>) -> ApiResult<Self> {
        raw.deserialize_as_unchecked().map_err(|err| ApiError::bad_json(format!("Invalid backup version: {err}")))
    }
}

/// Version numbers are handed out as decimal strings; any other string
/// (`"01"`, `"+1"`, `"abc"`) names no version of ours.
fn parse_version(version: &str) -> Option<i64> {
    version.parse::<i64>().ok().filter(|number| *number > 0 && number.to_string() == version)
}

fn unknown_version() -> ApiError {
    ApiError::not_found("Unknown backup version")
}

/// The fields both `GET /room_keys/version…` endpoints answer with:
/// algorithm with auth data, key count, etag, version.
fn describe(info: VersionInfo) -> ApiResult<(Raw<BackupAlgorithm>, UInt, String, String)> {
    let algorithm = serde_json::value::to_raw_value(&serde_json::json!({ "algorithm": info.algorithm, "auth_data": info.auth_data }))?;
    Ok((Raw::from_json(algorithm), to_uint(info.count)?, info.etag.to_string(), info.version.to_string()))
}

/// Creates a version, which becomes the current one: from now on keys go
/// only there.
async fn create_version(server: Homeserver, args: Args<create_backup_version::v3::Request>) -> ApiResult<create_backup_version::v3::Response> {
    let user_id = &args.session()?.user_id;
    let body = VersionBody::parse(&args.body.algorithm)?;
    if body.algorithm != MEGOLM_BACKUP_V1 {
        return Err(ApiError::invalid_param(format!("Unsupported backup algorithm {:?}; supported: {MEGOLM_BACKUP_V1}", body.algorithm)));
    }
    let mut tx = server.db.user_shard(user_id).begin().await?;
    let version = key_backup::create_version(&mut tx, user_id, &body.algorithm, &JsonValue::Object(body.auth_data)).await?;
    tx.commit().await?;
    Ok(create_backup_version::v3::Response::new(version.to_string()))
}

async fn latest_version(server: Homeserver, args: Args<get_latest_backup_info::v3::Request>) -> ApiResult<get_latest_backup_info::v3::Response> {
    let user_id = &args.session()?.user_id;
    let info = key_backup::version_info(server.db.user_shard(user_id), user_id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("No current backup version"))?;
    let (algorithm, count, etag, version) = describe(info)?;
    Ok(get_latest_backup_info::v3::Response::new(algorithm, count, etag, version))
}

async fn get_version(server: Homeserver, args: Args<get_backup_info::v3::Request>) -> ApiResult<get_backup_info::v3::Response> {
    let user_id = &args.session()?.user_id;
    let version = parse_version(&args.body.version).ok_or_else(unknown_version)?;
    let info = key_backup::version_info(server.db.user_shard(user_id), user_id, Some(version)).await?.ok_or_else(unknown_version)?;
    let (algorithm, count, etag, version) = describe(info)?;
    Ok(get_backup_info::v3::Response::new(algorithm, count, etag, version))
}

/// Replaces a version's `auth_data` (clients re-sign it, e.g. once
/// cross-signing is set up). The algorithm stays what it was: the stored
/// keys are encrypted for it.
async fn update_version(server: Homeserver, args: Args<update_backup_version::v3::Request>) -> ApiResult<update_backup_version::v3::Response> {
    let user_id = &args.session()?.user_id;
    let request = &args.body;
    let body = VersionBody::parse(&request.algorithm)?;
    if body.version.as_ref().is_some_and(|version| *version != request.version) {
        return Err(ApiError::invalid_param("The version in the body does not match the version in the path"));
    }
    let version = parse_version(&request.version).ok_or_else(unknown_version)?;
    let mut tx = server.db.user_shard(user_id).begin().await?;
    let stored = key_backup::lock_version(&mut tx, user_id, version).await?.filter(|stored| !stored.deleted).ok_or_else(unknown_version)?;
    if stored.algorithm != body.algorithm {
        return Err(ApiError::invalid_param("A backup version's algorithm cannot change; create a new version instead"));
    }
    key_backup::set_auth_data(&mut tx, user_id, version, &JsonValue::Object(body.auth_data)).await?;
    tx.commit().await?;
    Ok(update_backup_version::v3::Response::new())
}

/// Deletes a version with its keys. Deleting it again succeeds, as the spec
/// asks, so that a retried request does not fail.
async fn delete_version(server: Homeserver, args: Args<delete_backup_version::v3::Request>) -> ApiResult<delete_backup_version::v3::Response> {
    let user_id = &args.session()?.user_id;
    let version = parse_version(&args.body.version).ok_or_else(unknown_version)?;
    let mut tx = server.db.user_shard(user_id).begin().await?;
    match key_backup::lock_version(&mut tx, user_id, version).await? {
        None => return Err(unknown_version()),
        Some(stored) if !stored.deleted => key_backup::delete_version(&mut tx, user_id, version).await?,
        Some(_) => {}
    }
    tx.commit().await?;
    Ok(delete_backup_version::v3::Response::new())
}

// ---------------------------------------------------------------------- keys

/// A key as clients upload and download it. The server reads only the
/// fields that rank two keys of one session; `session_data` is encrypted for
/// the backup key and kept as sent (ruma's `KeyBackupData` would decode and
/// re-encode its base64).
#[derive(Deserialize, Serialize)]
struct WireKey {
    first_message_index: UInt,
    forwarded_count: UInt,
    is_verified: bool,
    session_data: JsonValue,
}

/// An uploaded key, checked, in the form it is stored in.
fn to_stored(room_id: &RoomId, session_id: &str, raw: &Raw<KeyBackupData>) -> ApiResult<SessionKey> {
    if session_id.len() > MAX_SESSION_ID_BYTES {
        return Err(ApiError::invalid_param(format!("Session ids are at most {MAX_SESSION_ID_BYTES} bytes long")));
    }
    let invalid = |reason: String| ApiError::bad_json(format!("Invalid key for session {session_id} in {room_id}: {reason}"));
    let key: WireKey = raw.deserialize_as_unchecked().map_err(|err| invalid(err.to_string()))?;
    if !key.session_data.is_object() {
        return Err(invalid("session_data must be an object".to_owned()));
    }
    Ok(SessionKey {
        room_id: room_id.to_string(),
        session_id: session_id.to_owned(),
        first_message_index: key.first_message_index.into(),
        forwarded_count: key.forwarded_count.into(),
        is_verified: key.is_verified,
        session_data: key.session_data,
    })
}

/// A stored key as clients download it, with its room and session.
fn to_wire(stored: SessionKey) -> ApiResult<(OwnedRoomId, String, Raw<KeyBackupData>)> {
    let room_id = RoomId::parse(&stored.room_id).map_err(|err| ApiError::Internal(anyhow::anyhow!("stored room id {:?}: {err}", stored.room_id)))?;
    let key = WireKey {
        first_message_index: to_uint(stored.first_message_index)?,
        forwarded_count: to_uint(stored.forwarded_count)?,
        is_verified: stored.is_verified,
        session_data: stored.session_data,
    };
    Ok((room_id, stored.session_id, Raw::from_json(serde_json::value::to_raw_value(&key)?)))
}

/// A count or index read back from the database, whose schema keeps it
/// non-negative.
fn to_uint(value: i64) -> ApiResult<UInt> {
    UInt::try_from(value).map_err(|_| ApiError::Internal(anyhow::anyhow!("stored key backup number {value} is out of range")))
}

/// What every write of keys answers: the version's etag and key count as
/// its transaction left them.
struct KeysState {
    etag: String,
    count: UInt,
}

impl KeysState {
    async fn read(conn: &mut PgConnection, user_id: &UserId, version: i64) -> ApiResult<Self> {
        let info = key_backup::version_info(conn, user_id, Some(version)).await?.ok_or_else(unknown_version)?;
        Ok(Self { etag: info.etag.to_string(), count: to_uint(info.count)? })
    }
}

fn wrong_version(current: i64) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(current.to_string())),
        "Keys can only be stored in the current backup version",
    )
}

/// Checks uploaded keys and puts them in the form they are stored in.
fn checked_keys<'k>(uploaded: impl IntoIterator<Item = (&'k RoomId, &'k str, &'k Raw<KeyBackupData>)>) -> ApiResult<Vec<SessionKey>> {
    uploaded.into_iter().map(|(room_id, session_id, key)| to_stored(room_id, session_id, key)).collect()
}

/// Stores checked keys in `version`, which must be the current version:
/// otherwise the whole upload is refused with 403
/// `M_WRONG_ROOM_KEYS_VERSION` naming the current one, or 404 when the user
/// has no backup at all. A key replaces the stored key of its session only
/// if it is better (see [`key_backup::put_keys`]).
async fn store_keys(server: &Homeserver, user_id: &UserId, version: &str, keys: Vec<SessionKey>) -> ApiResult<KeysState> {
    let requested = parse_version(version);
    let mut tx = server.db.user_shard(user_id).begin().await?;
    if let Some(requested) = requested {
        key_backup::lock_version(&mut tx, user_id, requested).await?;
    }
    // Read only now, under the lock: a deletion this upload waited for
    // must count.
    let version = match key_backup::current_version(&mut *tx, user_id).await? {
        Some(current) if requested == Some(current) => current,
        Some(current) => return Err(wrong_version(current)),
        None => return Err(ApiError::not_found("No backup version exists")),
    };
    if key_backup::put_keys(&mut tx, user_id, version, &keys).await? > 0 {
        key_backup::bump_etag(&mut tx, user_id, version).await?;
    }
    let state = KeysState::read(&mut tx, user_id, version).await?;
    tx.commit().await?;
    Ok(state)
}

/// The keys of a live version within `scope`, as clients download them.
async fn read_keys(server: &Homeserver, user_id: &UserId, version: &str, scope: KeyScope<'_>) -> ApiResult<Vec<(OwnedRoomId, String, Raw<KeyBackupData>)>> {
    let db = server.db.user_shard(user_id);
    let version = parse_version(version).ok_or_else(unknown_version)?;
    if !key_backup::is_live(db, user_id, version).await? {
        return Err(unknown_version());
    }
    key_backup::keys(db, user_id, version, scope).await?.into_iter().map(to_wire).collect()
}

/// Deletes the keys of a live version within `scope`. Any live version, not
/// only the current one: clearing out an old backup endangers nothing.
async fn remove_keys(server: &Homeserver, user_id: &UserId, version: &str, scope: KeyScope<'_>) -> ApiResult<KeysState> {
    let version = parse_version(version).ok_or_else(unknown_version)?;
    let mut tx = server.db.user_shard(user_id).begin().await?;
    if key_backup::lock_version(&mut tx, user_id, version).await?.is_none_or(|stored| stored.deleted) {
        return Err(unknown_version());
    }
    if key_backup::delete_keys(&mut tx, user_id, version, scope).await? > 0 {
        key_backup::bump_etag(&mut tx, user_id, version).await?;
    }
    let state = KeysState::read(&mut tx, user_id, version).await?;
    tx.commit().await?;
    Ok(state)
}

async fn put_all_keys(server: Homeserver, args: Args<add_backup_keys::v3::Request>) -> ApiResult<add_backup_keys::v3::Response> {
    let request = &args.body;
    let keys = checked_keys(
        request.rooms.iter().flat_map(|(room_id, backup)| backup.sessions.iter().map(move |(session_id, key)| (&**room_id, session_id.as_str(), key))),
    )?;
    let state = store_keys(&server, &args.session()?.user_id, &request.version, keys).await?;
    Ok(add_backup_keys::v3::Response::new(state.etag, state.count))
}

async fn put_room_keys(server: Homeserver, args: Args<add_backup_keys_for_room::v3::Request>) -> ApiResult<add_backup_keys_for_room::v3::Response> {
    let request = &args.body;
    let keys = checked_keys(request.sessions.iter().map(|(session_id, key)| (&*request.room_id, session_id.as_str(), key)))?;
    let state = store_keys(&server, &args.session()?.user_id, &request.version, keys).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(state.etag, state.count))
}

async fn put_session_key(server: Homeserver, args: Args<add_backup_keys_for_session::v3::Request>) -> ApiResult<add_backup_keys_for_session::v3::Response> {
    let request = &args.body;
    let key = to_stored(&request.room_id, &request.session_id, &request.session_data)?;
    let state = store_keys(&server, &args.session()?.user_id, &request.version, vec![key]).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(state.etag, state.count))
}

/// Every key of the version, by room; `{"rooms": {}}` when there is none.
async fn get_all_keys(server: Homeserver, args: Args<get_backup_keys::v3::Request>) -> ApiResult<get_backup_keys::v3::Response> {
    let keys = read_keys(&server, &args.session()?.user_id, &args.body.version, KeyScope::All).await?;
    let mut rooms = BTreeMap::<OwnedRoomId, RoomKeyBackup>::new();
    for (room_id, session_id, key) in keys {
        rooms.entry(room_id).or_insert_with(|| RoomKeyBackup::new(BTreeMap::new())).sessions.insert(session_id, key);
    }
    Ok(get_backup_keys::v3::Response::new(rooms))
}

/// The room's keys; `{"sessions": {}}` when there is none.
async fn get_room_keys(server: Homeserver, args: Args<get_backup_keys_for_room::v3::Request>) -> ApiResult<get_backup_keys_for_room::v3::Response> {
    let request = &args.body;
    let keys = read_keys(&server, &args.session()?.user_id, &request.version, KeyScope::Room(&request.room_id)).await?;
    let sessions = keys.into_iter().map(|(_, session_id, key)| (session_id, key)).collect();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

async fn get_session_key(server: Homeserver, args: Args<get_backup_keys_for_session::v3::Request>) -> ApiResult<get_backup_keys_for_session::v3::Response> {
    let request = &args.body;
    let scope = KeyScope::Session(&request.room_id, &request.session_id);
    let keys = read_keys(&server, &args.session()?.user_id, &request.version, scope).await?;
    let (_, _, key) = keys.into_iter().next().ok_or_else(|| ApiError::not_found("No key for this session in the backup"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(key))
}

async fn delete_all_keys(server: Homeserver, args: Args<delete_backup_keys::v3::Request>) -> ApiResult<delete_backup_keys::v3::Response> {
    let state = remove_keys(&server, &args.session()?.user_id, &args.body.version, KeyScope::All).await?;
    Ok(delete_backup_keys::v3::Response::new(state.etag, state.count))
}

async fn delete_room_keys(server: Homeserver, args: Args<delete_backup_keys_for_room::v3::Request>) -> ApiResult<delete_backup_keys_for_room::v3::Response> {
    let request = &args.body;
    let state = remove_keys(&server, &args.session()?.user_id, &request.version, KeyScope::Room(&request.room_id)).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(state.etag, state.count))
}

async fn delete_session_key(server: Homeserver, args: Args<delete_backup_keys_for_session::v3::Request>) -> ApiResult<delete_backup_keys_for_session::v3::Response> {
    let request = &args.body;
    let scope = KeyScope::Session(&request.room_id, &request.session_id);
    let state = remove_keys(&server, &args.session()?.user_id, &request.version, scope).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(state.etag, state.count))
}
