//! `tim_federation_list`: the last verified federation list (its JWS as the
//! VZD signed it) and when it was last confirmed current, one row in
//! database 0 for all workers (see `tim::federation_list`).

use sqlx::PgExecutor;

pub struct StoredList {
    pub jws: String,
    pub refreshed_ts: i64,
}

pub async fn load(db: impl PgExecutor<'_>) -> sqlx::Result<Option<StoredList>> {
    let row: Option<(String, i64)> = sqlx::query_as("SELECT jws, refreshed_ts FROM tim_federation_list").fetch_optional(db).await?;
    Ok(row.map(|(jws, refreshed_ts)| StoredList { jws, refreshed_ts }))
}

/// Replaces the stored list with a newer verified one.
pub async fn store(db: impl PgExecutor<'_>, version: i64, jws: &str, refreshed_ts: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tim_federation_list (version, jws, refreshed_ts) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, jws = EXCLUDED.jws, refreshed_ts = EXCLUDED.refreshed_ts \
         WHERE tim_federation_list.version <= EXCLUDED.version",
    )
    .bind(version)
    .bind(jws)
    .bind(refreshed_ts)
    .execute(db)
    .await?;
    Ok(())
}

/// The VZD confirmed (204) that `version` is current.
pub async fn confirm(db: impl PgExecutor<'_>, version: i64, refreshed_ts: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE tim_federation_list SET refreshed_ts = GREATEST(refreshed_ts, $2) WHERE version = $1")
        .bind(version)
        .bind(refreshed_ts)
        .execute(db)
        .await?;
    Ok(())
}
