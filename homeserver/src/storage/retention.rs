//! The retention job's queries (`tim::retention`): rooms a rule applies to,
//! found on one database at a time, each with the room's stream position
//! when it was judged (read in the same statement), and the deletion of a
//! room's rows.

use sqlx::{PgConnection, PgExecutor};

/// Rooms whose newest event is older than `before_ts`.
pub async fn inactive_rooms(db: impl PgExecutor<'_>, before_ts: i64) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT r.room_id, r.last_stream_pos FROM rooms r JOIN events e ON e.room_id = r.room_id AND e.event_id = r.last_event_id \
         WHERE e.origin_server_ts < $1 ORDER BY r.room_id",
    )
    .bind(before_ts)
    .fetch_all(db)
    .await
}

/// Rooms created before `before_ts` that nobody but their creator ever
/// joined and that hold only state events.
pub async fn orphaned_rooms(db: impl PgExecutor<'_>, before_ts: i64) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT r.room_id, r.last_stream_pos FROM rooms r WHERE r.created_ts < $1 \
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.room_id = r.room_id AND e.state_key IS NULL) \
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.room_id = r.room_id AND e.event_type = 'm.room.member' \
                         AND e.state_key <> r.creator AND e.pdu->'content'->>'membership' = 'join') \
         ORDER BY r.room_id",
    )
    .bind(before_ts)
    .fetch_all(db)
    .await
}

/// Every room with its joined and invited members (the insured-only rule
/// judges them all).
pub async fn rooms_with_members(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, i64, Vec<String>)>> {
    sqlx::query_as(
        "SELECT m.room_id, r.last_stream_pos, array_agg(m.user_id ORDER BY m.user_id) \
         FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id \
         WHERE m.membership IN ('join', 'invite') GROUP BY m.room_id, r.last_stream_pos ORDER BY m.room_id",
    )
    .fetch_all(db)
    .await
}

/// When the room's members last changed (its newest member event).
pub async fn last_membership_change(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT max(origin_server_ts) FROM events WHERE room_id = $1 AND event_type = 'm.room.member'")
        .bind(room_id)
        .fetch_one(db)
        .await
}

/// Rooms whose newest event is a leave the retention job wrote (`reason`):
/// a run that stopped between removing the members and the purge.
pub async fn interrupted_purges(db: impl PgExecutor<'_>, reason: &str) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT r.room_id, r.last_stream_pos FROM rooms r JOIN events e ON e.room_id = r.room_id AND e.event_id = r.last_event_id \
         WHERE e.event_type = 'm.room.member' AND e.pdu->'content'->>'membership' = 'leave' AND e.pdu->'content'->>'reason' = $1 \
         ORDER BY r.room_id",
    )
    .bind(reason)
    .fetch_all(db)
    .await
}

/// Events after `after_pos` other than leaves with `reason`: what happened
/// in the room since the job judged it (the job's own leaves aside).
pub async fn events_since(db: impl PgExecutor<'_>, room_id: &str, after_pos: i64, reason: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE room_id = $1 AND stream_pos > $2 \
         AND (event_type <> 'm.room.member' OR pdu->'content'->>'reason' IS DISTINCT FROM $3)",
    )
    .bind(room_id)
    .bind(after_pos)
    .bind(reason)
    .fetch_one(db)
    .await
}

/// Everyone who ever had a membership in the room.
pub async fn all_members(conn: &mut PgConnection, room_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT user_id FROM room_memberships WHERE room_id = $1").bind(room_id).fetch_all(conn).await
}

/// Deletes the room's rows on its database (inside the writer's
/// transaction, holding the room's lock); returns the number of events.
pub async fn delete_room(conn: &mut PgConnection, room_id: &str) -> sqlx::Result<u64> {
    let events = sqlx::query("DELETE FROM events WHERE room_id = $1").bind(room_id).execute(&mut *conn).await?.rows_affected();
    for table in ["room_state", "room_memberships", "receipts", "event_push_actions", "push_queue", "rooms"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE room_id = $1"))).bind(room_id).execute(&mut *conn).await?;
    }
    Ok(events)
}

/// Aliases of the room (alias-scoped: on any database).
pub async fn delete_aliases(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<u64> {
    Ok(sqlx::query("DELETE FROM room_aliases WHERE room_id = $1").bind(room_id).execute(db).await?.rows_affected())
}

/// A user's account data for the room (read markers, tags, …).
pub async fn delete_room_account_data(db: impl PgExecutor<'_>, user_id: &str, room_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM account_data WHERE user_id = $1 AND room_id = $2").bind(user_id).bind(room_id).execute(db).await?;
    Ok(())
}

/// When the job last finished a run over this database.
pub async fn last_run(db: impl PgExecutor<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT finished_ts FROM tim_retention_runs").fetch_optional(db).await
}

pub async fn record_run(db: impl PgExecutor<'_>, finished_ts: i64) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO tim_retention_runs (finished_ts) VALUES ($1) ON CONFLICT (id) DO UPDATE SET finished_ts = EXCLUDED.finished_ts")
        .bind(finished_ts)
        .execute(db)
        .await?;
    Ok(())
}
