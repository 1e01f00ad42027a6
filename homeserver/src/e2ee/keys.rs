//! Device keys, one-time and fallback keys, cross-signing keys and
//! signatures: what clients upload and what they download about others.
//! The server stores what clients signed and checks what it can (ids match
//! the uploader, signatures on uploaded signatures verify); it never holds
//! private keys.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonObject, DeviceId, OwnedUserId, SigningKeyAlgorithm, UserId,
    signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::{Map, Value as JsonValue};

use super::device_lists;
use crate::{
    http::{ApiError, ApiResult, Session},
    server::Homeserver,
    storage::device_keys as store,
};

/// The three cross-signing key kinds, as stored.
pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

/// What `keys/upload` carries, as JSON.
pub struct KeyUpload {
    pub device_keys: Option<JsonValue>,
    /// `(algorithm:key_id, key)`
    pub one_time_keys: Vec<(String, JsonValue)>,
    pub fallback_keys: Vec<(String, JsonValue)>,
}

/// Stores the upload; returns the unclaimed one-time key counts.
pub async fn upload(server: &Homeserver, session: &Session, upload: KeyUpload) -> ApiResult<BTreeMap<String, i64>> {
    let (user_id, device_id) = (&session.user_id, &session.device_id);
    let mut tx = server.db.user_shard(user_id).begin().await?;
    let mut devices_changed = false;
    if let Some(keys) = &upload.device_keys {
        check_owner(keys, user_id, Some(device_id))?;
        let current = store::device_keys(&mut *tx, user_id, device_id).await?;
        if current.as_ref() != Some(keys) {
            store::set_device_keys(&mut *tx, user_id, device_id, keys).await?;
            devices_changed = true;
        }
    }
    let one_time: Vec<(String, String, JsonValue)> = upload.one_time_keys.into_iter().map(split_key_id).collect::<ApiResult<_>>()?;
    if let Some(conflict) = store::add_one_time_keys(&mut tx, user_id, device_id, &one_time).await? {
        return Err(ApiError::invalid_param(format!("One-time key {conflict} already exists with different content")));
    }
    for (algorithm, key_id, key) in upload.fallback_keys.into_iter().map(split_key_id).collect::<ApiResult<Vec<_>>>()? {
        store::set_fallback_key(&mut *tx, user_id, device_id, &algorithm, &key_id, &key).await?;
    }
    if devices_changed {
        store::mark_device_list_changed(&mut tx, user_id).await?;
    }
    let counts = store::one_time_key_counts(&mut *tx, user_id, device_id).await?;
    tx.commit().await?;
    if devices_changed {
        device_lists::notify_observers(server, user_id).await?;
    }
    Ok(counts.into_iter().collect())
}

/// `signed_curve25519:AAAAHg` → (`signed_curve25519`, `AAAAHg`, key).
fn split_key_id((id, key): (String, JsonValue)) -> ApiResult<(String, String, JsonValue)> {
    let (algorithm, key_id) = id.split_once(':').ok_or_else(|| ApiError::bad_json(format!("Key id {id} has no algorithm")))?;
    Ok((algorithm.to_owned(), key_id.to_owned(), key))
}

/// Uploaded keys must name the uploader (and for device keys, the device).
fn check_owner(keys: &JsonValue, user_id: &UserId, device_id: Option<&DeviceId>) -> ApiResult<()> {
    if keys.get("user_id").and_then(JsonValue::as_str) != Some(user_id.as_str()) {
        return Err(ApiError::invalid_param("Keys must belong to the uploading user"));
    }
    if let Some(device_id) = device_id
        && keys.get("device_id").and_then(JsonValue::as_str) != Some(device_id.as_str())
    {
        return Err(ApiError::invalid_param("Device keys must belong to the uploading device"));
    }
    Ok(())
}

/// Keys of the requested users' devices and their cross-signing keys, as
/// `keys/query` returns them.
#[derive(Default)]
pub struct QueryResult {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<String, JsonValue>>,
    pub master_keys: BTreeMap<OwnedUserId, JsonValue>,
    pub self_signing_keys: BTreeMap<OwnedUserId, JsonValue>,
    pub user_signing_keys: BTreeMap<OwnedUserId, JsonValue>,
}

pub async fn query(server: &Homeserver, requester: &UserId, wanted: &BTreeMap<OwnedUserId, Vec<String>>) -> ApiResult<QueryResult> {
    let mut result = QueryResult::default();
    for (user_id, devices) in wanted {
        if user_id.server_name() != server.server_name() {
            continue;
        }
        let db = server.db.user_shard(user_id);
        let only = (!devices.is_empty()).then_some(devices.as_slice());
        let mut user_devices = BTreeMap::new();
        for (device_id, mut keys, display_name) in store::devices_with_keys(db, user_id, only).await? {
            if let (Some(name), Some(object)) = (display_name, keys.as_object_mut()) {
                let unsigned = object.entry("unsigned").or_insert_with(|| JsonValue::Object(Map::new()));
                if let Some(unsigned) = unsigned.as_object_mut() {
                    unsigned.insert("device_display_name".into(), name.into());
                }
            }
            user_devices.insert(device_id, keys);
        }
        result.device_keys.insert(user_id.clone(), user_devices);

        let own_signatures = if user_id == requester { Vec::new() } else { store::user_signatures(server.db.user_shard(requester), requester, user_id).await? };
        for (key_type, mut key) in store::cross_signing_keys(db, user_id).await? {
            match key_type.as_str() {
                MASTER => {
                    for (_, signatures) in &own_signatures {
                        merge_signatures(&mut key, signatures);
                    }
                    result.master_keys.insert(user_id.clone(), key);
                }
                SELF_SIGNING => {
                    result.self_signing_keys.insert(user_id.clone(), key);
                }
                USER_SIGNING if user_id == requester => {
                    result.user_signing_keys.insert(user_id.clone(), key);
                }
                _ => {}
            }
        }
    }
    Ok(result)
}

/// Adds `{"@user": {"ed25519:KEY": "sig"}}` signatures into a key object.
fn merge_signatures(key: &mut JsonValue, signatures: &JsonValue) {
    let (Some(object), Some(new)) = (key.as_object_mut(), signatures.as_object()) else { return };
    let existing = object.entry("signatures").or_insert_with(|| JsonValue::Object(Map::new()));
    let Some(existing) = existing.as_object_mut() else { return };
    for (signer, sigs) in new {
        let entry = existing.entry(signer.clone()).or_insert_with(|| JsonValue::Object(Map::new()));
        if let (Some(entry), Some(sigs)) = (entry.as_object_mut(), sigs.as_object()) {
            entry.extend(sigs.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

/// Claims one key per requested device: a one-time key while any is left,
/// then the fallback key. Returns `user → device → {algorithm:key_id: key}`.
pub async fn claim(server: &Homeserver, wanted: &BTreeMap<OwnedUserId, BTreeMap<String, String>>) -> ApiResult<BTreeMap<OwnedUserId, BTreeMap<String, BTreeMap<String, JsonValue>>>> {
    let mut claimed: BTreeMap<OwnedUserId, BTreeMap<String, BTreeMap<String, JsonValue>>> = BTreeMap::new();
    for (user_id, devices) in wanted {
        if user_id.server_name() != server.server_name() {
            continue;
        }
        let db = server.db.user_shard(user_id);
        for (device_id, algorithm) in devices {
            let device: &DeviceId = device_id.as_str().into();
            let key = match store::claim_one_time_key(db, user_id, device, algorithm).await? {
                Some(key) => Some(key),
                None => store::claim_fallback_key(db, user_id, device, algorithm).await?,
            };
            if let Some((key_id, key)) = key {
                claimed.entry(user_id.clone()).or_default().entry(device_id.clone()).or_default().insert(format!("{algorithm}:{key_id}"), key);
            }
        }
    }
    Ok(claimed)
}

/// Stores new cross-signing keys. Returns whether anything was replaced
/// (which needs user-interactive auth; a first upload does not, per
/// MSC3967, and neither does re-uploading the same keys).
pub async fn needs_auth_for_signing_keys(server: &Homeserver, user_id: &UserId, new: &[(&str, &JsonValue)]) -> ApiResult<bool> {
    let current: BTreeMap<String, JsonValue> = store::cross_signing_keys(server.db.user_shard(user_id), user_id).await?.into_iter().collect();
    if !current.contains_key(MASTER) {
        return Ok(false);
    }
    Ok(new.iter().any(|(kind, key)| current.get(*kind).is_none_or(|stored| !same_key(stored, key))))
}

/// Two key objects with the same public keys (signatures may differ).
fn same_key(a: &JsonValue, b: &JsonValue) -> bool {
    a.get("keys") == b.get("keys") && a.get("usage") == b.get("usage")
}

pub async fn upload_signing_keys(server: &Homeserver, user_id: &UserId, keys: &[(&str, &JsonValue)]) -> ApiResult<()> {
    for (_, key) in keys {
        check_owner(key, user_id, None)?;
        single_public_key(key)?;
    }
    let mut tx = server.db.user_shard(user_id).begin().await?;
    for (kind, key) in keys {
        store::set_cross_signing_key(&mut *tx, user_id, kind, key).await?;
    }
    store::mark_device_list_changed(&mut tx, user_id).await?;
    tx.commit().await?;
    device_lists::notify_observers(server, user_id).await
}

/// The one `ed25519:<key>` public key of a cross-signing key.
fn single_public_key(key: &JsonValue) -> ApiResult<(String, Vec<u8>)> {
    let keys = key.get("keys").and_then(JsonValue::as_object).ok_or_else(|| ApiError::bad_json("Cross-signing key without keys"))?;
    let [(id, public)] = keys.iter().collect::<Vec<_>>()[..] else {
        return Err(ApiError::invalid_param("A cross-signing key has exactly one public key"));
    };
    let bytes = public.as_str().and_then(decode_base64).ok_or_else(|| ApiError::invalid_param("Invalid public key"))?;
    Ok((id.clone(), bytes))
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// Why one signature upload was refused.
pub struct SignatureFailure {
    pub user_id: OwnedUserId,
    pub key_id: String,
    pub message: String,
}

/// Applies uploaded signatures: on one's own devices (by the self-signing
/// key), on one's own master key (by a device), and on other users' master
/// keys (by the user-signing key, visible only to the signer). Each
/// signature is verified against the signing key before it is stored.
pub async fn upload_signatures(server: &Homeserver, signer: &UserId, signed: BTreeMap<OwnedUserId, BTreeMap<String, JsonValue>>) -> ApiResult<Vec<SignatureFailure>> {
    let mut failures = Vec::new();
    let own_keys: BTreeMap<String, JsonValue> = store::cross_signing_keys(server.db.user_shard(signer), signer).await?.into_iter().collect();
    for (target, objects) in signed {
        let mut changed = false;
        let mut tx = server.db.user_shard(&target).begin().await?;
        for (key_id, object) in objects {
            let fail = |message: &str| SignatureFailure { user_id: target.clone(), key_id: key_id.clone(), message: message.to_owned() };
            let Some(new_signatures) = object.get("signatures").and_then(|s| s.get(signer.as_str())).cloned() else {
                failures.push(fail("No signature by the uploader"));
                continue;
            };
            let outcome = if target == signer {
                sign_own_key(&mut tx, signer, &own_keys, &key_id, &object, &new_signatures).await?
            } else {
                sign_other_master_key(server, signer, &own_keys, &target, &key_id, &object, &new_signatures).await?
            };
            match outcome {
                Ok(()) => changed = true,
                Err(message) => failures.push(fail(&message)),
            }
        }
        if changed {
            store::mark_device_list_changed(&mut tx, &target).await?;
        }
        tx.commit().await?;
        if changed {
            device_lists::notify_observers(server, &target).await?;
        }
    }
    Ok(failures)
}

/// A signature on the signer's own device (by their self-signing key) or
/// own master key (by one of their devices).
async fn sign_own_key(tx: &mut sqlx::PgConnection, signer: &UserId, own_keys: &BTreeMap<String, JsonValue>, key_id: &str, object: &JsonValue, signatures: &JsonValue) -> ApiResult<Result<(), String>> {
    let master_id = own_keys.get(MASTER).and_then(|k| single_public_key(k).ok()).map(|(id, _)| id);
    if master_id.as_deref().and_then(|id| id.strip_prefix("ed25519:")) == Some(key_id) {
        let mut master = own_keys[MASTER].clone();
        let devices = store::devices_with_keys(&mut *tx, signer, None).await?;
        let verified = devices.iter().any(|(device_id, keys, _)| {
            let public = keys.pointer(&format!("/keys/ed25519:{device_id}")).and_then(JsonValue::as_str).and_then(decode_base64);
            public.is_some_and(|public| verify(object, signer, &format!("ed25519:{device_id}"), &public))
        });
        if !verified {
            return Ok(Err("Signature does not verify with any of the user's devices".into()));
        }
        merge_signatures(&mut master, &serde_json::json!({ signer.as_str(): signatures }));
        store::set_cross_signing_key(&mut *tx, signer, MASTER, &master).await?;
        return Ok(Ok(()));
    }
    let device: &DeviceId = key_id.into();
    let Some(mut device_keys) = store::device_keys(&mut *tx, signer, device).await? else {
        return Ok(Err("Unknown key".into()));
    };
    let Some(self_signing) = own_keys.get(SELF_SIGNING).and_then(|k| single_public_key(k).ok()) else {
        return Ok(Err("No self-signing key".into()));
    };
    if !verify(object, signer, &self_signing.0, &self_signing.1) {
        return Ok(Err("Invalid signature".into()));
    }
    merge_signatures(&mut device_keys, &serde_json::json!({ signer.as_str(): signatures }));
    store::set_device_keys(&mut *tx, signer, device, &device_keys).await?;
    Ok(Ok(()))
}

/// A signature on another user's master key by the signer's user-signing key.
async fn sign_other_master_key(server: &Homeserver, signer: &UserId, own_keys: &BTreeMap<String, JsonValue>, target: &UserId, key_id: &str, object: &JsonValue, signatures: &JsonValue) -> ApiResult<Result<(), String>> {
    let Some(user_signing) = own_keys.get(USER_SIGNING).and_then(|k| single_public_key(k).ok()) else {
        return Ok(Err("No user-signing key".into()));
    };
    let target_master = store::cross_signing_keys(server.db.user_shard(target), target).await?.into_iter().find(|(kind, _)| kind == MASTER);
    let Some((_, master)) = target_master else { return Ok(Err("Unknown key".into())) };
    if single_public_key(&master).ok().map(|(id, _)| id) != Some(format!("ed25519:{key_id}")) {
        return Ok(Err("Only master keys of other users can be signed".into()));
    }
    if !verify(object, signer, &user_signing.0, &user_signing.1) {
        return Ok(Err("Invalid signature".into()));
    }
    store::add_user_signatures(server.db.user_shard(signer), signer, target, key_id, &serde_json::json!({ signer.as_str(): signatures })).await?;
    Ok(Ok(()))
}

/// Whether `object` carries a valid ed25519 signature by `signer`'s key
/// `key_id` (`ed25519:…`).
fn verify(object: &JsonValue, signer: &UserId, key_id: &str, public_key: &[u8]) -> bool {
    let Some(signature) = object.pointer(&format!("/signatures/{}/{}", escape_pointer(signer.as_str()), escape_pointer(key_id))).and_then(JsonValue::as_str).and_then(decode_base64) else {
        return false;
    };
    let Ok(canonical) = serde_json::from_value::<CanonicalJsonObject>(object.clone()) else { return false };
    let Ok(message) = to_canonical_json_string_for_signing(&canonical) else { return false };
    verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, public_key, &signature, message.as_bytes()).is_ok()
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
