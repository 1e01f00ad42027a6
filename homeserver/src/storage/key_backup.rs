//! `key_backup_versions`, `key_backup_sessions`: server-side key backups,
//! on the user's shard. A version is live until deleted; deleted versions
//! stay as tombstones so their numbers are never reused. The current
//! version, the only one that takes new keys, is the newest live one.

use ruma::{RoomId, UserId};
use serde_json::Value as JsonValue;
use sqlx::{FromRow, PgConnection, PgExecutor};

/// A live backup version with what `GET /room_keys/version` reports.
#[derive(Clone, Debug, FromRow)]
pub struct VersionInfo {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: JsonValue,
    pub etag: i64,
    /// How many sessions the version holds keys for.
    pub count: i64,
}

/// A version's row, locked by [`lock_version`].
#[derive(Clone, Debug, FromRow)]
pub struct LockedVersion {
    pub algorithm: String,
    pub deleted: bool,
}

/// The stored key of one megolm session.
#[derive(Clone, Debug, FromRow)]
pub struct SessionKey {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// Encrypted for the backup key; opaque to the server.
    pub session_data: JsonValue,
}

/// The keys of a version that a read or delete covers: the three levels of
/// `/room_keys/keys`.
#[derive(Clone, Copy, Debug)]
pub enum KeyScope<'a> {
    All,
    Room(&'a RoomId),
    Session(&'a RoomId, &'a str),
}

impl<'a> KeyScope<'a> {
    /// The `(room_id, session_id)` the queries filter on; `None` matches any.
    fn filter(self) -> (Option<&'a str>, Option<&'a str>) {
        match self {
            Self::All => (None, None),
            Self::Room(room_id) => (Some(room_id.as_str()), None),
            Self::Session(room_id, session_id) => (Some(room_id.as_str()), Some(session_id)),
        }
    }
}

/// Creates a version numbered one above every version the user ever had
/// (deleted ones included). Call inside a transaction: a transaction-scoped
/// advisory lock on the user's numbering makes two devices creating a
/// backup at once get different numbers; a row lock could not, as a user's
/// first version has no row to lock yet.
pub async fn create_version(conn: &mut PgConnection, user_id: &UserId, algorithm: &str, auth_data: &JsonValue) -> sqlx::Result<i64> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('key backup ' || $1, 0))")
        .bind(user_id.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data)
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM key_backup_versions WHERE user_id = $1
         RETURNING version",
    )
    .bind(user_id.as_str())
    .bind(algorithm)
    .bind(auth_data)
    .fetch_one(conn)
    .await
}

/// The live version `version`, or the current one when `None`, with its
/// key count and etag.
pub async fn version_info(db: impl PgExecutor<'_>, user_id: &UserId, version: Option<i64>) -> sqlx::Result<Option<VersionInfo>> {
    sqlx::query_as(
        "SELECT v.version, v.algorithm, v.auth_data, v.etag,
                (SELECT COUNT(*) FROM key_backup_sessions s WHERE s.user_id = v.user_id AND s.version = v.version) AS count
         FROM key_backup_versions v
         WHERE v.user_id = $1 AND NOT v.deleted AND ($2::BIGINT IS NULL OR v.version = $2)
         ORDER BY v.version DESC LIMIT 1",
    )
    .bind(user_id.as_str())
    .bind(version)
    .fetch_optional(db)
    .await
}

/// The number of the current version, if the user has a live one.
pub async fn current_version(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT MAX(version) FROM key_backup_versions WHERE user_id = $1 AND NOT deleted")
        .bind(user_id.as_str())
        .fetch_one(db)
        .await
}

/// Whether `version` exists and is not deleted.
pub async fn is_live(db: impl PgExecutor<'_>, user_id: &UserId, version: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted)")
        .bind(user_id.as_str())
        .bind(version)
        .fetch_one(db)
        .await
}

/// Locks the version's row until the transaction ends, so writes of its
/// keys, its etag and its deletion happen one at a time and each reads
/// the count the previous one left. `None` when the version never existed.
pub async fn lock_version(conn: &mut PgConnection, user_id: &UserId, version: i64) -> sqlx::Result<Option<LockedVersion>> {
    sqlx::query_as("SELECT algorithm, deleted FROM key_backup_versions WHERE user_id = $1 AND version = $2 FOR UPDATE")
        .bind(user_id.as_str())
        .bind(version)
        .fetch_optional(conn)
        .await
}

pub async fn set_auth_data(conn: &mut PgConnection, user_id: &UserId, version: i64, auth_data: &JsonValue) -> sqlx::Result<()> {
    sqlx::query("UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2")
        .bind(user_id.as_str())
        .bind(version)
        .bind(auth_data)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the version deleted and drops its keys; the row stays so the
/// number is not handed out again.
pub async fn delete_version(conn: &mut PgConnection, user_id: &UserId, version: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2")
        .bind(user_id.as_str())
        .bind(version)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE key_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2")
        .bind(user_id.as_str())
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores keys in a version, keeping for each session the better of the
/// stored and the new key by the spec's order: verified before unverified,
/// then the lower `first_message_index`, then the lower `forwarded_count`;
/// on a tie the stored key stays. Returns how many sessions changed. The
/// keys must name distinct sessions (one statement cannot touch a row
/// twice).
pub async fn put_keys(conn: &mut PgConnection, user_id: &UserId, version: i64, keys: &[SessionKey]) -> sqlx::Result<u64> {
    let room_ids: Vec<&str> = keys.iter().map(|k| k.room_id.as_str()).collect();
    let session_ids: Vec<&str> = keys.iter().map(|k| k.session_id.as_str()).collect();
    let first_message_indexes: Vec<i64> = keys.iter().map(|k| k.first_message_index).collect();
    let forwarded_counts: Vec<i64> = keys.iter().map(|k| k.forwarded_count).collect();
    let verified: Vec<bool> = keys.iter().map(|k| k.is_verified).collect();
    let session_data: Vec<&JsonValue> = keys.iter().map(|k| &k.session_data).collect();
    // Rows compare lexicographically and FALSE < TRUE, so the smaller
    // `(NOT is_verified, first_message_index, forwarded_count)` is the
    // better key.
    let changed = sqlx::query(
        "INSERT INTO key_backup_sessions
            (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
         SELECT $1, $2, k.room_id, k.session_id, k.first_message_index, k.forwarded_count, k.is_verified, k.session_data
         FROM UNNEST($3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::BOOLEAN[], $8::JSONB[])
              AS k(room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
            first_message_index = EXCLUDED.first_message_index,
            forwarded_count = EXCLUDED.forwarded_count,
            is_verified = EXCLUDED.is_verified,
            session_data = EXCLUDED.session_data
         WHERE (NOT EXCLUDED.is_verified, EXCLUDED.first_message_index, EXCLUDED.forwarded_count)
             < (NOT key_backup_sessions.is_verified, key_backup_sessions.first_message_index, key_backup_sessions.forwarded_count)",
    )
    .bind(user_id.as_str())
    .bind(version)
    .bind(&room_ids)
    .bind(&session_ids)
    .bind(&first_message_indexes)
    .bind(&forwarded_counts)
    .bind(&verified)
    .bind(&session_data)
    .execute(conn)
    .await?;
    Ok(changed.rows_affected())
}

/// The stored keys of a version within `scope`.
pub async fn keys(db: impl PgExecutor<'_>, user_id: &UserId, version: i64, scope: KeyScope<'_>) -> sqlx::Result<Vec<SessionKey>> {
    let (room_id, session_id) = scope.filter();
    sqlx::query_as(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
         FROM key_backup_sessions
         WHERE user_id = $1 AND version = $2 AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)
         ORDER BY room_id, session_id",
    )
    .bind(user_id.as_str())
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .fetch_all(db)
    .await
}

/// Deletes the keys of a version within `scope`; returns how many.
pub async fn delete_keys(conn: &mut PgConnection, user_id: &UserId, version: i64, scope: KeyScope<'_>) -> sqlx::Result<u64> {
    let (room_id, session_id) = scope.filter();
    let deleted = sqlx::query(
        "DELETE FROM key_backup_sessions
         WHERE user_id = $1 AND version = $2 AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)",
    )
    .bind(user_id.as_str())
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}

/// Gives the version a new etag: its keys changed in this transaction.
pub async fn bump_etag(conn: &mut PgConnection, user_id: &UserId, version: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
        .bind(user_id.as_str())
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}
