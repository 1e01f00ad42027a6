-- Core schema of the homeserver.
--
-- Sharding rule (see ARCHITECTURE.md): every table is keyed by exactly one
-- of `user_id` (user-scoped), `room_id` (room-scoped) or `alias`
-- (alias-scoped). There are no foreign keys between tables of different
-- scopes, so a logical shard's rows can be moved to another database.

-- One row per database: the head of this database's stream. Every write that
-- a /sync must see takes its position from here (`UPDATE ... RETURNING`), so
-- positions commit in order and a reader may treat `pos` as "everything up to
-- here is visible".
CREATE TABLE stream_head (
    id  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    pos BIGINT NOT NULL
);
INSERT INTO stream_head (pos) VALUES (0);

---------------------------------------------------------------- user-scoped

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    displayname   TEXT,
    avatar_url    TEXT,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts    BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 of the token; the token itself names the user
-- (see `auth::tokens`), so the lookup goes to the user's shard.
CREATE TABLE access_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE login_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- Global (room_id = '') and per-room account data of a user.
CREATE TABLE account_data (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL DEFAULT '',
    data_type  TEXT NOT NULL,
    content    JSONB NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

CREATE TABLE filters (
    user_id   TEXT NOT NULL,
    filter_id BIGSERIAL,
    filter    JSONB NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- The user's push rule set; absent means the server default rule set.
CREATE TABLE push_rules (
    user_id TEXT PRIMARY KEY,
    ruleset JSONB NOT NULL
);

-- Index "rooms of a user": a copy of the membership kept on the user's
-- shard. The room's shard (`room_memberships`) is authoritative.
CREATE TABLE user_rooms (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    forgotten  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, room_id)
);
CREATE INDEX user_rooms_stream ON user_rooms (user_id, stream_pos);

CREATE TABLE presence (
    user_id        TEXT PRIMARY KEY,
    presence       TEXT NOT NULL,
    status_msg     TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_pos     BIGINT NOT NULL
);

-- User-interactive auth sessions; stored so any worker can continue them.
CREATE TABLE uiaa_sessions (
    session_id TEXT PRIMARY KEY,
    user_id    TEXT,
    completed  JSONB NOT NULL DEFAULT '[]',
    created_ts BIGINT NOT NULL
);

CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    completed    INTEGER NOT NULL DEFAULT 0,
    expiry_ts    BIGINT
);

---------------------------------------------------------------- room-scoped

CREATE TABLE rooms (
    room_id        TEXT PRIMARY KEY,
    room_version   TEXT NOT NULL,
    creator        TEXT NOT NULL,
    -- The room's single forward extremity: the last event. Rooms are linear
    -- while there is no federation (see ARCHITECTURE.md).
    last_event_id  TEXT,
    depth          BIGINT NOT NULL DEFAULT 0,
    last_stream_pos BIGINT NOT NULL DEFAULT 0,
    published      BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts     BIGINT NOT NULL
);

CREATE TABLE events (
    room_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stream_pos       BIGINT NOT NULL,
    depth            BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- The full PDU as signed; redactions replace it with the redacted form.
    pdu              JSONB NOT NULL,
    -- `unsigned` data computed at write time (prev_content, replaces_state).
    unsigned_data    JSONB,
    redacted_by      TEXT,
    -- Transaction id of the client that sent it (for idempotent sends and
    -- `unsigned.transaction_id`).
    txn_device_id    TEXT,
    txn_id           TEXT,
    PRIMARY KEY (room_id, event_id)
);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE INDEX events_room_stream ON events (room_id, stream_pos);
CREATE INDEX events_room_state ON events (room_id, event_type, state_key, stream_pos)
    WHERE state_key IS NOT NULL;
CREATE UNIQUE INDEX events_txn ON events (room_id, sender, txn_device_id, txn_id)
    WHERE txn_id IS NOT NULL;

-- Current state of each room.
CREATE TABLE room_state (
    room_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

-- Current membership of each user in each room (authoritative copy).
CREATE TABLE room_memberships (
    room_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    membership  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    stream_pos  BIGINT NOT NULL,
    displayname TEXT,
    avatar_url  TEXT,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_joined ON room_memberships (room_id) WHERE membership = 'join';

CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    thread_id    TEXT NOT NULL DEFAULT '',
    event_id     TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_pos);

--------------------------------------------------------------- alias-scoped

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Nonces of the shared-secret admin registration API, single use.
CREATE TABLE admin_register_nonces (
    nonce      TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);
