//! `uiaa_sessions` and `registration_tokens`.

use ruma::UserId;
use sqlx::PgExecutor;

use super::now_ms;

pub async fn create(db: impl PgExecutor<'_>, session: &str, user_id: Option<&UserId>) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO uiaa_sessions (session_id, user_id, created_ts) VALUES ($1, $2, $3)")
        .bind(session)
        .bind(user_id.map(|u| u.as_str()))
        .bind(now_ms())
        .execute(db)
        .await?;
    Ok(())
}

pub async fn exists(db: impl PgExecutor<'_>, session: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM uiaa_sessions WHERE session_id = $1)")
        .bind(session)
        .fetch_one(db)
        .await
}

pub async fn delete(db: impl PgExecutor<'_>, session: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM uiaa_sessions WHERE session_id = $1").bind(session).execute(db).await?;
    Ok(())
}

/// Consumes one use of a registration token; false if it is unknown,
/// expired or used up.
pub async fn use_registration_token(db: impl PgExecutor<'_>, token: &str) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE registration_tokens SET completed = completed + 1
         WHERE token = $1
           AND (uses_allowed IS NULL OR completed < uses_allowed)
           AND (expiry_ts IS NULL OR expiry_ts > $2)",
    )
    .bind(token)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Creates a registration token (admin CLI and tests).
pub async fn add_registration_token(db: impl PgExecutor<'_>, token: &str, uses_allowed: Option<i32>) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO registration_tokens (token, uses_allowed) VALUES ($1, $2)")
        .bind(token)
        .bind(uses_allowed)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether a registration token can still be used (`/register/m.login.registration_token/validity`).
pub async fn registration_token_valid(db: impl PgExecutor<'_>, token: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM registration_tokens WHERE token = $1
           AND (uses_allowed IS NULL OR completed < uses_allowed)
           AND (expiry_ts IS NULL OR expiry_ts > $2))",
    )
    .bind(token)
    .bind(now_ms())
    .fetch_one(db)
    .await
}
