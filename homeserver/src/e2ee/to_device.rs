//! To-device messages: queued per recipient device at a stream position,
//! delivered by `/sync`, and deleted only once the device syncs again with
//! a token past them (so a response lost on the way is delivered again).

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId, to_device::DeviceIdOrAllDevices};
use serde_json::{Value as JsonValue, json};

use crate::{
    http::{ApiResult, Session},
    server::Homeserver,
    storage::{stream, to_device},
};

/// Most messages one sync delivers to a device; the rest follow next time.
pub const DELIVERY_LIMIT: i64 = 100;

/// Queues one event type's messages; a repeated transaction id is a no-op.
pub async fn send(server: &Homeserver, sender: &Session, event_type: &str, txn_id: &str, messages: BTreeMap<OwnedUserId, BTreeMap<DeviceIdOrAllDevices, JsonValue>>) -> ApiResult<()> {
    if !to_device::claim_txn(server.db.user_shard(&sender.user_id), &sender.user_id, &sender.device_id, txn_id).await? {
        return Ok(());
    }
    for (recipient, devices) in messages {
        if recipient.server_name() != server.server_name() {
            continue;
        }
        let rows = recipient_rows(server, &recipient, &sender.user_id, event_type, devices).await?;
        if rows.is_empty() {
            continue;
        }
        let mut tx = server.db.user_shard(&recipient).begin().await?;
        let pos = stream::advance(&mut tx).await?;
        to_device::enqueue(&mut tx, &recipient, &rows, pos).await?;
        tx.commit().await?;
        server.notifier.notify_users([&recipient]);
    }
    Ok(())
}

/// One `(device_id, message)` per addressed device (`*` = all devices).
async fn recipient_rows(server: &Homeserver, recipient: &UserId, sender: &UserId, event_type: &str, devices: BTreeMap<DeviceIdOrAllDevices, JsonValue>) -> ApiResult<Vec<(String, JsonValue)>> {
    let mut rows = BTreeMap::new();
    for (target, content) in devices {
        let message = json!({ "type": event_type, "sender": sender, "content": content });
        match target {
            DeviceIdOrAllDevices::DeviceId(device_id) => {
                rows.insert(device_id.to_string(), message);
            }
            DeviceIdOrAllDevices::AllDevices => {
                for device_id in to_device::device_ids(server.db.user_shard(recipient), recipient).await? {
                    rows.insert(device_id, message.clone());
                }
            }
        }
    }
    Ok(rows.into_iter().collect())
}

/// Acknowledges what the device got up to `acknowledged` and returns what is
/// pending after it (up to `upto`), with the position the device has now
/// received everything up to.
pub async fn deliver(server: &Homeserver, session: &Session, acknowledged: Option<i64>, upto: i64) -> ApiResult<(Vec<JsonValue>, i64)> {
    let db = server.db.user_shard(&session.user_id);
    let after = acknowledged.unwrap_or(-1);
    if acknowledged.is_some() {
        to_device::acknowledge(db, &session.user_id, &session.device_id, after).await?;
    }
    let pending = to_device::pending(db, &session.user_id, &session.device_id, after, upto, DELIVERY_LIMIT).await?;
    let delivered_upto = if i64::try_from(pending.len()).unwrap_or(i64::MAX) >= DELIVERY_LIMIT {
        pending.last().map_or(upto, |(pos, _)| *pos)
    } else {
        upto
    };
    Ok((pending.into_iter().map(|(_, message)| message).collect(), delivered_upto))
}
