//! `push_queue` and `push_cursor`: the push processor's durable work, on
//! each database. The cursor says how far the database's events stream has
//! been evaluated; the queue holds the notifications the gateways have not
//! accepted yet. Both change in the transaction that evaluates a batch, so
//! a crash repeats a batch or loses nothing — never half of one.

use serde_json::Value as JsonValue;
use sqlx::{FromRow, PgConnection, PgExecutor};

/// A notification for one pusher of one user.
#[derive(Clone, Debug, FromRow)]
pub struct QueuedPush {
    pub room_id: String,
    pub event_id: String,
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    /// The `set_tweak` actions of the rule that matched, as ruma serializes
    /// `Vec<Tweak>`.
    pub tweaks: JsonValue,
    pub high_priority: bool,
    /// Failed deliveries so far.
    pub attempts: i32,
}

/// The newest position the processor has evaluated.
pub async fn cursor(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT pos FROM push_cursor").fetch_one(db).await
}

/// Moves the cursor from `from` to `to`; false (and nothing changes) when
/// another processor moved it first, so a batch is committed once even if
/// two workers briefly both believe they hold the lease.
pub async fn advance_cursor(conn: &mut PgConnection, from: i64, to: i64) -> sqlx::Result<bool> {
    let updated = sqlx::query("UPDATE push_cursor SET pos = $2 WHERE pos = $1")
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// Queues notifications, due at once.
pub async fn enqueue(conn: &mut PgConnection, pushes: &[QueuedPush]) -> sqlx::Result<()> {
    let column = |get: fn(&QueuedPush) -> &str| pushes.iter().map(get).collect::<Vec<&str>>();
    let tweaks: Vec<&JsonValue> = pushes.iter().map(|p| &p.tweaks).collect();
    let high: Vec<bool> = pushes.iter().map(|p| p.high_priority).collect();
    sqlx::query(
        "INSERT INTO push_queue (room_id, event_id, user_id, app_id, pushkey, tweaks, high_priority, next_attempt_ts)
         SELECT *, $8 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::bool[])
         ON CONFLICT DO NOTHING",
    )
    .bind(column(|p| &p.room_id))
    .bind(column(|p| &p.event_id))
    .bind(column(|p| &p.user_id))
    .bind(column(|p| &p.app_id))
    .bind(column(|p| &p.pushkey))
    .bind(&tweaks)
    .bind(&high)
    .bind(super::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Up to `limit` notifications due at `now`, oldest due first.
pub async fn due(db: impl PgExecutor<'_>, now: i64, limit: i64) -> sqlx::Result<Vec<QueuedPush>> {
    sqlx::query_as(
        "SELECT room_id, event_id, user_id, app_id, pushkey, tweaks, high_priority, attempts FROM push_queue
         WHERE next_attempt_ts <= $1 ORDER BY next_attempt_ts LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// When the next queued notification is due, if any is queued.
pub async fn next_due(db: impl PgExecutor<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT MIN(next_attempt_ts) FROM push_queue").fetch_one(db).await
}

/// Done with a notification: delivered, or given up.
pub async fn remove(db: impl PgExecutor<'_>, push: &QueuedPush) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM push_queue WHERE room_id = $1 AND event_id = $2 AND user_id = $3 AND app_id = $4 AND pushkey = $5")
        .bind(&push.room_id)
        .bind(&push.event_id)
        .bind(&push.user_id)
        .bind(&push.app_id)
        .bind(&push.pushkey)
        .execute(db)
        .await?;
    Ok(())
}

/// Records a failed delivery and when to try again.
pub async fn retry_at(db: impl PgExecutor<'_>, push: &QueuedPush, next_attempt_ts: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE push_queue SET attempts = attempts + 1, next_attempt_ts = $6
         WHERE room_id = $1 AND event_id = $2 AND user_id = $3 AND app_id = $4 AND pushkey = $5",
    )
    .bind(&push.room_id)
    .bind(&push.event_id)
    .bind(&push.user_id)
    .bind(&push.app_id)
    .bind(&push.pushkey)
    .bind(next_attempt_ts)
    .execute(db)
    .await?;
    Ok(())
}
