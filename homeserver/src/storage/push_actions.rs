//! `event_push_actions`: which events notify or highlight whom, on the
//! room's shard. Written by the push processor; read by `/sync` for the
//! notification counts and by the push sender for the badge.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use sqlx::{PgConnection, PgExecutor};

/// The outcome of one recipient's push rules for one event.
#[derive(Clone, Debug)]
pub struct PushAction {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub event_pos: i64,
    pub event_id: OwnedEventId,
    pub notify: bool,
    pub highlight: bool,
}

/// Stores the actions, all at stream position `stream_pos` (the counts of
/// their users changed there). Evaluating an event again changes nothing.
pub async fn insert(conn: &mut PgConnection, actions: &[PushAction], stream_pos: i64) -> sqlx::Result<()> {
    let rooms: Vec<&str> = actions.iter().map(|a| a.room_id.as_str()).collect();
    let users: Vec<&str> = actions.iter().map(|a| a.user_id.as_str()).collect();
    let positions: Vec<i64> = actions.iter().map(|a| a.event_pos).collect();
    let event_ids: Vec<&str> = actions.iter().map(|a| a.event_id.as_str()).collect();
    let notify: Vec<bool> = actions.iter().map(|a| a.notify).collect();
    let highlight: Vec<bool> = actions.iter().map(|a| a.highlight).collect();
    sqlx::query(
        "INSERT INTO event_push_actions (room_id, user_id, event_pos, event_id, notify, highlight, stream_pos)
         SELECT *, $7 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bool[], $6::bool[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&rooms)
    .bind(&users)
    .bind(&positions)
    .bind(&event_ids)
    .bind(&notify)
    .bind(&highlight)
    .bind(stream_pos)
    .execute(conn)
    .await?;
    Ok(())
}

/// `(notifications, highlights)`: the user's notifying and highlighting
/// events of the room after position `after` that are not redacted.
pub async fn unread_counts(db: impl PgExecutor<'_>, room_id: &RoomId, user_id: &UserId, after: i64) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE a.notify), COUNT(*) FILTER (WHERE a.highlight)
         FROM event_push_actions a JOIN events e ON e.room_id = a.room_id AND e.event_id = a.event_id
         WHERE a.room_id = $1 AND a.user_id = $2 AND a.event_pos > $3 AND e.redacted_by IS NULL",
    )
    .bind(room_id.as_str())
    .bind(user_id.as_str())
    .bind(after)
    .fetch_one(db)
    .await
}

/// Of `rooms`, those where the user's counts changed in `(after, upto]`.
pub async fn rooms_changed_since(db: impl PgExecutor<'_>, user_id: &UserId, rooms: &[OwnedRoomId], after: i64, upto: i64) -> sqlx::Result<Vec<String>> {
    let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    sqlx::query_scalar(
        "SELECT DISTINCT room_id FROM event_push_actions
         WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND room_id = ANY($4)",
    )
    .bind(user_id.as_str())
    .bind(after)
    .bind(upto)
    .bind(&ids)
    .fetch_all(db)
    .await
}

/// Rooms of this database where the user has notifying events not yet
/// cleared by a receipt.
pub async fn rooms_with_notifications(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT room_id FROM event_push_actions WHERE user_id = $1 AND notify")
        .bind(user_id.as_str())
        .fetch_all(db)
        .await
}

/// A read receipt at `event_pos`: the rows it covers will never count again.
pub async fn clear_read(conn: &mut PgConnection, room_id: &RoomId, user_id: &UserId, event_pos: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM event_push_actions WHERE room_id = $1 AND user_id = $2 AND event_pos <= $3")
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .bind(event_pos)
        .execute(conn)
        .await?;
    Ok(())
}

/// The user left the room: none of its rows count any more.
pub async fn clear_room(conn: &mut PgConnection, room_id: &RoomId, user_id: &UserId) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM event_push_actions WHERE room_id = $1 AND user_id = $2")
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Of the ranges `(room, after, upto)`, the rooms where the user's counts
/// changed within their own range.
pub async fn rooms_changed_in(db: impl PgExecutor<'_>, user_id: &UserId, ranges: &[super::RoomRange]) -> sqlx::Result<Vec<String>> {
    let (rooms, afters, uptos) = super::unzip_ranges(ranges);
    sqlx::query_scalar(
        "SELECT r.room_id FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS r(room_id, after, upto)
         WHERE EXISTS (SELECT 1 FROM event_push_actions p
                       WHERE p.user_id = $1 AND p.room_id = r.room_id AND p.stream_pos > r.after AND p.stream_pos <= r.upto)",
    )
    .bind(user_id.as_str())
    .bind(&rooms)
    .bind(&afters)
    .bind(&uptos)
    .fetch_all(db)
    .await
}
