-- Sharding: several physical databases, each with this whole schema.

-- Which database of the deployment this is (its index in the config's list,
-- which is also its place in sync tokens). Written once, at the first start;
-- a start with the databases listed in another order refuses to run.
CREATE TABLE shard_identity (
    singleton      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    database_index INTEGER NOT NULL
);

-- The shard map, kept in database 0 only: logical shard (0..255, from the
-- hash of a room id, user id, alias or media id) -> physical database.
CREATE TABLE shard_map (
    logical_shard  INTEGER PRIMARY KEY CHECK (logical_shard BETWEEN 0 AND 255),
    database_index INTEGER NOT NULL
);

-- The membership outbox: a local user's membership change is committed on
-- the room's database with index_pending set, then copied into the user's
-- `user_rooms` on the user's database, then cleared. A crash in between
-- leaves the flag, and the repair task finishes the copy.
ALTER TABLE room_memberships ADD COLUMN index_pending BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE room_memberships ADD COLUMN changed_ts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX room_memberships_index_pending ON room_memberships (changed_ts) WHERE index_pending;

-- `user_rooms.stream_pos` is a position of the user's database (when the
-- index changed, for /sync); `room_pos` is the member event's position in
-- the room's database (where the membership is in the room's history).
-- Until now both lived in one database, so they coincide.
ALTER TABLE user_rooms ADD COLUMN room_pos BIGINT;
UPDATE user_rooms SET room_pos = stream_pos;
ALTER TABLE user_rooms ALTER COLUMN room_pos SET NOT NULL;

-- When the membership changed (the member event's origin_server_ts): the
-- recency of rooms the user is not joined to, for sliding sync's ordering.
-- Stream positions of different databases cannot be compared; times can.
ALTER TABLE user_rooms ADD COLUMN membership_ts BIGINT NOT NULL DEFAULT 0;
UPDATE user_rooms u SET membership_ts = e.origin_server_ts
    FROM events e WHERE e.room_id = u.room_id AND e.event_id = u.event_id;
