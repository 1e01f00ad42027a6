-- End-to-end encryption state of the bridge's devices (bridge/src/crypto):
-- matrix-sdk-crypto's CryptoStore for the bot and every ghost, in one
-- database. Every table is scoped by `store_id`, one row of `crypto_stores`
-- per bridge user and device. Identifiers (user, device, room and session
-- ids, curve keys) are kept in clear so the SDK's lookups are plain index
-- scans; every value column holds a StoreCipher ciphertext (XChaCha20-Poly1305
-- under the database's cipher, itself wrapped with the key from the bridge
-- config), so a database dump gives away no Olm or Megolm secret.

-- The store cipher of this database, exported under the configured key.
CREATE TABLE crypto_store_cipher (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    exported BYTEA NOT NULL
);

-- One crypto store per bridge user and device.
CREATE TABLE crypto_stores (
    store_id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, device_id)
);

-- Single values of a store: the Olm account, the private cross-signing
-- identity, backup keys, the dehydrated-device pickle key, the next-batch
-- token.
CREATE TABLE crypto_values (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    name TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (store_id, name)
);

-- The SDK's `set_custom_value` entries (its own bookkeeping).
CREATE TABLE crypto_custom_values (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    name TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (store_id, name)
);

-- Olm sessions with other devices, found by the other device's curve key.
CREATE TABLE crypto_olm_sessions (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    pickle BYTEA NOT NULL,
    PRIMARY KEY (store_id, session_id)
);
CREATE INDEX crypto_olm_sessions_sender_key ON crypto_olm_sessions (store_id, sender_key);

-- Hashes of Olm messages already decrypted (replays are refused).
CREATE TABLE crypto_olm_message_hashes (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    sender_key TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (store_id, sender_key, hash)
);

-- Megolm room keys received (and our own, for decrypting our messages).
-- `backed_up` is the truth, not the flag inside the pickle.
CREATE TABLE crypto_inbound_group_sessions (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    sender_data_type SMALLINT NOT NULL,
    backed_up BOOLEAN NOT NULL,
    pickle BYTEA NOT NULL,
    PRIMARY KEY (store_id, room_id, session_id)
);
CREATE INDEX crypto_inbound_group_sessions_by_device
    ON crypto_inbound_group_sessions (store_id, sender_key, sender_data_type, session_id);

-- Our current Megolm session per room.
CREATE TABLE crypto_outbound_group_sessions (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    pickle BYTEA NOT NULL,
    PRIMARY KEY (store_id, room_id)
);

-- Other users' devices and identities as /keys/query returned them.
CREATE TABLE crypto_devices (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store_id, user_id, device_id)
);

CREATE TABLE crypto_identities (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store_id, user_id)
);

-- Users whose device lists the machine follows; `dirty` = to be re-queried.
CREATE TABLE crypto_tracked_users (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    dirty BOOLEAN NOT NULL,
    PRIMARY KEY (store_id, user_id)
);

-- Outgoing secret / room key requests.
CREATE TABLE crypto_secret_requests (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    request_id TEXT NOT NULL,
    sent_out BOOLEAN NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store_id, request_id)
);

-- Secrets received over to-device, until the machine takes them.
-- `secret_hash` (keyed by the store cipher) makes a repeated secret one row.
CREATE TABLE crypto_secrets_inbox (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    secret_name TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    secret BYTEA NOT NULL,
    PRIMARY KEY (store_id, secret_name, secret_hash)
);

-- m.room_key.withheld notices per room and session.
CREATE TABLE crypto_withheld_sessions (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store_id, room_id, session_id)
);

-- Per-room encryption settings (algorithm, rotation, only-trusted).
CREATE TABLE crypto_room_settings (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store_id, room_id)
);

-- MSC4268 room key bundles (history shared on invite).
CREATE TABLE crypto_received_room_key_bundles (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    sender_user_id TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store_id, room_id, sender_user_id)
);

CREATE TABLE crypto_rooms_pending_key_bundle (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store_id, room_id)
);

CREATE TABLE crypto_room_key_backups_downloaded (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    PRIMARY KEY (store_id, room_id)
);

-- The SDK's cross-process leases.
CREATE TABLE crypto_lease_locks (
    store_id BIGINT NOT NULL REFERENCES crypto_stores ON DELETE CASCADE,
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    generation BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (store_id, name)
);
