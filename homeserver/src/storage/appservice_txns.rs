//! `appservice_streams` and `appservice_txns`: each database's durable
//! progress in feeding every appservice (see `appservice/delivery.rs`).
//! The cursor and the transaction it formed change in one transaction, so
//! a crash repeats the forming or loses nothing — never half of it.

use serde_json::Value as JsonValue;
use sqlx::{PgConnection, PgExecutor};

/// Creates the appservice's cursor at the current head if it has none.
pub async fn ensure_cursor(db: impl PgExecutor<'_>, appservice_id: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO appservice_streams (appservice_id, pos) SELECT $1, pos FROM stream_head ON CONFLICT DO NOTHING")
        .bind(appservice_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The newest position formed into the appservice's transactions.
pub async fn cursor(db: impl PgExecutor<'_>, appservice_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT pos FROM appservice_streams WHERE appservice_id = $1").bind(appservice_id).fetch_one(db).await
}

/// Moves the cursor from `from` to `to`; false (and nothing changes) when
/// another worker moved it first.
pub async fn advance_cursor(conn: &mut PgConnection, appservice_id: &str, from: i64, to: i64) -> sqlx::Result<bool> {
    let updated = sqlx::query("UPDATE appservice_streams SET pos = $3 WHERE appservice_id = $1 AND pos = $2")
        .bind(appservice_id)
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// Stores a formed transaction until the appservice accepts it.
pub async fn enqueue(conn: &mut PgConnection, appservice_id: &str, upto: i64, body: &JsonValue) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO appservice_txns (appservice_id, upto, body) VALUES ($1, $2, $3)")
        .bind(appservice_id)
        .bind(upto)
        .bind(body)
        .execute(conn)
        .await?;
    Ok(())
}

/// The oldest transaction not yet accepted: `(upto, body)`.
pub async fn oldest(db: impl PgExecutor<'_>, appservice_id: &str) -> sqlx::Result<Option<(i64, JsonValue)>> {
    sqlx::query_as("SELECT upto, body FROM appservice_txns WHERE appservice_id = $1 ORDER BY upto LIMIT 1")
        .bind(appservice_id)
        .fetch_optional(db)
        .await
}

/// The appservice accepted the transaction.
pub async fn remove(db: impl PgExecutor<'_>, appservice_id: &str, upto: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM appservice_txns WHERE appservice_id = $1 AND upto = $2").bind(appservice_id).bind(upto).execute(db).await?;
    Ok(())
}
