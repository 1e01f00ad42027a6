//! `insured_kvnrs`: which account belongs to which KVNR, in database 0 for
//! all shards (see `tim::accounts`).

use ruma::{OwnedUserId, UserId};
use sqlx::PgExecutor;

/// Claims `kvnr` for `user_id` unless it is claimed already; returns the
/// user id that holds it afterwards (`user_id` or the earlier one).
pub async fn claim(db: impl PgExecutor<'_> + Copy, kvnr: &str, user_id: &UserId) -> sqlx::Result<Option<OwnedUserId>> {
    sqlx::query("INSERT INTO insured_kvnrs (kvnr, user_id) VALUES ($1, $2) ON CONFLICT (kvnr) DO NOTHING")
        .bind(kvnr)
        .bind(user_id.as_str())
        .execute(db)
        .await?;
    owner(db, kvnr).await
}

/// The account of `kvnr`, if it has one.
pub async fn owner(db: impl PgExecutor<'_>, kvnr: &str) -> sqlx::Result<Option<OwnedUserId>> {
    let user: Option<String> = sqlx::query_scalar("SELECT user_id FROM insured_kvnrs WHERE kvnr = $1").bind(kvnr).fetch_optional(db).await?;
    Ok(user.and_then(|u| OwnedUserId::try_from(u).ok()))
}

/// Gives up a claim of `kvnr` for `user_id` whose account could not be
/// created (the user id belongs to someone else).
pub async fn release(db: impl PgExecutor<'_>, kvnr: &str, user_id: &UserId) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM insured_kvnrs WHERE kvnr = $1 AND user_id = $2").bind(kvnr).bind(user_id.as_str()).execute(db).await?;
    Ok(())
}
