//! `management_rooms`: a user's direct chat with the bot, where `!kim`
//! commands are read.

use ruma::{OwnedUserId, RoomId, UserId};
use sqlx::PgPool;

pub async fn insert(pool: &PgPool, room_id: &RoomId, user_id: &UserId) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO management_rooms (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(room_id.as_str())
    .bind(user_id.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// The user whose management room this is, if it is one.
pub async fn owner(pool: &PgPool, room_id: &RoomId) -> sqlx::Result<Option<OwnedUserId>> {
    let user: Option<String> =
        sqlx::query_scalar("SELECT user_id FROM management_rooms WHERE room_id = $1")
            .bind(room_id.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(user.and_then(|user| UserId::parse(user).ok()))
}
