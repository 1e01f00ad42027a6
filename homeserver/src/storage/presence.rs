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

/// What a presence change does to the status message.
#[derive(Clone, Copy, Debug)]
pub enum StatusMsg<'a> {
    /// Leave it (`/sync?set_presence=`, going offline for inactivity).
    Keep,
    /// Replace it (`PUT /presence`; `None` clears it).
    Set(Option<&'a str>),
}

/// Stores a presence state; returns whether it changed. Only a change takes
/// a stream position and a write: activity itself is not stored here (see
/// `presence/`), so the syncs of connected clients do not write at all.
/// `last_active_ts` is the time of the last change.
pub async fn set(conn: &mut PgConnection, user_id: &UserId, presence: &str, status_msg: StatusMsg<'_>) -> sqlx::Result<bool> {
    let current: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT presence, status_msg FROM presence WHERE user_id = $1").bind(user_id.as_str()).fetch_optional(&mut *conn).await?;
    let status_msg = match (status_msg, &current) {
        (StatusMsg::Set(status_msg), _) => status_msg,
        (StatusMsg::Keep, Some((_, kept))) => kept.as_deref(),
        (StatusMsg::Keep, None) => None,
    };
    if current.as_ref().is_some_and(|(state, kept)| state == presence && kept.as_deref() == status_msg) {
        return Ok(false);
    }
    if current.is_none() && presence == "offline" && status_msg.is_none() {
        // Never seen means offline already.
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

/// Up to `limit` users after `after` (in user id order) whose state is not
/// `offline`.
pub async fn present(db: impl PgExecutor<'_>, after: &str, limit: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT user_id FROM presence WHERE presence <> 'offline' AND user_id > $1 ORDER BY user_id LIMIT $2")
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
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
