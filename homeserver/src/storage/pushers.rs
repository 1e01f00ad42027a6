//! `pushers`: where a user's notifications go, on the user's shard.

use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde_json::Value as JsonValue;
use sqlx::{FromRow, PgConnection, PgExecutor};

/// One pusher as stored.
#[derive(Clone, Debug, FromRow)]
pub struct PusherRow {
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    pub data: JsonValue,
    pub pushkey_ts: i64,
}

/// The pusher kind the push sender delivers to (`email` pushers are kept
/// for the client but not served: TI-M sends no content by mail).
pub const KIND_HTTP: &str = "http";

/// The columns every pusher read selects (a macro so queries stay `&'static str`).
macro_rules! pusher_columns {
    () => {
        "app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts"
    };
}

/// Every pusher of the user.
pub async fn list(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<PusherRow>> {
    sqlx::query_as(concat!("SELECT ", pusher_columns!(), " FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey"))
        .bind(user_id.as_str())
        .fetch_all(db)
        .await
}

/// The user's pusher with these ids, if it still exists.
pub async fn get(db: impl PgExecutor<'_>, user_id: &UserId, app_id: &str, pushkey: &str) -> sqlx::Result<Option<PusherRow>> {
    sqlx::query_as(concat!("SELECT ", pusher_columns!(), " FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3"))
        .bind(user_id.as_str())
        .bind(app_id)
        .bind(pushkey)
        .fetch_optional(db)
        .await
}

/// Creates or replaces the user's pusher `(row.app_id, row.pushkey)`, owned
/// by `device_id`.
pub async fn upsert(db: impl PgExecutor<'_>, user_id: &UserId, device_id: &DeviceId, row: &PusherRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang,
                              data, device_id, pushkey_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = EXCLUDED.kind,
            app_display_name = EXCLUDED.app_display_name, device_display_name = EXCLUDED.device_display_name,
            profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data,
            device_id = EXCLUDED.device_id, pushkey_ts = EXCLUDED.pushkey_ts",
    )
    .bind(user_id.as_str())
    .bind(&row.app_id)
    .bind(&row.pushkey)
    .bind(&row.kind)
    .bind(&row.app_display_name)
    .bind(&row.device_display_name)
    .bind(&row.profile_tag)
    .bind(&row.lang)
    .bind(&row.data)
    .bind(device_id.as_str())
    .bind(row.pushkey_ts)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes the user's pusher; false if there was none.
pub async fn delete(db: impl PgExecutor<'_>, user_id: &UserId, app_id: &str, pushkey: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
        .bind(user_id.as_str())
        .bind(app_id)
        .bind(pushkey)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Deletes the pushers the given devices set (they are being logged out).
pub async fn delete_for_devices(conn: &mut PgConnection, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> sqlx::Result<()> {
    let ids: Vec<&str> = device_ids.iter().map(|d| d.as_str()).collect();
    sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id = ANY($2)")
        .bind(user_id.as_str())
        .bind(&ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes other users' pushers with this app id and pushkey (a pushkey
/// names one app install; `append: false` moves it to the new user). Runs
/// on one database; the caller visits every shard.
pub async fn delete_for_other_users(db: impl PgExecutor<'_>, user_id: &UserId, app_id: &str, pushkey: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
        .bind(app_id)
        .bind(pushkey)
        .bind(user_id.as_str())
        .execute(db)
        .await?;
    Ok(())
}
