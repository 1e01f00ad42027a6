-- End-to-end encryption: device keys, one-time and fallback keys,
-- cross-signing keys and signatures, device-list changes, to-device
-- messages. All user-scoped (the user who owns the keys or receives the
-- message), so they live on that user's shard.

CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    keys      JSONB NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  JSONB NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per device and algorithm; `used` once it was claimed.
CREATE TABLE fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  JSONB NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- master, self_signing, user_signing.
CREATE TABLE cross_signing_keys (
    user_id  TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json JSONB NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures a user made on other users' master keys with their
-- user-signing key; only the signer sees them (on the signer's shard).
CREATE TABLE user_signatures (
    signer_user_id TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signatures     JSONB NOT NULL,
    PRIMARY KEY (signer_user_id, target_user_id, target_key_id)
);

-- The stream position of the last change to a user's devices or keys.
CREATE TABLE device_list_updates (
    user_id    TEXT PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX device_list_updates_stream ON device_list_updates (stream_pos);

-- To-device messages waiting for their device; deleted once the device
-- acknowledges them with a later sync token.
CREATE TABLE to_device_messages (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    seq        INTEGER NOT NULL,
    message    JSONB NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_pos, seq)
);

-- Transaction ids of `sendToDevice`, on the sender's shard.
CREATE TABLE to_device_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
