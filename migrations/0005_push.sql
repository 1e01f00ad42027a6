-- Push: pushers (user-scoped); the push actions of each event for each
-- recipient and the queue of notifications for push gateways (room-scoped);
-- the push processor's place in the events stream (one row per database,
-- like `stream_head`). See ARCHITECTURE.md, "Push".

---------------------------------------------------------------- user-scoped

-- A user's pushers, as set with `POST /pushers/set`. `(app_id, pushkey)` is
-- unique per user. `device_id` is the device that set it: logging that
-- device out removes its pushers, so a phone that signed out gets no pushes.
CREATE TABLE pushers (
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    -- The pusher's `data` as the client sent it (`url`, `format`, …).
    data                JSONB NOT NULL,
    device_id           TEXT NOT NULL,
    -- When the pushkey was last set, in ms (sent to the gateway in seconds).
    pushkey_ts          BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_device ON pushers (user_id, device_id);
-- `append: false` removes the same pushkey from other users' pushers.
CREATE INDEX pushers_pushkey ON pushers (app_id, pushkey);

---------------------------------------------------------------- room-scoped

-- What the recipient's push rules said about an event, for events that
-- notify or highlight. /sync counts the rows after the user's read receipt;
-- a receipt deletes the rows it covers, leaving the room deletes them all.
CREATE TABLE event_push_actions (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    -- The event's stream position, compared with the read receipt's.
    event_pos  BIGINT NOT NULL,
    event_id   TEXT NOT NULL,
    notify     BOOLEAN NOT NULL,
    highlight  BOOLEAN NOT NULL,
    -- The position the row was written at: the counts changed then, which
    -- is news for the user's /sync.
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, event_pos)
);
-- A user's rows across rooms: what changed since a sync, the badge count.
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_pos);

-- Notifications to deliver to push gateways, one per event and pusher.
-- Rows are written in the same transaction that moves `push_cursor`, and
-- deleted only once the gateway accepted (or refused for good), so a crash
-- loses none.
CREATE TABLE push_queue (
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    app_id          TEXT NOT NULL,
    pushkey         TEXT NOT NULL,
    -- The `set_tweak` actions of the matching rule.
    tweaks          JSONB NOT NULL,
    high_priority   BOOLEAN NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id, user_id, app_id, pushkey)
);
CREATE INDEX push_queue_due ON push_queue (next_attempt_ts);

----------------------------------------------------------- one per database

-- The newest stream position the push processor has evaluated. It starts
-- at the current head: history from before push existed is not pushed.
CREATE TABLE push_cursor (
    id  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    pos BIGINT NOT NULL
);
INSERT INTO push_cursor (pos) SELECT pos FROM stream_head;

-- The processor tails this database's events in stream order.
CREATE INDEX events_stream ON events (stream_pos);
