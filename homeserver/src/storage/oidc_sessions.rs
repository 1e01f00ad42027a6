//! `oidc_sessions`: logins between the redirect to the identity provider
//! and its callback, in database 0 (they belong to no user yet).

use sqlx::{FromRow, PgExecutor};

use super::now_ms;

/// What the callback needs from the request that started the login.
#[derive(Clone, Debug, FromRow)]
pub struct OidcSession {
    pub provider_id: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub callback_url: String,
    pub client_redirect_url: String,
}

/// Stores a login under its `state`, and purges the expired ones (abandoned
/// logins), which keeps the table at the logins of the last minutes.
pub async fn create(db: impl PgExecutor<'_> + Copy, state: &str, browser_hash: &[u8], session: &OidcSession, expires_ts: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM oidc_sessions WHERE expires_ts <= $1").bind(now_ms()).execute(db).await?;
    sqlx::query(
        "INSERT INTO oidc_sessions (state, browser_hash, provider_id, nonce, pkce_verifier, callback_url, client_redirect_url, expires_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(state)
    .bind(browser_hash)
    .bind(&session.provider_id)
    .bind(&session.nonce)
    .bind(&session.pkce_verifier)
    .bind(&session.callback_url)
    .bind(&session.client_redirect_url)
    .bind(expires_ts)
    .execute(db)
    .await?;
    Ok(())
}

/// Consumes a login: once, before it expires, and only from the browser
/// that started it.
pub async fn take(db: impl PgExecutor<'_>, state: &str, browser_hash: &[u8]) -> sqlx::Result<Option<OidcSession>> {
    sqlx::query_as(
        "DELETE FROM oidc_sessions WHERE state = $1 AND browser_hash = $2 AND expires_ts > $3
         RETURNING provider_id, nonce, pkce_verifier, callback_url, client_redirect_url",
    )
    .bind(state)
    .bind(browser_hash)
    .bind(now_ms())
    .fetch_optional(db)
    .await
}
