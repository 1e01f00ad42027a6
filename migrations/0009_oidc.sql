-- Insured persons' login through the insurer's OpenID Connect IdP
-- (auth/oidc.rs, client_api/sso.rs). Both tables are used in database 0
-- only (like shard_map): they belong to no user or room yet, or must be
-- one table for all shards.

-- A login between the redirect to the IdP and its callback, so any worker
-- can finish what another started. Taken (deleted) by the callback; rows
-- of abandoned logins are purged once expired.
CREATE TABLE oidc_sessions (
    state               TEXT PRIMARY KEY,
    -- SHA-256 of the cookie that binds the login to the browser that
    -- started it.
    browser_hash        BYTEA NOT NULL,
    provider_id         TEXT NOT NULL,
    nonce               TEXT NOT NULL,
    pkce_verifier       TEXT NOT NULL,
    -- The redirect_uri sent to the IdP, which the code exchange must repeat.
    callback_url        TEXT NOT NULL,
    -- Where the client wants its loginToken.
    client_redirect_url TEXT NOT NULL,
    expires_ts          BIGINT NOT NULL
);
CREATE INDEX oidc_sessions_expires ON oidc_sessions (expires_ts);

-- One account per insured person: the KVNR -> user id map. Users are
-- sharded by user id, so users.kvnr cannot be unique across databases;
-- this table is, and tim::accounts::create_insured claims the KVNR here
-- before it creates the account.
CREATE TABLE insured_kvnrs (
    kvnr    TEXT PRIMARY KEY CHECK (kvnr ~ '^[A-Z][0-9]{9}$'),
    user_id TEXT NOT NULL UNIQUE
);
