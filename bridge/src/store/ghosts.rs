//! `ghosts`: the Matrix users registered for KIM addresses.

use ruma::UserId;
use sqlx::PgPool;

use crate::kim::address::KimAddress;

/// Whether the ghost is registered on the homeserver already.
pub async fn is_registered(pool: &PgPool, user_id: &UserId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ghosts WHERE user_id = $1)")
        .bind(user_id.as_str())
        .fetch_one(pool)
        .await
}

/// Remembers a ghost the homeserver has registered (idempotent).
pub async fn insert(
    pool: &PgPool,
    user_id: &UserId,
    address: &KimAddress,
    displayname: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ghosts (user_id, address, displayname) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET displayname = EXCLUDED.displayname",
    )
    .bind(user_id.as_str())
    .bind(address.as_str())
    .bind(displayname)
    .execute(pool)
    .await?;
    Ok(())
}
