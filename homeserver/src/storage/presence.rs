//! `presence`: each user's last set presence, on the user's shard.

use ruma::UserId;
use sqlx::{FromRow, PgConnection, PgExecutor};

#[derive(Clone, Debug, FromRow)]
pub struct PresenceRow {
    pub user_id: String,
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub stream_pos: i64,
}

/// Stores a presence change; a repeated identical state takes no new stream
/// position and refreshes `last_active_ts` at most once a minute (so idle
/// `/sync?set_presence=online` loops do not churn).
pub async fn set(conn: &mut PgConnection, user_id: &UserId, presence: &str, status_msg: Option<&str>) -> sqlx::Result<bool> {
    let unchanged: Option<bool> = sqlx::query_scalar(
        "SELECT presence = $2 AND status_msg IS NOT DISTINCT FROM $3 FROM presence WHERE user_id = $1",
    )
    .bind(user_id.as_str())
    .bind(presence)
    .bind(status_msg)
    .fetch_optional(&mut *conn)
    .await?;
    if unchanged == Some(true) {
        sqlx::query("UPDATE presence SET last_active_ts = $2 WHERE user_id = $1 AND last_active_ts < $2 - 60000")
            .bind(user_id.as_str())
            .bind(super::now_ms())
            .execute(conn)
            .await?;
        return Ok(false);
    }
    let pos = super::stream::advance(conn).await?;
    sqlx::query(
        "INSERT INTO presence (user_id, presence, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id) DO UPDATE SET presence = EXCLUDED.presence, status_msg = EXCLUDED.status_msg,
            last_active_ts = EXCLUDED.last_active_ts, stream_pos = EXCLUDED.stream_pos",
    )
    .bind(user_id.as_str())
    .bind(presence)
    .bind(status_msg)
    .bind(super::now_ms())
    .bind(pos)
    .execute(conn)
    .await?;
    Ok(true)
}

pub async fn get(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<PresenceRow>> {
    sqlx::query_as("SELECT user_id, presence, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id = $1")
        .bind(user_id.as_str())
        .fetch_optional(db)
        .await
}

/// Presence of `users` changed after `after`.
pub async fn changed_since(db: impl PgExecutor<'_>, users: &[String], after: Option<i64>) -> sqlx::Result<Vec<PresenceRow>> {
    sqlx::query_as(
        "SELECT user_id, presence, status_msg, last_active_ts, stream_pos FROM presence
         WHERE user_id = ANY($1) AND stream_pos > $2",
    )
    .bind(users)
    .bind(after.unwrap_or(-1))
    .fetch_all(db)
    .await
}
