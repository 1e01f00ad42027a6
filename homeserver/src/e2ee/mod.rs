//! End-to-end encryption support: the server side of Olm/Megolm key
//! distribution. Clients encrypt; the server stores and hands out public
//! keys, relays to-device messages and tells clients whose devices changed.

pub mod device_lists;
pub mod keys;
pub mod to_device;

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UInt};
use serde_json::Value as JsonValue;

use crate::{
    http::{ApiResult, Session},
    server::Homeserver,
    storage::device_keys,
    sync::token::StreamRange,
};

/// What a sync (classic or sliding) tells a device about encryption.
pub struct SyncUpdates {
    pub to_device: Vec<JsonValue>,
    /// The position up to which this device has now received to-device
    /// messages (goes into the next token).
    pub to_device_upto: i64,
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
    pub one_time_keys_count: BTreeMap<String, UInt>,
    pub unused_fallback_key_types: Vec<String>,
}

/// The E2EE part of a sync response for the positions of `range`;
/// `to_device_since` is the to-device position of the client's token.
pub async fn sync_updates(server: &Homeserver, session: &Session, range: StreamRange<'_>, to_device_since: Option<i64>) -> ApiResult<SyncUpdates> {
    let (_, own_upto) = range.of(&server.db, session.user_id.as_str());
    let (to_device, to_device_upto) = to_device::deliver(server, session, to_device_since, own_upto).await?;
    let (changed, left) = match range.since {
        Some(_) => device_lists::changes(server, &session.user_id, range).await?,
        None => (Vec::new(), Vec::new()),
    };
    let db = server.db.user_shard(&session.user_id);
    let mut one_time_keys_count: BTreeMap<String, UInt> = device_keys::one_time_key_counts(db, &session.user_id, &session.device_id)
        .await?
        .into_iter()
        .map(|(algorithm, count)| (algorithm, UInt::try_from(count).unwrap_or_default()))
        .collect();
    // Clients top up keys when the count is low; an absent count must read
    // as zero, so say it.
    one_time_keys_count.entry("signed_curve25519".to_owned()).or_default();
    let unused_fallback_key_types = device_keys::unused_fallback_algorithms(db, &session.user_id, &session.device_id).await?;
    Ok(SyncUpdates { to_device, to_device_upto, changed, left, one_time_keys_count, unused_fallback_key_types })
}
