-- Server-side key backups: a user's backup versions and the encrypted room
-- keys stored in them. Both tables are user-scoped and live on the user's
-- shard; `room_id` is part of a backup's key, not a reference to the room's
-- rows (which may live on another database), so it has no foreign key.

-- One row per backup version the user created. Versions are numbered per
-- user; a deleted version stays as a tombstone so its number is never
-- handed out again (clients must never mistake a new backup for an old one).
CREATE TABLE key_backup_versions (
    user_id   TEXT    NOT NULL,
    version   BIGINT  NOT NULL CHECK (version > 0),
    algorithm TEXT    NOT NULL,
    -- As the client sent it: signed by the client, verified only by clients.
    auth_data JSONB   NOT NULL,
    -- Bumped by every transaction that changes the version's keys; the
    -- `etag` clients compare to notice other devices' changes.
    etag      BIGINT  NOT NULL DEFAULT 0,
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- The one kept key per megolm session and version (the spec's "better key"
-- wins on upload). `session_data` is encrypted for the backup key; the
-- ranking fields beside it are what the server compares.
CREATE TABLE key_backup_sessions (
    user_id             TEXT    NOT NULL,
    version             BIGINT  NOT NULL,
    room_id             TEXT    NOT NULL,
    session_id          TEXT    NOT NULL,
    first_message_index BIGINT  NOT NULL CHECK (first_message_index >= 0),
    forwarded_count     BIGINT  NOT NULL CHECK (forwarded_count >= 0),
    is_verified         BOOLEAN NOT NULL,
    session_data        JSONB   NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES key_backup_versions (user_id, version)
);
