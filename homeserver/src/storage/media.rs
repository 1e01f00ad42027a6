//! `media`, `media_thumbnails`: what the media repository knows about each
//! upload, on the media shard (`Db::media_shard`). The bytes themselves are
//! in the content store.

use sqlx::{FromRow, PgExecutor};

/// One media id: uploaded content, or a reservation from `/create`.
#[derive(Clone, Debug, FromRow)]
pub struct MediaRow {
    pub media_id: String,
    pub uploader: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// `None` until the content is uploaded.
    pub size: Option<i64>,
    pub uploaded_ts: Option<i64>,
    /// When a reservation lapses; `None` once uploaded.
    pub expires_ts: Option<i64>,
}

impl MediaRow {
    /// Whether the id names content or a reservation still open at `now`;
    /// a lapsed reservation is as good as unknown.
    pub fn is_live(&self, now: i64) -> bool {
        self.uploaded_ts.is_some() || self.expires_ts.is_some_and(|expires| expires > now)
    }
}

/// The content columns written when bytes arrive.
pub struct Content<'a> {
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub size: i64,
    pub sha256: &'a [u8],
}

/// A cached thumbnail of one offered size.
#[derive(Clone, Debug, FromRow)]
pub struct ThumbnailRow {
    pub content_type: String,
    pub size: i64,
}

/// Records a finished upload.
pub async fn insert_uploaded(db: impl PgExecutor<'_>, media_id: &str, uploader: &str, content: &Content<'_>) -> sqlx::Result<()> {
    let now = super::now_ms();
    sqlx::query(
        "INSERT INTO media (media_id, uploader, content_type, filename, size, sha256, created_ts, uploaded_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(media_id)
    .bind(uploader)
    .bind(content.content_type)
    .bind(content.filename)
    .bind(content.size)
    .bind(content.sha256)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Reserves `media_id` for `uploader` until `expires_ts`, unless they
/// already hold `max_pending` open reservations; returns whether it was
/// reserved. One statement, so a burst of requests cannot slip far past
/// the limit.
pub async fn reserve(db: impl PgExecutor<'_>, media_id: &str, uploader: &str, expires_ts: i64, max_pending: i64) -> sqlx::Result<bool> {
    let now = super::now_ms();
    let inserted = sqlx::query(
        "INSERT INTO media (media_id, uploader, created_ts, expires_ts)
         SELECT $1, $2, $3, $4
         WHERE (SELECT COUNT(*) FROM media WHERE uploader = $2 AND uploaded_ts IS NULL AND expires_ts > $3) < $5",
    )
    .bind(media_id)
    .bind(uploader)
    .bind(now)
    .bind(expires_ts)
    .bind(max_pending)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Deletes reservations that lapsed without content.
pub async fn delete_expired_reservations(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let deleted = sqlx::query("DELETE FROM media WHERE uploaded_ts IS NULL AND expires_ts <= $1")
        .bind(super::now_ms())
        .execute(db)
        .await?;
    Ok(deleted.rows_affected())
}

/// Fills a reservation with its content; false when it is gone or already
/// filled.
pub async fn fill_reservation(db: impl PgExecutor<'_>, media_id: &str, content: &Content<'_>) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE media SET content_type = $2, filename = $3, size = $4, sha256 = $5, uploaded_ts = $6, expires_ts = NULL
         WHERE media_id = $1 AND uploaded_ts IS NULL",
    )
    .bind(media_id)
    .bind(content.content_type)
    .bind(content.filename)
    .bind(content.size)
    .bind(content.sha256)
    .bind(super::now_ms())
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub async fn get(db: impl PgExecutor<'_>, media_id: &str) -> sqlx::Result<Option<MediaRow>> {
    sqlx::query_as(
        "SELECT media_id, uploader, content_type, filename, size, uploaded_ts, expires_ts FROM media WHERE media_id = $1",
    )
    .bind(media_id)
    .fetch_optional(db)
    .await
}

pub async fn thumbnail(db: impl PgExecutor<'_>, media_id: &str, width: u32, height: u32, method: &str) -> sqlx::Result<Option<ThumbnailRow>> {
    sqlx::query_as(
        "SELECT content_type, size FROM media_thumbnails WHERE media_id = $1 AND width = $2 AND height = $3 AND method = $4",
    )
    .bind(media_id)
    .bind(i64::from(width))
    .bind(i64::from(height))
    .bind(method)
    .fetch_optional(db)
    .await
}

/// Records a stored thumbnail; a concurrent request may have recorded the
/// same one first, which is fine: both generated the same image.
pub async fn insert_thumbnail(db: impl PgExecutor<'_>, media_id: &str, width: u32, height: u32, method: &str, content_type: &str, size: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO media_thumbnails (media_id, width, height, method, content_type, size, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (media_id, width, height, method) DO NOTHING",
    )
    .bind(media_id)
    .bind(i64::from(width))
    .bind(i64::from(height))
    .bind(method)
    .bind(content_type)
    .bind(size)
    .bind(super::now_ms())
    .execute(db)
    .await?;
    Ok(())
}
