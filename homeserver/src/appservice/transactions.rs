//! Forming an appservice's next transaction from one database's stream:
//! the events, receipts, to-device messages and device-list changes at
//! positions `(cursor, upto]` that are the appservice's (see
//! `interest.rs`).
//! Positions become visible in order (see "Stream positions"), so
//! everything up to the head read first is there to be read.

use std::collections::{BTreeMap, BTreeSet};

use ruma::OwnedUserId;
use serde_json::{Map, Value as JsonValue, json};
use sqlx::PgPool;

use super::{Appservice, interest::Interest};
use crate::{
    server::Homeserver,
    storage::{device_keys, events, memberships, receipts, stream, to_device, users},
    sync::engine::receipt_event,
};

/// Most events read per transaction.
const BATCH: usize = 100;

/// The next stretch of a database's stream for an appservice.
pub struct Formed {
    /// The position it ends at: the cursor's next value.
    pub upto: i64,
    /// The transaction body; `None` when nothing in the stretch is the
    /// appservice's (the cursor just moves on).
    pub body: Option<JsonValue>,
    /// The users (exclusively the appservice's) whose to-device messages of
    /// the stretch the body carries: stored with it, they leave the
    /// to-device queue.
    pub to_device_recipients: Vec<String>,
}

/// The stretch after `from`, or `None` when the stream has not moved.
pub async fn form(server: &Homeserver, appservice: &Appservice, db: &PgPool, from: i64) -> anyhow::Result<Option<Formed>> {
    let head = stream::current(db).await?;
    if head <= from {
        return Ok(None);
    }
    let mut stored = events::stream_after(db, from, i64::try_from(BATCH)?).await?;
    let upto = match stored.last() {
        Some(last) if stored.len() == BATCH => last.stream_pos.min(head),
        _ => head,
    };
    stored.retain(|event| event.stream_pos <= upto);

    let mut interest = Interest::new(server, appservice);
    let mut own_users = BTreeSet::new();
    let mut timeline = Vec::new();
    for event in &stored {
        if interest.event(event).await? {
            let client = event.to_client(None);
            own_users.extend([Some(client.sender.as_str()), client.state_key.as_deref()].into_iter().flatten().filter(|user| appservice.is_user(user)).map(str::to_owned));
            timeline.push(JsonValue::Object(client.json));
        }
    }
    let mut to_device_recipients = BTreeSet::new();
    let (ephemeral, to_device) = if appservice.receive_ephemeral {
        (receipts(appservice, db, &mut interest, from, upto).await?, to_device(appservice, db, from, upto, &mut to_device_recipients).await?)
    } else {
        (Vec::new(), Vec::new())
    };
    own_users.extend(to_device_recipients.iter().cloned());
    // Only users no other appservice may also have (its sender, exclusive
    // namespaces): another one's transactions may not have carried them yet.
    let to_device_recipients: Vec<String> = to_device_recipients.into_iter().filter(|user| appservice.sender.as_str() == user || appservice.namespaces.claims_user(user)).collect();
    let device_lists = if appservice.msc3202 { device_list_changes(server, db, &mut interest, from, upto).await? } else { Vec::new() };
    if timeline.is_empty() && ephemeral.is_empty() && to_device.is_empty() && device_lists.is_empty() {
        return Ok(Some(Formed { upto, body: None, to_device_recipients }));
    }

    let mut body = json!({ "events": timeline });
    if !ephemeral.is_empty() {
        // MSC2409's unstable key beside the stable one: bridges read either.
        body["de.sorunome.msc2409.ephemeral"] = ephemeral.clone().into();
        body["ephemeral"] = ephemeral.into();
    }
    if !to_device.is_empty() {
        body["de.sorunome.msc2409.to_device"] = to_device.into();
    }
    if !device_lists.is_empty() {
        body["org.matrix.msc3202.device_lists"] = json!({ "changed": device_lists });
    }
    if appservice.msc3202 {
        own_users.insert(appservice.sender.to_string());
        add_key_counts(server, &mut body, own_users).await?;
    }
    Ok(Some(Formed { upto, body: Some(body), to_device_recipients }))
}

/// The `m.receipt` events (with `room_id`) of the appservice's rooms.
async fn receipts(appservice: &Appservice, db: &PgPool, interest: &mut Interest<'_>, from: i64, upto: i64) -> sqlx::Result<Vec<JsonValue>> {
    let mut by_room: BTreeMap<String, Vec<receipts::Receipt>> = BTreeMap::new();
    for receipt in receipts::in_range(db, from, upto).await? {
        by_room.entry(receipt.room_id.clone()).or_default().push(receipt);
    }
    let mut out = Vec::new();
    for (room_id, receipts) in by_room {
        if !interest.room(&room_id).await? {
            continue;
        }
        if let Some(mut event) = receipt_event(receipts, &appservice.sender) {
            event["room_id"] = room_id.into();
            out.push(event);
        }
    }
    Ok(out)
}

/// To-device messages for the appservice's users (MSC2409), with
/// `to_user_id` and `to_device_id`; their recipients go into `recipients`.
async fn to_device(appservice: &Appservice, db: &PgPool, from: i64, upto: i64, recipients: &mut BTreeSet<String>) -> sqlx::Result<Vec<JsonValue>> {
    let mut out = Vec::new();
    for addressed in to_device::in_range(db, from, upto).await? {
        if !appservice.is_user(&addressed.user_id) {
            continue;
        }
        let mut message = addressed.message;
        let Some(fields) = message.as_object_mut() else { continue };
        fields.insert("to_user_id".to_owned(), addressed.user_id.clone().into());
        fields.insert("to_device_id".to_owned(), addressed.device_id.into());
        recipients.insert(addressed.user_id);
        out.push(message);
    }
    Ok(out)
}

/// MSC3202: users of this database whose device lists changed and who
/// are joined to a room of the appservice's, so its encryption layer
/// queries their keys again. (`left` is not computed.)
async fn device_list_changes(server: &Homeserver, db: &PgPool, interest: &mut Interest<'_>, from: i64, upto: i64) -> sqlx::Result<Vec<String>> {
    let mut changed = Vec::new();
    for user in device_keys::device_lists_changed_in(db, from, upto).await? {
        let Ok(user_id) = OwnedUserId::try_from(user.as_str()) else { continue };
        for room_id in memberships::joined_rooms(server.db.user_shard(&user_id), &user_id).await? {
            if interest.room(room_id.as_str()).await? {
                changed.push(user);
                break;
            }
        }
    }
    Ok(changed)
}

/// MSC3202: the one-time key counts and unused fallback key types of the
/// devices of the appservice's users the transaction concerns (and its
/// sender's), so its encryption layer tops them up.
async fn add_key_counts(server: &Homeserver, body: &mut JsonValue, own_users: BTreeSet<String>) -> sqlx::Result<()> {
    let mut counts = Map::new();
    let mut fallbacks = Map::new();
    for user in own_users {
        let Ok(user_id) = OwnedUserId::try_from(user) else { continue };
        let db = server.db.user_shard(&user_id);
        for device_id in users::device_ids(db, &user_id).await? {
            let by_algorithm: Map<String, JsonValue> = device_keys::one_time_key_counts(db, &user_id, &device_id).await?.into_iter().map(|(algorithm, count)| (algorithm, count.into())).collect();
            let unused = device_keys::unused_fallback_algorithms(db, &user_id, &device_id).await?;
            insert_nested(&mut counts, user_id.as_str(), device_id.as_str(), by_algorithm.into());
            insert_nested(&mut fallbacks, user_id.as_str(), device_id.as_str(), unused.into());
        }
    }
    if !counts.is_empty() {
        body["org.matrix.msc3202.device_one_time_keys_count"] = counts.into();
        body["org.matrix.msc3202.device_unused_fallback_key_types"] = fallbacks.into();
    }
    Ok(())
}

fn insert_nested(map: &mut Map<String, JsonValue>, user: &str, device: &str, value: JsonValue) {
    if let Some(devices) = map.entry(user).or_insert_with(|| JsonValue::Object(Map::new())).as_object_mut() {
        devices.insert(device.to_owned(), value);
    }
}
