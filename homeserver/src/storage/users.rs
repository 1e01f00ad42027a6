//! `users`, `devices`, `access_tokens`, `login_tokens`: accounts and their
//! sessions. All rows live on the user's shard.

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sqlx::{FromRow, PgExecutor};

use super::now_ms;
use crate::{http::Session, tim::accounts::AccountKind};

/// A user's profile fields.
#[derive(Clone, Debug, Default, FromRow)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// A device as listed by `/devices`.
#[derive(Clone, Debug, FromRow)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// A staff account as the admin API lists it.
#[derive(Clone, Debug, FromRow, serde::Serialize)]
pub struct StaffAccount {
    pub user_id: String,
    pub displayname: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub created_ts: i64,
}

/// Creates an account (an insured person's when `kvnr` is given, see
/// `tim::accounts`); false when the user id is taken.
pub async fn create(db: impl PgExecutor<'_>, user_id: &UserId, password_hash: Option<&str>, is_admin: bool, kvnr: Option<&str>) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO users (user_id, password_hash, is_admin, displayname, created_ts, kvnr)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(user_id.as_str())
    .bind(password_hash)
    .bind(is_admin)
    .bind(user_id.localpart())
    .bind(now_ms())
    .bind(kvnr)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The KVNR of an account (also a deactivated one); `None` for staff and
/// unknown accounts.
pub async fn kvnr(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<String>> {
    let kvnr: Option<Option<String>> = sqlx::query_scalar("SELECT kvnr FROM users WHERE user_id = $1").bind(user_id.as_str()).fetch_optional(db).await?;
    Ok(kvnr.flatten())
}

/// The kind of an active account; `None` for unknown and deactivated ones.
pub async fn account_kind(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<AccountKind>> {
    let kvnr: Option<Option<String>> = sqlx::query_scalar("SELECT kvnr FROM users WHERE user_id = $1 AND NOT deactivated")
        .bind(user_id.as_str())
        .fetch_optional(db)
        .await?;
    Ok(kvnr.map(|kvnr| AccountKind::of_kvnr(kvnr.as_deref())))
}

/// `(is_admin, kind)` of an active account; `None` for unknown and
/// deactivated ones (an appservice asserting a user's identity).
pub async fn active_account(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<(bool, AccountKind)>> {
    let row: Option<(bool, Option<String>)> = sqlx::query_as("SELECT is_admin, kvnr FROM users WHERE user_id = $1 AND NOT deactivated")
        .bind(user_id.as_str())
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(is_admin, kvnr)| (is_admin, AccountKind::of_kvnr(kvnr.as_deref()))))
}

/// The staff accounts of one database, deactivated ones included.
pub async fn staff_accounts(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<StaffAccount>> {
    sqlx::query_as(
        "SELECT user_id, displayname, is_admin, deactivated, created_ts FROM users WHERE kvnr IS NULL ORDER BY user_id",
    )
    .fetch_all(db)
    .await
}

/// Whether the user id is taken (deactivated accounts keep their id).
pub async fn exists(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)")
        .bind(user_id.as_str())
        .fetch_one(db)
        .await
}

/// The password hash of an active account.
pub async fn password_hash(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<String>> {
    let hash: Option<Option<String>> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = $1 AND NOT deactivated")
            .bind(user_id.as_str())
            .fetch_optional(db)
            .await?;
    Ok(hash.flatten())
}

/// Whether the account exists and is not deactivated.
pub async fn is_active(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1 AND NOT deactivated)")
        .bind(user_id.as_str())
        .fetch_one(db)
        .await
}

pub async fn set_password_hash(db: impl PgExecutor<'_>, user_id: &UserId, hash: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
        .bind(user_id.as_str())
        .bind(hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks the account deactivated and forgets its password and profile.
pub async fn deactivate(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE users SET deactivated = TRUE, password_hash = NULL, displayname = NULL, avatar_url = NULL
         WHERE user_id = $1",
    )
    .bind(user_id.as_str())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn profile(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Option<Profile>> {
    sqlx::query_as("SELECT displayname, avatar_url FROM users WHERE user_id = $1 AND NOT deactivated")
        .bind(user_id.as_str())
        .fetch_optional(db)
        .await
}

pub async fn set_displayname(db: impl PgExecutor<'_>, user_id: &UserId, name: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET displayname = $2 WHERE user_id = $1")
        .bind(user_id.as_str())
        .bind(name)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_avatar_url(db: impl PgExecutor<'_>, user_id: &UserId, url: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET avatar_url = $2 WHERE user_id = $1")
        .bind(user_id.as_str())
        .bind(url)
        .execute(db)
        .await?;
    Ok(())
}

// ------------------------------------------------------------------ devices

/// Creates or refreshes a device (a login with a known device id reuses it).
pub async fn upsert_device(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, display_name: Option<&str>, ip: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts)
         VALUES ($1, $2, $3, $4, $5, $4)
         ON CONFLICT (user_id, device_id) DO UPDATE
            SET display_name = COALESCE(EXCLUDED.display_name, devices.display_name),
                last_seen_ts = EXCLUDED.last_seen_ts, last_seen_ip = EXCLUDED.last_seen_ip",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(display_name)
    .bind(now_ms())
    .bind(ip)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn devices(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<Device>> {
    sqlx::query_as(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
    )
    .bind(user_id.as_str())
    .fetch_all(db)
    .await
}

pub async fn device(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId) -> sqlx::Result<Option<Device>> {
    sqlx::query_as(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .fetch_optional(db)
    .await
}

/// Renames a device; false if it does not exist.
pub async fn rename_device(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, name: Option<&str>) -> sqlx::Result<bool> {
    let updated = sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(name)
        .execute(db)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes devices and every token issued to them.
pub async fn delete_devices(conn: &mut sqlx::PgConnection, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> sqlx::Result<()> {
    let ids: Vec<&str> = device_ids.iter().map(|d| d.as_str()).collect();
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = ANY($2)")
        .bind(user_id.as_str())
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2)")
        .bind(user_id.as_str())
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every device id of the user.
pub async fn device_ids(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<OwnedDeviceId>> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1")
        .bind(user_id.as_str())
        .fetch_all(db)
        .await?;
    Ok(ids.into_iter().map(OwnedDeviceId::from).collect())
}

// ------------------------------------------------------------ access tokens

pub async fn add_access_token(db: impl PgExecutor<'_>, token_hash: &[u8], user_id: &UserId, device_id: &DeviceId) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(now_ms())
        .execute(db)
        .await?;
    Ok(())
}

/// The session behind a token hash, if the token is live and the account active.
pub async fn session_for_token(db: impl PgExecutor<'_>, token_hash: &[u8]) -> sqlx::Result<Option<Session>> {
    let row: Option<(String, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT t.user_id, t.device_id, u.is_admin, u.kvnr FROM access_tokens t
         JOIN users u ON u.user_id = t.user_id
         WHERE t.token_hash = $1 AND NOT u.deactivated",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(user_id, device_id, is_admin, kvnr)| {
        let kind = AccountKind::of_kvnr(kvnr.as_deref());
        Some(Session { user_id: OwnedUserId::try_from(user_id).ok()?, device_id: device_id.into(), is_admin, kind, appservice: None })
    }))
}

pub async fn delete_access_token(db: impl PgExecutor<'_>, token_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1").bind(token_hash).execute(db).await?;
    Ok(())
}

/// Deletes the device's tokens (before a new login on the same device).
pub async fn delete_device_tokens(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .execute(db)
        .await?;
    Ok(())
}

// -------------------------------------------------------------- login tokens

pub async fn add_login_token(db: impl PgExecutor<'_>, token_hash: &[u8], user_id: &UserId, expires_ts: i64) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)")
        .bind(token_hash)
        .bind(user_id.as_str())
        .bind(expires_ts)
        .execute(db)
        .await?;
    Ok(())
}

/// Consumes a login token: it works once, before it expires.
pub async fn take_login_token(db: impl PgExecutor<'_>, token_hash: &[u8]) -> sqlx::Result<Option<OwnedUserId>> {
    let user: Option<String> = sqlx::query_scalar(
        "DELETE FROM login_tokens WHERE token_hash = $1 AND expires_ts > $2 RETURNING user_id",
    )
    .bind(token_hash)
    .bind(now_ms())
    .fetch_optional(db)
    .await?;
    Ok(user.and_then(|u| OwnedUserId::try_from(u).ok()))
}
