-- The media repository's metadata. The bytes live in the content store
-- (`homeserver::media::store`), not here.
--
--------------------------------------------------------------- media-scoped
-- Media belongs to no room and outlives its uploader's account, so these
-- tables form a scope of their own, keyed by `media_id` (see
-- `Db::media_shard`). No foreign keys to the other scopes.

-- One row per media id. A row made by `POST /_matrix/media/v1/create` has
-- no content yet (`uploaded_ts`, `size`, `sha256` NULL) and is reserved for
-- its uploader until `expires_ts`; uploading fills the content columns and
-- clears `expires_ts`.
CREATE TABLE media (
    media_id     TEXT PRIMARY KEY,
    uploader     TEXT NOT NULL,
    -- As the uploader sent it; NULL means none was given.
    content_type TEXT,
    filename     TEXT,
    size         BIGINT,
    sha256       BYTEA,
    created_ts   BIGINT NOT NULL,
    uploaded_ts  BIGINT,
    expires_ts   BIGINT,
    CHECK ((uploaded_ts IS NULL) = (size IS NULL)),
    CHECK (uploaded_ts IS NOT NULL OR expires_ts IS NOT NULL)
);
-- Counting a user's pending reservations and sweeping expired ones.
CREATE INDEX media_pending ON media (uploader, expires_ts) WHERE uploaded_ts IS NULL;

-- Thumbnails generated on demand, one per offered size (the box, not the
-- pixel size of the result, which keeps the aspect ratio when scaling).
CREATE TABLE media_thumbnails (
    media_id     TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    method       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (media_id, width, height, method)
);
