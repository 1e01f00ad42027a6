//! `rooms`, `events`, `room_state`: the room's event log and its current
//! state. All rows live on the room's shard.

use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::Value as JsonValue;
use sqlx::{FromRow, PgConnection, PgExecutor};

use crate::rooms::pdu::{ClientEvent, Pdu};

/// The columns every event read selects (a macro so queries stay `&'static str`).
macro_rules! event_columns {
    () => {
        "event_id, stream_pos, pdu, unsigned_data, sender, txn_device_id, txn_id"
    };
}

/// A room's head, read under its row lock by the one writer.
#[derive(Debug, FromRow)]
pub struct RoomHead {
    pub room_version: String,
    pub last_event_id: Option<String>,
    pub depth: i64,
}

/// An event row as read for clients.
#[derive(Clone, Debug, FromRow)]
pub struct StoredEvent {
    pub event_id: String,
    pub stream_pos: i64,
    pub pdu: JsonValue,
    pub unsigned_data: Option<JsonValue>,
    pub sender: String,
    pub txn_device_id: Option<String>,
    pub txn_id: Option<String>,
}

impl StoredEvent {
    /// The client format, echoing the transaction id to the device that sent it.
    pub fn to_client(&self, viewer: Option<(&UserId, &DeviceId)>) -> ClientEvent {
        let txn = match (viewer, &self.txn_device_id, &self.txn_id) {
            (Some((user, device)), Some(txn_device), Some(txn)) if user.as_str() == self.sender && device.as_str() == txn_device => Some(txn.as_str()),
            _ => None,
        };
        let event_id = OwnedEventId::try_from(self.event_id.as_str()).unwrap_or_else(|_| ruma::owned_event_id!("$invalid"));
        ClientEvent::from_stored(event_id, self.stream_pos, &self.pdu, self.unsigned_data.as_ref(), txn)
    }
}

/// A new event row.
pub struct NewEventRow<'a> {
    pub pdu: &'a Pdu,
    pub json: &'a JsonValue,
    pub stream_pos: i64,
    pub unsigned: Option<JsonValue>,
    pub txn: Option<(&'a DeviceId, &'a str)>,
}

pub async fn insert_room(conn: &mut PgConnection, room_id: &RoomId, version: &str, creator: &UserId) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(room_id.as_str())
        .bind(version)
        .bind(creator.as_str())
        .bind(super::now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks the room for writing until the transaction ends.
pub async fn lock_room(conn: &mut PgConnection, room_id: &RoomId) -> sqlx::Result<Option<RoomHead>> {
    sqlx::query_as("SELECT room_version, last_event_id, depth FROM rooms WHERE room_id = $1 FOR UPDATE")
        .bind(room_id.as_str())
        .fetch_optional(conn)
        .await
}

pub async fn room_version(db: impl PgExecutor<'_>, room_id: &RoomId) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT room_version FROM rooms WHERE room_id = $1")
        .bind(room_id.as_str())
        .fetch_optional(db)
        .await
}

pub async fn set_room_head(conn: &mut PgConnection, room_id: &RoomId, event_id: &EventId, depth: i64, stream_pos: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE rooms SET last_event_id = $2, depth = $3, last_stream_pos = $4 WHERE room_id = $1")
        .bind(room_id.as_str())
        .bind(event_id.as_str())
        .bind(depth)
        .bind(stream_pos)
        .execute(conn)
        .await?;
    Ok(())
}

/// The event a client already sent with this transaction id, if any.
pub async fn event_for_txn(conn: &mut PgConnection, room_id: &RoomId, sender: &UserId, device: &DeviceId, txn_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT event_id FROM events WHERE room_id = $1 AND sender = $2 AND txn_device_id = $3 AND txn_id = $4",
    )
    .bind(room_id.as_str())
    .bind(sender.as_str())
    .bind(device.as_str())
    .bind(txn_id)
    .fetch_optional(conn)
    .await
}

pub async fn insert_event(conn: &mut PgConnection, row: NewEventRow<'_>) -> sqlx::Result<()> {
    let pdu = row.pdu;
    sqlx::query(
        "INSERT INTO events (room_id, event_id, stream_pos, depth, event_type, state_key, sender,
                             origin_server_ts, pdu, unsigned_data, txn_device_id, txn_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(pdu.room_id.as_str())
    .bind(pdu.event_id.as_str())
    .bind(row.stream_pos)
    .bind(i64::try_from(u64::from(pdu.depth)).unwrap_or(i64::MAX))
    .bind(pdu.kind.to_string())
    .bind(pdu.state_key.as_deref())
    .bind(pdu.sender.as_str())
    .bind(i64::from(pdu.origin_server_ts.get()))
    .bind(row.json)
    .bind(row.unsigned)
    .bind(row.txn.map(|(device, _)| device.as_str()))
    .bind(row.txn.map(|(_, txn)| txn))
    .execute(conn)
    .await?;
    Ok(())
}

/// Current state events of the given `(type, state_key)` pairs, as PDUs for
/// the authorization rules.
pub async fn current_state_pdus(conn: &mut PgConnection, room_id: &RoomId, keys: &[(String, String)]) -> sqlx::Result<Vec<Pdu>> {
    let types: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
    let state_keys: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT e.event_id, e.pdu::text FROM room_state s
         JOIN events e ON e.room_id = s.room_id AND e.event_id = s.event_id
         JOIN UNNEST($2::text[], $3::text[]) AS k(t, sk) ON s.event_type = k.t AND s.state_key = k.sk
         WHERE s.room_id = $1",
    )
    .bind(room_id.as_str())
    .bind(&types)
    .bind(&state_keys)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(id, json)| {
            let id = OwnedEventId::try_from(id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Pdu::from_json(id, &json).map_err(|e| sqlx::Error::Decode(e.into()))
        })
        .collect()
}

/// The current state event for one key: its id, content and sender.
pub async fn current_state_entry(db: impl PgExecutor<'_>, room_id: &RoomId, event_type: &str, state_key: &str) -> sqlx::Result<Option<(String, JsonValue, String)>> {
    sqlx::query_as(
        "SELECT e.event_id, e.pdu->'content', e.sender FROM room_state s
         JOIN events e ON e.room_id = s.room_id AND e.event_id = s.event_id
         WHERE s.room_id = $1 AND s.event_type = $2 AND s.state_key = $3",
    )
    .bind(room_id.as_str())
    .bind(event_type)
    .bind(state_key)
    .fetch_optional(db)
    .await
}

pub async fn set_current_state(conn: &mut PgConnection, room_id: &RoomId, event_type: &str, state_key: &str, event_id: &EventId, stream_pos: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO room_state (room_id, event_type, state_key, event_id, stream_pos) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = EXCLUDED.event_id, stream_pos = EXCLUDED.stream_pos",
    )
    .bind(room_id.as_str())
    .bind(event_type)
    .bind(state_key)
    .bind(event_id.as_str())
    .bind(stream_pos)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces an event's stored JSON by its redacted form.
pub async fn store_redaction(conn: &mut PgConnection, room_id: &RoomId, event_id: &EventId, redacted_pdu: &JsonValue, redaction: &JsonValue) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE events SET pdu = $3, redacted_by = $4->>'event_id',
                unsigned_data = jsonb_build_object('redacted_because', $4::jsonb)
         WHERE room_id = $1 AND event_id = $2",
    )
    .bind(room_id.as_str())
    .bind(event_id.as_str())
    .bind(redacted_pdu)
    .bind(redaction)
    .execute(conn)
    .await?;
    Ok(())
}

/// The stored PDU JSON of an event (for redaction).
pub async fn pdu_json(conn: &mut PgConnection, room_id: &RoomId, event_id: &EventId) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT pdu::text FROM events WHERE room_id = $1 AND event_id = $2")
        .bind(room_id.as_str())
        .bind(event_id.as_str())
        .fetch_optional(conn)
        .await
}

// --------------------------------------------------------------- reading

pub async fn event(db: impl PgExecutor<'_>, room_id: &RoomId, event_id: &EventId) -> sqlx::Result<Option<StoredEvent>> {
    sqlx::query_as(concat!("SELECT ", event_columns!(), " FROM events WHERE room_id = $1 AND event_id = $2"))
        .bind(room_id.as_str())
        .bind(event_id.as_str())
        .fetch_optional(db)
        .await
}

/// Events with `after < stream_pos <= upto`, newest first when `newest_first`.
pub async fn range(db: impl PgExecutor<'_>, room_id: &RoomId, after: i64, upto: i64, limit: i64, newest_first: bool) -> sqlx::Result<Vec<StoredEvent>> {
    let query = if newest_first {
        concat!("SELECT ", event_columns!(), " FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos DESC LIMIT $4")
    } else {
        concat!("SELECT ", event_columns!(), " FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos ASC LIMIT $4")
    };
    sqlx::query_as(query)
    .bind(room_id.as_str())
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The room state as of stream position `at` (the latest state event of
/// each key with `stream_pos <= at`), optionally only keys that changed
/// after `changed_after`.
pub async fn state_at(db: impl PgExecutor<'_>, room_id: &RoomId, at: i64, changed_after: Option<i64>) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(concat!(
        "SELECT ", event_columns!(), " FROM (
            SELECT DISTINCT ON (event_type, state_key) * FROM events
            WHERE room_id = $1 AND state_key IS NOT NULL AND stream_pos <= $2
            ORDER BY event_type, state_key, stream_pos DESC
         ) latest WHERE stream_pos > $3 ORDER BY stream_pos"
    ))
    .bind(room_id.as_str())
    .bind(at)
    .bind(changed_after.unwrap_or(-1))
    .fetch_all(db)
    .await
}

/// The current state of a room.
pub async fn current_state(db: impl PgExecutor<'_>, room_id: &RoomId) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(concat!(
        "SELECT ", event_columns!(), " FROM events WHERE (room_id, event_id) IN
            (SELECT room_id, event_id FROM room_state WHERE room_id = $1)
         ORDER BY stream_pos"
    ))
    .bind(room_id.as_str())
    .fetch_all(db)
    .await
}

/// The current state event of one key.
pub async fn current_state_event(db: impl PgExecutor<'_>, room_id: &RoomId, event_type: &str, state_key: &str) -> sqlx::Result<Option<StoredEvent>> {
    sqlx::query_as(concat!(
        "SELECT ", event_columns!(), " FROM events WHERE (room_id, event_id) IN
            (SELECT room_id, event_id FROM room_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3)"
    ))
    .bind(room_id.as_str())
    .bind(event_type)
    .bind(state_key)
    .fetch_optional(db)
    .await
}

/// Of `rooms`, those with events in `(after, upto]`. A room whose newest
/// event is past `upto` may have none in the window; the caller's timeline
/// query finds out.
pub async fn rooms_changed_since(db: impl PgExecutor<'_>, rooms: &[OwnedRoomId], after: i64, upto: i64) -> sqlx::Result<Vec<String>> {
    let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    sqlx::query_scalar(
        "SELECT r.room_id FROM rooms r WHERE r.room_id = ANY($1) AND r.last_stream_pos > $2
           AND EXISTS (SELECT 1 FROM events e WHERE e.room_id = r.room_id AND e.stream_pos > $2 AND e.stream_pos <= $3)",
    )
    .bind(&ids)
    .bind(after)
    .bind(upto)
    .fetch_all(db)
    .await
}

/// The position of an event, for pagination around it.
pub async fn stream_pos_of(db: impl PgExecutor<'_>, room_id: &RoomId, event_id: &EventId) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT stream_pos FROM events WHERE room_id = $1 AND event_id = $2")
        .bind(room_id.as_str())
        .bind(event_id.as_str())
        .fetch_optional(db)
        .await
}

/// `(user_id, membership)` of member events in `(after, upto]`, in order.
pub async fn member_changes(db: impl PgExecutor<'_>, room_id: &RoomId, after: i64, upto: i64) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT state_key, COALESCE(pdu->'content'->>'membership', 'leave') FROM events
         WHERE room_id = $1 AND event_type = 'm.room.member' AND stream_pos > $2 AND stream_pos <= $3
         ORDER BY stream_pos",
    )
    .bind(room_id.as_str())
    .bind(after)
    .bind(upto)
    .fetch_all(db)
    .await
}

/// This database's events after position `after`, in stream order: the push
/// processor's tail. Positions become visible in order (see `stream`), so
/// reading past a slow writer's event is impossible.
pub async fn stream_after(db: impl PgExecutor<'_>, after: i64, limit: i64) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(concat!("SELECT ", event_columns!(), " FROM events WHERE stream_pos > $1 ORDER BY stream_pos LIMIT $2"))
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Of the ranges `(room, after, upto)`, the rooms with events at positions
/// `(after, upto]`: each room is asked about its own range (sliding sync
/// remembers per room how far each connection got).
pub async fn rooms_with_events_in(db: impl PgExecutor<'_>, ranges: &[super::RoomRange]) -> sqlx::Result<Vec<String>> {
    let (rooms, afters, uptos) = super::unzip_ranges(ranges);
    sqlx::query_scalar(
        "SELECT r.room_id FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS r(room_id, after, upto)
         WHERE EXISTS (SELECT 1 FROM events e WHERE e.room_id = r.room_id AND e.stream_pos > r.after AND e.stream_pos <= r.upto)",
    )
    .bind(&rooms)
    .bind(&afters)
    .bind(&uptos)
    .fetch_all(db)
    .await
}

/// For each of `rooms`, the `origin_server_ts` of its newest event at or
/// before `upto` whose type is one of `types` (`None` when there is none):
/// the "bump stamp" by which clients order their room lists.
pub async fn newest_of_types(db: impl PgExecutor<'_>, rooms: &[OwnedRoomId], upto: i64, types: &[&str]) -> sqlx::Result<Vec<(String, Option<i64>)>> {
    let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    sqlx::query_as(
        "SELECT r.room_id, (SELECT e.origin_server_ts FROM events e
                            WHERE e.room_id = r.room_id AND e.stream_pos <= $2 AND e.event_type = ANY($3)
                            ORDER BY e.stream_pos DESC LIMIT 1)
         FROM UNNEST($1::text[]) AS r(room_id)",
    )
    .bind(&ids)
    .bind(upto)
    .bind(types)
    .fetch_all(db)
    .await
}

/// What room lists filter on, from the current state: `(room_id, the
/// create event's room type, whether the room is encrypted)`.
pub async fn room_kinds(db: impl PgExecutor<'_>, rooms: &[OwnedRoomId]) -> sqlx::Result<Vec<(String, Option<String>, bool)>> {
    let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    sqlx::query_as(
        "SELECT r.room_id,
                (SELECT e.pdu->'content'->>'type' FROM room_state s
                 JOIN events e ON e.room_id = s.room_id AND e.event_id = s.event_id
                 WHERE s.room_id = r.room_id AND s.event_type = 'm.room.create' AND s.state_key = ''),
                EXISTS (SELECT 1 FROM room_state s WHERE s.room_id = r.room_id AND s.event_type = 'm.room.encryption' AND s.state_key = '')
         FROM UNNEST($1::text[]) AS r(room_id)",
    )
    .bind(&ids)
    .fetch_all(db)
    .await
}

/// Like [`state_at`], restricted to the `(type, state_key)` pairs of
/// `selection`, where `*` in either place matches anything. The selection
/// is applied in the query, so a room's thousands of member events are not
/// read to find the few a client asked for.
pub async fn state_at_matching(db: impl PgExecutor<'_>, room_id: &RoomId, at: i64, changed_after: Option<i64>, selection: &[(String, String)]) -> sqlx::Result<Vec<StoredEvent>> {
    let types: Vec<&str> = selection.iter().map(|(t, _)| t.as_str()).collect();
    let keys: Vec<&str> = selection.iter().map(|(_, k)| k.as_str()).collect();
    sqlx::query_as(concat!(
        "SELECT ", event_columns!(), " FROM (
            SELECT DISTINCT ON (event_type, state_key) * FROM events ev
            WHERE room_id = $1 AND state_key IS NOT NULL AND stream_pos <= $2
              AND EXISTS (SELECT 1 FROM UNNEST($4::text[], $5::text[]) AS f(t, k)
                          WHERE (f.t = '*' OR f.t = ev.event_type) AND (f.k = '*' OR f.k = ev.state_key))
            ORDER BY event_type, state_key, stream_pos DESC
         ) latest WHERE stream_pos > $3 ORDER BY stream_pos"
    ))
    .bind(room_id.as_str())
    .bind(at)
    .bind(changed_after.unwrap_or(-1))
    .bind(&types)
    .bind(&keys)
    .fetch_all(db)
    .await
}
