//! `to_device_messages` (on the recipient's shard) and `to_device_txns`
//! (on the sender's shard).

use ruma::{DeviceId, UserId};
use serde_json::Value as JsonValue;
use sqlx::{FromRow, PgConnection, PgExecutor};

/// Records a `sendToDevice` transaction id; false if it was used before.
pub async fn claim_txn(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, txn_id: &str) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(txn_id)
    .bind(super::now_ms())
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Queues messages for devices of one user at one stream position.
pub async fn enqueue(conn: &mut PgConnection, user_id: &UserId, messages: &[(String, JsonValue)], stream_pos: i64) -> sqlx::Result<()> {
    for (seq, (device_id, message)) in messages.iter().enumerate() {
        sqlx::query("INSERT INTO to_device_messages (user_id, device_id, stream_pos, seq, message) VALUES ($1, $2, $3, $4, $5)")
            .bind(user_id.as_str())
            .bind(device_id)
            .bind(stream_pos)
            .bind(i32::try_from(seq).unwrap_or(i32::MAX))
            .bind(message)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Deletes what the device acknowledged (everything up to `upto`).
pub async fn acknowledge(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, upto: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3")
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(upto)
        .execute(db)
        .await?;
    Ok(())
}

/// Pending messages after `after` up to `upto`, oldest first, at most `limit`.
pub async fn pending(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, after: i64, upto: i64, limit: i64) -> sqlx::Result<Vec<(i64, JsonValue)>> {
    sqlx::query_as(
        "SELECT stream_pos, message FROM to_device_messages
         WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
         ORDER BY stream_pos, seq LIMIT $5",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A queued message with its recipient.
#[derive(Debug, FromRow)]
pub struct Addressed {
    pub user_id: String,
    pub device_id: String,
    pub message: JsonValue,
}

/// Messages for any user of the database queued at positions
/// `(after, upto]`, in order (an appservice transaction's range).
pub async fn in_range(db: impl PgExecutor<'_>, after: i64, upto: i64) -> sqlx::Result<Vec<Addressed>> {
    sqlx::query_as(
        "SELECT user_id, device_id, message FROM to_device_messages
         WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos, seq",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(db)
    .await
}

/// Deletes the messages of `users` at positions `(after, upto]`: an
/// appservice's transaction carries them (stored in the same database
/// transaction), and no sync will acknowledge them.
pub async fn delete_delivered(db: impl PgExecutor<'_>, users: &[String], after: i64, upto: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM to_device_messages WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id = ANY($3)")
        .bind(after)
        .bind(upto)
        .bind(users)
        .execute(db)
        .await?;
    Ok(())
}

/// Device ids of a user (for `*` recipients).
pub async fn device_ids(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1")
        .bind(user_id.as_str())
        .fetch_all(db)
        .await
}
