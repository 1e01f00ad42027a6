//! `account_data`, `filters`, `push_rules`: a user's own settings, on the
//! user's shard. Per-room account data is keyed by the user too: only that
//! user ever reads it.

use ruma::{RoomId, UserId};
use serde_json::Value as JsonValue;
use sqlx::{FromRow, PgConnection, PgExecutor};

/// One account data entry with its stream position.
#[derive(Clone, Debug, FromRow)]
pub struct AccountDataEntry {
    pub room_id: String,
    pub data_type: String,
    pub content: JsonValue,
    pub stream_pos: i64,
}

/// Serializes read-modify-write changes of one user's settings (tags, push
/// rules) until the transaction ends, so two devices changing them at once
/// do not lose a change. An advisory lock, because the row to change may
/// not exist yet; a hash collision between two users only makes one wait.
pub async fn lock_user_settings(conn: &mut PgConnection, user_id: &UserId) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('settings ' || $1, 0))")
        .bind(user_id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets an entry (global when `room_id` is `None`) at a new stream position.
pub async fn set(conn: &mut PgConnection, user_id: &UserId, room_id: Option<&RoomId>, data_type: &str, content: &JsonValue) -> sqlx::Result<i64> {
    let pos = super::stream::advance(conn).await?;
    sqlx::query(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = EXCLUDED.content, stream_pos = EXCLUDED.stream_pos",
    )
    .bind(user_id.as_str())
    .bind(room_id.map_or("", |r| r.as_str()))
    .bind(data_type)
    .bind(content)
    .bind(pos)
    .execute(conn)
    .await?;
    Ok(pos)
}

pub async fn get(db: impl PgExecutor<'_>, user_id: &UserId, room_id: Option<&RoomId>, data_type: &str) -> sqlx::Result<Option<JsonValue>> {
    sqlx::query_scalar("SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3")
        .bind(user_id.as_str())
        .bind(room_id.map_or("", |r| r.as_str()))
        .bind(data_type)
        .fetch_optional(db)
        .await
}

/// Entries changed after `after` (all of them when `None`).
pub async fn changed_since(db: impl PgExecutor<'_>, user_id: &UserId, after: Option<i64>) -> sqlx::Result<Vec<AccountDataEntry>> {
    sqlx::query_as(
        "SELECT room_id, data_type, content, stream_pos FROM account_data
         WHERE user_id = $1 AND stream_pos > $2 ORDER BY stream_pos",
    )
    .bind(user_id.as_str())
    .bind(after.unwrap_or(-1))
    .fetch_all(db)
    .await
}

// ------------------------------------------------------------------ filters

pub async fn add_filter(db: impl PgExecutor<'_>, user_id: &UserId, filter: &JsonValue) -> sqlx::Result<i64> {
    sqlx::query_scalar("INSERT INTO filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id")
        .bind(user_id.as_str())
        .bind(filter)
        .fetch_one(db)
        .await
}

pub async fn filter(db: impl PgExecutor<'_>, user_id: &UserId, filter_id: i64) -> sqlx::Result<Option<JsonValue>> {
    sqlx::query_scalar("SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2")
        .bind(user_id.as_str())
        .bind(filter_id)
        .fetch_optional(db)
        .await
}

// --------------------------------------------------------------- push rules

pub async fn push_rules(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<JsonValue>> {
    sqlx::query_scalar("SELECT ruleset FROM push_rules WHERE user_id = $1")
        .bind(user_id.as_str())
        .fetch_optional(db)
        .await
}

pub async fn set_push_rules(conn: &mut PgConnection, user_id: &UserId, ruleset: &JsonValue) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO push_rules (user_id, ruleset) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET ruleset = EXCLUDED.ruleset",
    )
    .bind(user_id.as_str())
    .bind(ruleset)
    .execute(conn)
    .await?;
    Ok(())
}
