//! `receipts`: read receipts per room, on the room's shard.

use ruma::{OwnedRoomId, RoomId, UserId};
use sqlx::{FromRow, PgConnection, PgExecutor};

#[derive(Clone, Debug, FromRow)]
pub struct Receipt {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
    pub stream_pos: i64,
}

/// Records a receipt; an older event never replaces a newer one.
pub async fn set(conn: &mut PgConnection, room_id: &RoomId, receipt_type: &str, user_id: &UserId, thread_id: &str, event_id: &str, event_pos: i64) -> sqlx::Result<()> {
    let current: Option<String> = sqlx::query_scalar(
        "SELECT r.event_id FROM receipts r JOIN events e ON e.room_id = r.room_id AND e.event_id = r.event_id
         WHERE r.room_id = $1 AND r.receipt_type = $2 AND r.user_id = $3 AND r.thread_id = $4 AND e.stream_pos >= $5",
    )
    .bind(room_id.as_str())
    .bind(receipt_type)
    .bind(user_id.as_str())
    .bind(thread_id)
    .bind(event_pos)
    .fetch_optional(&mut *conn)
    .await?;
    if current.is_some() {
        return Ok(());
    }
    let pos = super::stream::advance(conn).await?;
    sqlx::query(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE
            SET event_id = EXCLUDED.event_id, ts = EXCLUDED.ts, stream_pos = EXCLUDED.stream_pos",
    )
    .bind(room_id.as_str())
    .bind(receipt_type)
    .bind(user_id.as_str())
    .bind(thread_id)
    .bind(event_id)
    .bind(super::now_ms())
    .bind(pos)
    .execute(conn)
    .await?;
    Ok(())
}

/// Receipts of `rooms` changed after `after` (all when `None`).
pub async fn changed_since(db: impl PgExecutor<'_>, rooms: &[OwnedRoomId], after: Option<i64>) -> sqlx::Result<Vec<Receipt>> {
    let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    sqlx::query_as(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts
         WHERE room_id = ANY($1) AND stream_pos > $2 ORDER BY stream_pos",
    )
    .bind(&ids)
    .bind(after.unwrap_or(-1))
    .fetch_all(db)
    .await
}

/// Receipts of any room of the database changed at positions
/// `(after, upto]`, oldest first (an appservice transaction's range).
pub async fn in_range(db: impl PgExecutor<'_>, after: i64, upto: i64) -> sqlx::Result<Vec<Receipt>> {
    sqlx::query_as(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts
         WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(db)
    .await
}

/// The stream position of the user's newest read receipt (public or
/// private) in the room.
pub async fn read_up_to(db: impl PgExecutor<'_>, room_id: &RoomId, user_id: &UserId) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT MAX(e.stream_pos) FROM receipts r JOIN events e ON e.room_id = r.room_id AND e.event_id = r.event_id
         WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private')",
    )
    .bind(room_id.as_str())
    .bind(user_id.as_str())
    .fetch_one(db)
    .await
}

/// Of the ranges `(room, after, upto)`, the rooms where the user's own
/// receipts moved within their own range (their unread counts fell).
pub async fn rooms_with_own_receipts_in(db: impl PgExecutor<'_>, user_id: &UserId, ranges: &[super::RoomRange]) -> sqlx::Result<Vec<String>> {
    let (rooms, afters, uptos) = super::unzip_ranges(ranges);
    sqlx::query_scalar(
        "SELECT r.room_id FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS r(room_id, after, upto)
         WHERE EXISTS (SELECT 1 FROM receipts c
                       WHERE c.room_id = r.room_id AND c.user_id = $1 AND c.stream_pos > r.after AND c.stream_pos <= r.upto)",
    )
    .bind(user_id.as_str())
    .bind(&rooms)
    .bind(&afters)
    .bind(&uptos)
    .fetch_all(db)
    .await
}
