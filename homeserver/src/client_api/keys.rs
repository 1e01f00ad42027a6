//! E2EE key endpoints: `keys/upload`, `keys/query`, `keys/claim`,
//! `keys/changes`, `keys/device_signing/upload`, `keys/signatures/upload`,
//! and `sendToDevice`. The logic lives in `e2ee/`; these handlers convert
//! between ruma's types and it.

use std::collections::BTreeMap;

use axum::Router;
use ruma::{
    OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt,
    api::client::{
        keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
        to_device::send_event_to_device,
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::{
    auth::uiaa,
    e2ee::{self, keys::KeyUpload},
    http::{ApiError, ApiResult, Args, RouterExt, limits, raw_json},
    server::Homeserver,
    sync::token::{StreamRange, SyncToken},
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(upload)
        .endpoint(query)
        .endpoint(claim)
        .endpoint(changes)
        .endpoint(upload_signing)
        .endpoint(upload_signature)
        .endpoint(send_to_device)
}

/// A ruma `Raw` as a JSON value (client-signed objects are kept verbatim).
fn json_of<T>(raw: &Raw<T>) -> ApiResult<JsonValue> {
    serde_json::from_str(raw.json().get()).map_err(|err| ApiError::bad_json(err.to_string()))
}

fn uint_counts(counts: BTreeMap<String, i64>) -> BTreeMap<ruma::OneTimeKeyAlgorithm, UInt> {
    counts.into_iter().map(|(algorithm, count)| (algorithm.into(), UInt::try_from(count).unwrap_or_default())).collect()
}

async fn upload(server: Homeserver, args: Args<upload_keys::v3::Request>) -> ApiResult<upload_keys::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    limits::check_count(request.one_time_keys.len() + request.fallback_keys.len(), server.config.limits.max_uploaded_one_time_keys, "one-time and fallback keys")?;
    let keys = |map: &BTreeMap<OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>| -> ApiResult<Vec<(String, JsonValue)>> {
        map.iter().map(|(id, key)| Ok((id.to_string(), json_of(key)?))).collect()
    };
    let upload = KeyUpload {
        device_keys: request.device_keys.as_ref().map(json_of).transpose()?,
        one_time_keys: keys(&request.one_time_keys)?,
        fallback_keys: keys(&request.fallback_keys)?,
    };
    let counts = e2ee::keys::upload(&server, session, upload).await?;
    Ok(upload_keys::v3::Response::new(uint_counts(counts)))
}

async fn query(server: Homeserver, args: Args<get_keys::v3::Request>) -> ApiResult<get_keys::v3::Response> {
    let session = args.session()?;
    limits::check_count(args.body.device_keys.len(), server.config.limits.max_keys_query_users, "users")?;
    let wanted: BTreeMap<OwnedUserId, Vec<String>> =
        args.body.device_keys.iter().map(|(user, devices)| (user.clone(), devices.iter().map(ToString::to_string).collect())).collect();
    let result = e2ee::keys::query(&server, &session.user_id, &wanted).await?;
    let mut response = get_keys::v3::Response::new();
    for (user, devices) in result.device_keys {
        let devices = devices.iter().map(|(id, keys)| Ok((OwnedDeviceId::from(id.as_str()), raw_json(keys)))).collect::<ApiResult<_>>()?;
        response.device_keys.insert(user, devices);
    }
    for (target, source) in [
        (&mut response.master_keys, result.master_keys),
        (&mut response.self_signing_keys, result.self_signing_keys),
        (&mut response.user_signing_keys, result.user_signing_keys),
    ] {
        for (user, key) in source {
            target.insert(user, raw_json(&key));
        }
    }
    Ok(response)
}

async fn claim(server: Homeserver, args: Args<claim_keys::v3::Request>) -> ApiResult<claim_keys::v3::Response> {
    args.session()?;
    let devices = args.body.one_time_keys.values().map(BTreeMap::len).sum();
    limits::check_count(devices, server.config.limits.max_keys_claim_devices, "devices")?;
    let wanted: BTreeMap<OwnedUserId, BTreeMap<String, String>> = args
        .body
        .one_time_keys
        .iter()
        .map(|(user, devices)| (user.clone(), devices.iter().map(|(device, algorithm)| (device.to_string(), algorithm.to_string())).collect()))
        .collect();
    let claimed = e2ee::keys::claim(&server, &wanted).await?;
    let mut one_time_keys = BTreeMap::new();
    for (user, devices) in claimed {
        let mut user_keys: claim_keys::v3::OneTimeKeys = BTreeMap::new();
        for (device, keys) in devices {
            let keys = keys
                .iter()
                .map(|(id, key)| Ok((OwnedOneTimeKeyId::try_from(id.as_str()).map_err(|err| ApiError::Internal(err.into()))?, raw_json(key))))
                .collect::<ApiResult<_>>()?;
            user_keys.insert(device.into(), keys);
        }
        one_time_keys.insert(user, user_keys);
    }
    Ok(claim_keys::v3::Response::new(one_time_keys))
}

async fn changes(server: Homeserver, args: Args<get_key_changes::v3::Request>) -> ApiResult<get_key_changes::v3::Response> {
    let session = args.session()?;
    let from = args.body.from.parse::<SyncToken>()?;
    let to = args.body.to.parse::<SyncToken>()?;
    from.follow_map(&server.db).await?;
    to.follow_map(&server.db).await?;
    let (changed, left) = e2ee::device_lists::changes(&server, &session.user_id, StreamRange { since: Some(&from), upto: &to }).await?;
    Ok(get_key_changes::v3::Response::new(changed, left))
}

async fn upload_signing(server: Homeserver, args: Args<upload_signing_keys::v3::Request>) -> ApiResult<upload_signing_keys::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let mut keys = Vec::new();
    for (kind, key) in [
        (e2ee::keys::MASTER, &request.master_key),
        (e2ee::keys::SELF_SIGNING, &request.self_signing_key),
        (e2ee::keys::USER_SIGNING, &request.user_signing_key),
    ] {
        if let Some(key) = key {
            keys.push((kind, json_of(key)?));
        }
    }
    let keys: Vec<(&str, &JsonValue)> = keys.iter().map(|(kind, key)| (*kind, key)).collect();
    if e2ee::keys::needs_auth_for_signing_keys(&server, &session.user_id, &keys).await? {
        uiaa::require_password(&server, &session.user_id, request.auth.as_ref()).await?;
    }
    e2ee::keys::upload_signing_keys(&server, &session.user_id, &keys).await?;
    Ok(upload_signing_keys::v3::Response::new())
}

async fn upload_signature(server: Homeserver, args: Args<upload_signatures::v3::Request>) -> ApiResult<upload_signatures::v3::Response> {
    let session = args.session()?;
    let mut signed = BTreeMap::new();
    for (user, keys) in &args.body.signed_keys {
        let objects = keys.iter().map(|(id, key)| Ok((id.to_string(), serde_json::from_str(key.get())?))).collect::<ApiResult<BTreeMap<_, _>>>()?;
        signed.insert(user.clone(), objects);
    }
    let failures = e2ee::keys::upload_signatures(&server, &session.user_id, signed).await?;
    let mut response = upload_signatures::v3::Response::new();
    for failure in failures {
        let failure_json = serde_json::json!({ "errcode": "M_INVALID_SIGNATURE", "error": failure.message });
        let parsed = serde_json::from_value(failure_json)?;
        response.failures.entry(failure.user_id).or_default().insert(failure.key_id, parsed);
    }
    Ok(response)
}

async fn send_to_device(server: Homeserver, args: Args<send_event_to_device::v3::Request>) -> ApiResult<send_event_to_device::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let count = request.messages.values().map(BTreeMap::len).sum();
    limits::check_count(count, server.config.limits.max_to_device_messages, "to-device messages")?;
    let mut messages = BTreeMap::new();
    for (user, devices) in &request.messages {
        let devices = devices.iter().map(|(device, content)| Ok((device.clone(), json_of(content)?))).collect::<ApiResult<_>>()?;
        messages.insert(user.clone(), devices);
    }
    e2ee::to_device::send(&server, session, &request.event_type.to_string(), request.txn_id.as_str(), messages).await?;
    Ok(send_event_to_device::v3::Response::new())
}
