//! `room_aliases`: alias → room, on the alias's shard.

use ruma::{RoomAliasId, RoomId, UserId};
use sqlx::PgExecutor;

/// Adds an alias; false if it is taken.
pub async fn add(db: impl PgExecutor<'_>, alias: &RoomAliasId, room_id: &RoomId, creator: &UserId) -> sqlx::Result<bool> {
    let inserted = sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(alias.as_str())
        .bind(room_id.as_str())
        .bind(creator.as_str())
        .execute(db)
        .await?;
    Ok(inserted.rows_affected() == 1)
}

/// `(room_id, creator)` of an alias.
pub async fn resolve(db: impl PgExecutor<'_>, alias: &RoomAliasId) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
        .bind(alias.as_str())
        .fetch_optional(db)
        .await
}

pub async fn remove(db: impl PgExecutor<'_>, alias: &RoomAliasId) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM room_aliases WHERE alias = $1").bind(alias.as_str()).execute(db).await?;
    Ok(())
}

/// Local aliases pointing at a room.
pub async fn of_room(db: impl PgExecutor<'_>, room_id: &RoomId) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
        .bind(room_id.as_str())
        .fetch_all(db)
        .await
}
