//! `sliding_sync_positions`, `sliding_sync_rooms`: what each sliding sync
//! connection was sent, on the user's shard.
//!
//! A connection is `(user, device, conn_id)`. Each response that changes
//! what the connection was sent gets a new position (from the table's
//! identity sequence, so positions only grow); a room's row carries the
//! position of the response that sent it last. See
//! `sync::sliding::connection` for why reading "rows at or before the
//! client's position" and writing "drop everything after the base first"
//! keeps the rows a subset of what the client really received.

use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde_json::Value as JsonValue;
use sqlx::{FromRow, PgConnection, PgExecutor};

/// One connection of one device.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionKey<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a DeviceId,
    pub conn_id: &'a str,
}

/// A room as a connection was last sent it.
#[derive(Clone, Debug, FromRow)]
pub struct SentRoom {
    pub room_id: String,
    pub membership: String,
    pub sent_upto: i64,
    pub required_state: JsonValue,
    pub timeline_limit: i64,
}

/// The list sizes told at `position`; `None` when the connection has no
/// such position (unknown, or dropped because the client moved on).
pub async fn list_counts(db: impl PgExecutor<'_>, key: ConnectionKey<'_>, position: i64) -> sqlx::Result<Option<JsonValue>> {
    sqlx::query_scalar(
        "SELECT list_counts FROM sliding_sync_positions
         WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND position = $4",
    )
    .bind(key.user_id.as_str())
    .bind(key.device_id.as_str())
    .bind(key.conn_id)
    .bind(position)
    .fetch_optional(db)
    .await
}

/// The rooms the connection was sent by responses at or before `position`.
pub async fn sent_rooms(db: impl PgExecutor<'_>, key: ConnectionKey<'_>, position: i64) -> sqlx::Result<Vec<SentRoom>> {
    sqlx::query_as(
        "SELECT room_id, membership, sent_upto, required_state, timeline_limit FROM sliding_sync_rooms
         WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND position <= $4",
    )
    .bind(key.user_id.as_str())
    .bind(key.device_id.as_str())
    .bind(key.conn_id)
    .bind(position)
    .fetch_all(db)
    .await
}

/// Records a response to a request from position `base` (0: a new
/// connection) that told `list_counts` and sent `rooms`; returns its
/// position.
///
/// First, under the connection's lock, everything after `base` is dropped:
/// those responses were lost or raced this one, and a client continuing from
/// `base` never saw them. Positions before `base` go too, since the client
/// moved past them.
pub async fn record(conn: &mut PgConnection, key: ConnectionKey<'_>, base: i64, list_counts: &JsonValue, rooms: &[SentRoom]) -> sqlx::Result<i64> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sliding sync ' || $1 || ' ' || $2 || ' ' || $3, 0))")
        .bind(key.user_id.as_str())
        .bind(key.device_id.as_str())
        .bind(key.conn_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM sliding_sync_positions WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND position <> $4")
        .bind(key.user_id.as_str())
        .bind(key.device_id.as_str())
        .bind(key.conn_id)
        .bind(base)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM sliding_sync_rooms WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND position > $4")
        .bind(key.user_id.as_str())
        .bind(key.device_id.as_str())
        .bind(key.conn_id)
        .bind(base)
        .execute(&mut *conn)
        .await?;
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO sliding_sync_positions (user_id, device_id, conn_id, list_counts) VALUES ($1, $2, $3, $4) RETURNING position",
    )
    .bind(key.user_id.as_str())
    .bind(key.device_id.as_str())
    .bind(key.conn_id)
    .bind(list_counts)
    .fetch_one(&mut *conn)
    .await?;
    let room_ids: Vec<&str> = rooms.iter().map(|r| r.room_id.as_str()).collect();
    let memberships: Vec<&str> = rooms.iter().map(|r| r.membership.as_str()).collect();
    let sent_upto: Vec<i64> = rooms.iter().map(|r| r.sent_upto).collect();
    let required_state: Vec<&JsonValue> = rooms.iter().map(|r| &r.required_state).collect();
    let timeline_limits: Vec<i64> = rooms.iter().map(|r| r.timeline_limit).collect();
    sqlx::query(
        "INSERT INTO sliding_sync_rooms (user_id, device_id, conn_id, room_id, position, membership, sent_upto, required_state, timeline_limit)
         SELECT $1, $2, $3, r.room_id, $4, r.membership, r.sent_upto, r.required_state, r.timeline_limit
         FROM UNNEST($5::text[], $6::text[], $7::bigint[], $8::jsonb[], $9::bigint[])
              AS r(room_id, membership, sent_upto, required_state, timeline_limit)
         ON CONFLICT (user_id, device_id, conn_id, room_id) DO UPDATE
            SET position = EXCLUDED.position, membership = EXCLUDED.membership, sent_upto = EXCLUDED.sent_upto,
                required_state = EXCLUDED.required_state, timeline_limit = EXCLUDED.timeline_limit",
    )
    .bind(key.user_id.as_str())
    .bind(key.device_id.as_str())
    .bind(key.conn_id)
    .bind(position)
    .bind(&room_ids)
    .bind(&memberships)
    .bind(&sent_upto)
    .bind(&required_state)
    .bind(&timeline_limits)
    .execute(conn)
    .await?;
    Ok(position)
}

/// Forgets the connections of deleted devices.
pub async fn delete_for_devices(conn: &mut PgConnection, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> sqlx::Result<()> {
    let ids: Vec<&str> = device_ids.iter().map(|d| d.as_str()).collect();
    for query in [
        "DELETE FROM sliding_sync_positions WHERE user_id = $1 AND device_id = ANY($2)",
        "DELETE FROM sliding_sync_rooms WHERE user_id = $1 AND device_id = ANY($2)",
    ] {
        sqlx::query(query).bind(user_id.as_str()).bind(&ids).execute(&mut *conn).await?;
    }
    Ok(())
}
