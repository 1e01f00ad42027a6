//! `outbound_queue`: room messages waiting to go out as mail, with their
//! retry schedule.

use std::time::Duration;

use serde_json::Value as JsonValue;
use sqlx::{PgExecutor, PgPool};

/// One mail to send.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    pub message_id: String,
    pub room_id: String,
    pub event_id: String,
    pub sender: String,
    /// The event's `content` (text, formatted text, file, image).
    pub content: JsonValue,
    pub recipients: Vec<String>,
    pub attempts: i32,
}

/// `message_id, room_id, event_id, sender, content, recipients, attempts`.
type QueuedRow = (String, String, String, String, JsonValue, Vec<String>, i32);

pub async fn enqueue(db: impl PgExecutor<'_>, mail: &QueuedMail) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbound_queue (message_id, room_id, event_id, sender, content, recipients)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&mail.message_id)
    .bind(&mail.room_id)
    .bind(&mail.event_id)
    .bind(&mail.sender)
    .bind(&mail.content)
    .bind(&mail.recipients)
    .execute(db)
    .await?;
    Ok(())
}

/// The mail that is due first, if any is due now.
pub async fn next_due(pool: &PgPool) -> sqlx::Result<Option<QueuedMail>> {
    let row: Option<QueuedRow> = sqlx::query_as(
        "SELECT message_id, room_id, event_id, sender, content, recipients, attempts
         FROM outbound_queue WHERE next_attempt_at <= now() ORDER BY next_attempt_at, message_id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(message_id, room_id, event_id, sender, content, recipients, attempts)| QueuedMail {
            message_id,
            room_id,
            event_id,
            sender,
            content,
            recipients,
            attempts,
        },
    ))
}

/// A temporary failure: try again after `delay`.
pub async fn retry_later(
    pool: &PgPool,
    message_id: &str,
    delay: Duration,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE outbound_queue SET attempts = attempts + 1, last_error = $3,
         next_attempt_at = now() + make_interval(secs => $2) WHERE message_id = $1",
    )
    .bind(message_id)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sent, failed for good or withdrawn: out of the queue. `false` when it
/// was not queued (any more).
pub async fn remove(db: impl PgExecutor<'_>, message_id: &str) -> sqlx::Result<bool> {
    let result = sqlx::query("DELETE FROM outbound_queue WHERE message_id = $1")
        .bind(message_id)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn len(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbound_queue")
        .fetch_one(pool)
        .await
}
