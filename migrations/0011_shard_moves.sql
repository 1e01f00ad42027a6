-- Moving a logical shard to another database while the server runs
-- (`homeserver move-shard`, ARCHITECTURE.md "Sharding").

-- The logical shard of an id, as `storage::shard_map::logical_shard`
-- computes it: the first two bytes of its SHA-256, big-endian, modulo 256,
-- which is the second byte. For selecting a shard's rows and for fences.
CREATE FUNCTION logical_shard(id TEXT) RETURNS INTEGER
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT get_byte(sha256(convert_to(id, 'UTF8')), 1) $$;

-- Database 0 only: the completed moves. Each makes a new map epoch; a sync
-- token names the epoch it was issued under, and the moves after it say
-- which database's position counts a moved room's or user's rows.
CREATE TABLE shard_moves (
    epoch         BIGINT PRIMARY KEY,
    logical_shard INTEGER NOT NULL CHECK (logical_shard BETWEEN 0 AND 255),
    from_database INTEGER NOT NULL,
    to_database   INTEGER NOT NULL,
    switched_ts   BIGINT NOT NULL
);

-- Database 0 only: the map epoch each running worker uses, written by the
-- worker's map follower. A move deletes a shard's old rows only once every
-- worker seen lately uses the new map.
CREATE TABLE shard_map_readers (
    worker_id TEXT PRIMARY KEY,
    epoch     BIGINT NOT NULL,
    seen_ts   BIGINT NOT NULL
);

-- Every database: logical shards whose rows here must not change (moving
-- away, or moved away). Triggers generated from this list refuse writes to
-- them with SQLSTATE HS001, so a worker still on the old map cannot write
-- where nobody will read. The move itself writes with
-- `homeserver.shard_move` set, which the triggers let through.
CREATE TABLE shard_fences (
    logical_shard INTEGER PRIMARY KEY CHECK (logical_shard BETWEEN 0 AND 255)
);

CREATE FUNCTION refuse_fenced_write() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF current_setting('homeserver.shard_move', true) = 'on' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'logical shard moved to another database (table %)', TG_TABLE_NAME
        USING ERRCODE = 'HS001';
END
$$;
