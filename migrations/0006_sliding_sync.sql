-- Simplified sliding sync (MSC4186): what each connection of a device was
-- sent, so that `initial` and the deltas of the next response are right on
-- any worker and after restarts (see ARCHITECTURE.md, "Sliding sync").
-- User-scoped: every row is keyed by the syncing user.

-- The positions a connection may continue from, one per response that
-- changed what the connection was sent; `pos` names one of them.
-- `list_counts` are the list sizes that response told the client.
CREATE TABLE sliding_sync_positions (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    conn_id     TEXT NOT NULL,
    position    BIGINT GENERATED ALWAYS AS IDENTITY,
    list_counts JSONB NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, position)
);

-- The rooms a connection was sent, as of the response at `position` that
-- sent each last: the membership, the stream position its timeline and
-- state reached, and the `required_state` and `timeline_limit` it was sent
-- with (so a widened request sends what the client lacks).
CREATE TABLE sliding_sync_rooms (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    conn_id        TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    position       BIGINT NOT NULL,
    membership     TEXT NOT NULL,
    sent_upto      BIGINT NOT NULL,
    required_state JSONB NOT NULL,
    timeline_limit BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, room_id)
);
