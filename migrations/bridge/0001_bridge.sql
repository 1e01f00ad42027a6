-- The KIM bridge's own database (never the homeserver's): applied by
-- `kim-bridge run` at start. The homeserver's migrator reads only the files
-- of migrations/ itself, not this folder.

-- Appservice transactions taken in: a repeated id is answered 200 without
-- doing its work again.
CREATE TABLE appservice_txns (
    txn_id TEXT PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Work from transactions not handled yet, in arrival order. `kind`:
-- 'timeline' (one room event), 'crypto' (to-device messages, device lists
-- and key counts of one transaction, for the bridge's devices).
CREATE TABLE incoming_events (
    id BIGSERIAL PRIMARY KEY,
    txn_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('timeline', 'crypto')),
    body JSONB NOT NULL
);

-- One Matrix user per KIM address.
CREATE TABLE ghosts (
    user_id TEXT PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    displayname TEXT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A portal: one room, one KIM conversation with the addresses in it.
CREATE TABLE portals (
    room_id TEXT PRIMARY KEY,
    -- The staff member who added the first address (the bot for the triage room).
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE portal_addresses (
    room_id TEXT NOT NULL REFERENCES portals ON DELETE CASCADE,
    address TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, address)
);
CREATE INDEX portal_addresses_by_address ON portal_addresses (address, added_at DESC);

-- Matrix event ↔ mail, both ways. `message_id` without angle brackets.
-- Outbound states: queued, sent, failed; inbound: posted.
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT UNIQUE,
    direction TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed', 'posted')),
    failure TEXT,
    -- The Message-IDs this one refers to (its In-Reply-To first), for References.
    refs TEXT[] NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Mails to send: one per room message, retried with backoff until sent or
-- failed for good.
CREATE TABLE outbound_queue (
    message_id TEXT PRIMARY KEY REFERENCES messages,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    content JSONB NOT NULL,
    recipients TEXT[] NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error TEXT
);
CREATE INDEX outbound_queue_due ON outbound_queue (next_attempt_at);

-- Mails of the mailbox by POP3 UIDL: fetched (recorded before RETR, with
-- the room it goes to once decided) → posted (its events are in the room)
-- → deleted (DELE done). 'ignored': nothing to post (no portal, no triage
-- room), left on the server.
CREATE TABLE inbound_mails (
    uidl TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('fetched', 'posted', 'deleted', 'ignored')),
    message_id TEXT,
    room_id TEXT,
    event_id TEXT,
    note TEXT,
    fetched_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The direct chat of a user with the bot, where `!kim` commands go.
CREATE TABLE management_rooms (
    room_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL
);
