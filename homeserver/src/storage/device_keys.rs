//! `device_keys`, `one_time_keys`, `fallback_keys`, `cross_signing_keys`,
//! `user_signatures`, `device_list_updates`: the E2EE key material of a
//! user, on the user's shard.

use ruma::{DeviceId, UserId};
use serde_json::Value as JsonValue;
use sqlx::{PgConnection, PgExecutor};

pub async fn device_keys(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId) -> sqlx::Result<Option<JsonValue>> {
    sqlx::query_scalar("SELECT keys FROM device_keys WHERE user_id = $1 AND device_id = $2")
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_optional(db)
        .await
}

pub async fn set_device_keys(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, keys: &JsonValue) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO device_keys (user_id, device_id, keys) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET keys = EXCLUDED.keys",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(keys)
    .execute(db)
    .await?;
    Ok(())
}

/// `(device_id, keys, display_name)` of the user's devices that uploaded
/// keys, optionally only the named ones.
pub async fn devices_with_keys(db: impl PgExecutor<'_>, user_id: &UserId, only: Option<&[String]>) -> sqlx::Result<Vec<(String, JsonValue, Option<String>)>> {
    sqlx::query_as(
        "SELECT k.device_id, k.keys, d.display_name FROM device_keys k
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
         WHERE k.user_id = $1 AND ($2::text[] IS NULL OR k.device_id = ANY($2))",
    )
    .bind(user_id.as_str())
    .bind(only)
    .fetch_all(db)
    .await
}

// ------------------------------------------------------------ one-time keys

/// Stores one-time keys; an existing id with different content is refused
/// (returns that key id).
pub async fn add_one_time_keys(conn: &mut PgConnection, user_id: &UserId, device_id: &DeviceId, keys: &[(String, String, JsonValue)]) -> sqlx::Result<Option<String>> {
    for (algorithm, key_id, key) in keys {
        let existing: Option<JsonValue> = sqlx::query_scalar(
            "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, device_id, algorithm, key_id) DO UPDATE SET key_json = one_time_keys.key_json
             RETURNING key_json",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(algorithm)
        .bind(key_id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        if existing.as_ref().is_some_and(|stored| stored != key) {
            return Ok(Some(format!("{algorithm}:{key_id}")));
        }
    }
    Ok(None)
}

/// Unclaimed one-time keys per algorithm.
pub async fn one_time_key_counts(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm")
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_all(db)
        .await
}

/// Takes one one-time key of `algorithm`: the row is deleted in the same
/// statement, and `SKIP LOCKED` lets concurrent claims take different keys,
/// so a key is handed out exactly once.
pub async fn claim_one_time_key(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, algorithm: &str) -> sqlx::Result<Option<(String, JsonValue)>> {
    sqlx::query_as(
        "DELETE FROM one_time_keys WHERE ctid = (
            SELECT ctid FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
            ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING key_id, key_json",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(algorithm)
    .fetch_optional(db)
    .await
}

// ------------------------------------------------------------ fallback keys

pub async fn set_fallback_key(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, algorithm: &str, key_id: &str, key: &JsonValue) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
            SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,
                used = fallback_keys.used AND fallback_keys.key_id = EXCLUDED.key_id",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(algorithm)
    .bind(key_id)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// The fallback key of `algorithm`, marked used (it stays claimable until
/// the device uploads a new one).
pub async fn claim_fallback_key(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, algorithm: &str) -> sqlx::Result<Option<(String, JsonValue)>> {
    sqlx::query_as(
        "UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
         RETURNING key_id, key_json",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(algorithm)
    .fetch_optional(db)
    .await
}

/// Algorithms with a fallback key not yet used.
pub async fn unused_fallback_algorithms(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm")
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_all(db)
        .await
}

/// Removes every key of deleted devices.
pub async fn delete_for_devices(conn: &mut PgConnection, user_id: &UserId, device_ids: &[&str]) -> sqlx::Result<()> {
    for query in [
        "DELETE FROM device_keys WHERE user_id = $1 AND device_id = ANY($2)",
        "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = ANY($2)",
        "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = ANY($2)",
        "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = ANY($2)",
    ] {
        sqlx::query(query).bind(user_id.as_str()).bind(device_ids).execute(&mut *conn).await?;
    }
    Ok(())
}

// ------------------------------------------------------- cross-signing keys

/// `(key_type, key)` of the user's cross-signing keys.
pub async fn cross_signing_keys(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<(String, JsonValue)>> {
    sqlx::query_as("SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1")
        .bind(user_id.as_str())
        .fetch_all(db)
        .await
}

pub async fn set_cross_signing_key(db: impl PgExecutor<'_>, user_id: &UserId, key_type: &str, key: &JsonValue) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = EXCLUDED.key_json",
    )
    .bind(user_id.as_str())
    .bind(key_type)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// Adds signatures the signer made on another user's key.
pub async fn add_user_signatures(db: impl PgExecutor<'_>, signer: &UserId, target: &UserId, target_key_id: &str, signatures: &JsonValue) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO user_signatures (signer_user_id, target_user_id, target_key_id, signatures) VALUES ($1, $2, $3, $4)
         ON CONFLICT (signer_user_id, target_user_id, target_key_id) DO UPDATE
            SET signatures = user_signatures.signatures || EXCLUDED.signatures",
    )
    .bind(signer.as_str())
    .bind(target.as_str())
    .bind(target_key_id)
    .bind(signatures)
    .execute(db)
    .await?;
    Ok(())
}

/// `(target_key_id, signatures)` the signer made on the target's keys.
pub async fn user_signatures(db: impl PgExecutor<'_>, signer: &UserId, target: &UserId) -> sqlx::Result<Vec<(String, JsonValue)>> {
    sqlx::query_as("SELECT target_key_id, signatures FROM user_signatures WHERE signer_user_id = $1 AND target_user_id = $2")
        .bind(signer.as_str())
        .bind(target.as_str())
        .fetch_all(db)
        .await
}

// ------------------------------------------------------ device-list updates

/// Records that the user's devices or keys changed, at a new stream position.
pub async fn mark_device_list_changed(conn: &mut PgConnection, user_id: &UserId) -> sqlx::Result<i64> {
    let pos = super::stream::advance(conn).await?;
    sqlx::query(
        "INSERT INTO device_list_updates (user_id, stream_pos) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET stream_pos = EXCLUDED.stream_pos",
    )
    .bind(user_id.as_str())
    .bind(pos)
    .execute(conn)
    .await?;
    Ok(pos)
}

/// Of `users`, those whose devices changed in `(after, upto]`.
pub async fn device_lists_changed(db: impl PgExecutor<'_>, users: &[String], after: i64, upto: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT user_id FROM device_list_updates WHERE user_id = ANY($1) AND stream_pos > $2 AND stream_pos <= $3")
        .bind(users)
        .bind(after)
        .bind(upto)
        .fetch_all(db)
        .await
}

/// Every user of the database whose device list changed at positions
/// `(after, upto]` (an appservice transaction's range).
pub async fn device_lists_changed_in(db: impl PgExecutor<'_>, after: i64, upto: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT user_id FROM device_list_updates WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos")
        .bind(after)
        .bind(upto)
        .fetch_all(db)
        .await
}
