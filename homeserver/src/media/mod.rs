//! The media repository: media ids, uploads (at once, or reserved first and
//! filled later), downloads and thumbnails. Metadata is in PostgreSQL
//! (`storage::media`), bytes in a [`ContentStore`]; the HTTP endpoints are
//! in `client_api::media`.
//!
//! Only local media exists: without federation a media id of another
//! server is simply unknown.

pub mod store;
pub mod thumbnail;

use std::{
    io,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use http::StatusCode;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedMxcUri, OwnedServerName, ServerName, UInt, UserId,
    api::error::{ErrorKind, LimitExceededErrorData},
};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use self::{
    store::{ByteStream, ContentKey, ContentStore, FilesystemStore},
    thumbnail::ThumbnailError,
};
use crate::{
    config::{MediaConfig, ThumbnailMethod, ThumbnailSize},
    http::{ApiError, ApiResult},
    storage::{self, Db, media::MediaRow},
};

/// Length of generated media ids: 143 random bits, unguessable, since
/// knowing an id is all it takes to download the media.
const MEDIA_ID_LEN: usize = 24;
/// Longest media id accepted from a client (ours are shorter; the bound
/// keeps junk out of queries and logs).
const MAX_MEDIA_ID_LEN: usize = 255;
/// Longest content type and file name stored.
const MAX_CONTENT_TYPE_LEN: usize = 255;
const MAX_FILENAME_LEN: usize = 255;
/// Longest a download waits for a reserved id's content, whatever the
/// client asks: a waiting request holds a connection.
const MAX_UPLOAD_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting download looks for the content. Polling the
/// database works across workers; reserved-but-empty ids are rare.
const UPLOAD_POLL: Duration = Duration::from_millis(250);

/// A media id of this server, validated: `[A-Za-z0-9_-]`, as the spec
/// recommends, which also makes it safe as a file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaId(String);

impl MediaId {
    fn generate() -> Self {
        Self(crate::auth::tokens::random_string(MEDIA_ID_LEN))
    }

    pub fn parse(id: &str) -> Option<Self> {
        let valid = !id.is_empty()
            && id.len() <= MAX_MEDIA_ID_LEN
            && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        valid.then(|| Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An upload as it arrives.
pub struct Upload<'a> {
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
    /// The `Content-Length` the client announced, to refuse an oversize
    /// upload before reading it.
    pub announced_size: Option<u64>,
    pub body: ByteStream<'a>,
}

/// Media (or a thumbnail) ready to send.
pub struct Content {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub body: ByteStream<'static>,
}

/// Why an upload stream was cut off, carried through the store's
/// `io::Error` (see [`ContentStore::put`]).
#[derive(Debug, thiserror::Error)]
enum UploadAbort {
    #[error("the upload is larger than allowed")]
    TooLarge,
    #[error("reading the upload: {0}")]
    Body(io::Error),
}

/// The media repository of one worker.
pub struct MediaRepo {
    db: Db,
    store: Box<dyn ContentStore>,
    config: MediaConfig,
    server_name: OwnedServerName,
    /// Bounds the thumbnail renders in flight: each holds a decoded image
    /// (up to hundreds of MiB) and a core, so excess requests queue here.
    rendering: Semaphore,
}

impl MediaRepo {
    /// The repository with the filesystem store the config names.
    pub fn open(config: &MediaConfig, db: Db, server_name: OwnedServerName) -> anyhow::Result<Self> {
        let store = FilesystemStore::open(&config.store_path)
            .with_context(|| format!("opening the media store {}", config.store_path.display()))?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self { db, store: Box::new(store), config: config.clone(), server_name, rendering: Semaphore::new(cores.min(4)) })
    }

    /// Largest upload accepted, in bytes (`m.upload.size`).
    pub fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    /// Stores an upload under a new media id (`POST /upload`).
    pub async fn upload(&self, uploader: &UserId, upload: Upload<'_>) -> ApiResult<OwnedMxcUri> {
        let (content_type, filename) = checked_metadata(upload.content_type, upload.filename)?;
        let media_id = MediaId::generate();
        let stored = self.store_original(&media_id, upload.announced_size, upload.body).await?;
        let content = storage::media::Content { content_type, filename, size: stored.size, sha256: &stored.sha256 };
        let db = self.db.media_shard(media_id.as_str());
        if let Err(err) = storage::media::insert_uploaded(db, media_id.as_str(), uploader.as_str(), &content).await {
            self.discard(&media_id).await;
            return Err(err.into());
        }
        Ok(self.mxc_uri(&media_id))
    }

    /// Reserves a media id for `uploader` to fill later (`POST /create`);
    /// returns it and when it lapses unused.
    pub async fn reserve(&self, uploader: &UserId) -> ApiResult<(OwnedMxcUri, MilliSecondsSinceUnixEpoch)> {
        // A user's open reservations are counted in one statement, so they
        // live on the user's database: draw ids until one hashes there (as
        // many tries as there are databases, on average).
        let home = self.db.user_shard_index(uploader);
        let media_id = std::iter::repeat_with(MediaId::generate)
            .take(10_000)
            .find(|id| self.db.media_shard_index(id.as_str()) == home)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no media id on the uploader's database")))?;
        let db = self.db.media_shard(media_id.as_str());
        // Lapsed reservations are swept here, where new ones are made, so
        // they cannot pile up without a background job.
        storage::media::delete_expired_reservations(db).await?;
        let expiry_ms = i64::try_from(self.config.unused_upload_expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let expires_ts = storage::now_ms().saturating_add(expiry_ms);
        let max_pending = i64::from(self.config.max_pending_uploads);
        if !storage::media::reserve(db, media_id.as_str(), uploader.as_str(), expires_ts, max_pending).await? {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::LimitExceeded(LimitExceededErrorData::new()),
                format!("At most {max_pending} media ids may wait for their content"),
            ));
        }
        let expires = MilliSecondsSinceUnixEpoch(UInt::try_from(expires_ts).unwrap_or(UInt::MAX));
        Ok((self.mxc_uri(&media_id), expires))
    }

    /// Fills a reserved media id (`PUT /upload/{serverName}/{mediaId}`):
    /// only its creator may, and only once.
    pub async fn fill(&self, uploader: &UserId, server_name: &ServerName, media_id: &str, upload: Upload<'_>) -> ApiResult<()> {
        let media_id = self.local_id(server_name, media_id)?;
        let db = self.db.media_shard(media_id.as_str());
        let row = storage::media::get(db, media_id.as_str())
            .await?
            .filter(|row| row.is_live(storage::now_ms()))
            .ok_or_else(unknown_media)?;
        if row.uploader != uploader.as_str() {
            return Err(ApiError::forbidden("Only the creator of a media id may upload its content"));
        }
        if row.uploaded_ts.is_some() {
            return Err(cannot_overwrite());
        }
        let (content_type, filename) = checked_metadata(upload.content_type, upload.filename)?;
        // Of two uploads racing to this id, the store lets exactly one in.
        let stored = self.store_original(&media_id, upload.announced_size, upload.body).await?;
        let content = storage::media::Content { content_type, filename, size: stored.size, sha256: &stored.sha256 };
        match storage::media::fill_reservation(db, media_id.as_str(), &content).await {
            Ok(true) => Ok(()),
            // The reservation lapsed and was swept while the bytes came in.
            Ok(false) => {
                self.discard(&media_id).await;
                Err(unknown_media())
            }
            Err(err) => {
                self.discard(&media_id).await;
                Err(err.into())
            }
        }
    }

    /// The content of a media id, waiting up to `timeout` for a reserved
    /// one to be filled.
    pub async fn content(&self, server_name: &ServerName, media_id: &str, timeout: Duration) -> ApiResult<Content> {
        let media_id = self.local_id(server_name, media_id)?;
        let (row, size) = self.wait_for_upload(&media_id, timeout).await?;
        let body = self.read(&ContentKey::original(&media_id)).await?;
        Ok(Content { content_type: row.content_type, filename: row.filename, size, body })
    }

    /// A thumbnail of at least `width`×`height`, made on first request and
    /// kept in the store.
    pub async fn thumbnail(&self, server_name: &ServerName, media_id: &str, width: u32, height: u32, method: ThumbnailMethod, timeout: Duration) -> ApiResult<Content> {
        let media_id = self.local_id(server_name, media_id)?;
        let (row, original_size) = self.wait_for_upload(&media_id, timeout).await?;
        if !thumbnail::is_thumbnailable(row.content_type.as_deref()) {
            return Err(cannot_thumbnail("Thumbnails are made of PNG, JPEG, GIF and WebP images only"));
        }
        let Some(size) = thumbnail::choose(&self.config.thumbnail_sizes, width, height, method) else {
            // Larger than every offered size: the original is the one
            // image the server has that is not smaller than asked.
            let body = self.read(&ContentKey::original(&media_id)).await?;
            return Ok(Content { content_type: row.content_type, filename: None, size: original_size, body });
        };

        let key = ContentKey::thumbnail(&media_id, &size);
        let db = self.db.media_shard(media_id.as_str());
        let method = size.method.as_str();
        if let Some(cached) = storage::media::thumbnail(db, media_id.as_str(), size.width, size.height, method).await?
            && let Some(body) = self.store.get(&key).await.map_err(store_error)?
        {
            let size = u64::try_from(cached.size).unwrap_or_default();
            return Ok(Content { content_type: Some(cached.content_type), filename: None, size, body });
        }

        let rendered = self.render(&media_id, original_size, size).await?;
        let length = rendered.bytes.len() as u64;
        // A thumbnail that cannot be cached is still a good answer.
        if let Err(err) = self.cache_thumbnail(&media_id, &key, &size, &rendered).await {
            tracing::warn!(media_id = media_id.as_str(), error = %format!("{err:#}"), "thumbnail not cached");
        }
        let body = futures::stream::once(futures::future::ready(Ok(rendered.bytes))).boxed();
        Ok(Content { content_type: Some(rendered.content_type.to_owned()), filename: None, size: length, body })
    }

    fn mxc_uri(&self, media_id: &MediaId) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{}", self.server_name, media_id.as_str()))
    }

    /// The id, if it can name media here: other servers' media and ids we
    /// would never have issued are unknown (404).
    fn local_id(&self, server_name: &ServerName, media_id: &str) -> ApiResult<MediaId> {
        if server_name != self.server_name {
            return Err(ApiError::not_found("Media of other servers is not available (no federation)"));
        }
        MediaId::parse(media_id).ok_or_else(unknown_media)
    }

    /// Streams an upload into the store, enforcing the size limit and
    /// hashing on the way.
    async fn store_original(&self, media_id: &MediaId, announced_size: Option<u64>, body: ByteStream<'_>) -> ApiResult<Stored> {
        let max = self.config.max_upload_bytes;
        if announced_size.is_some_and(|size| size > max) {
            return Err(too_large(max));
        }
        let mut size = 0u64;
        let mut sha256 = Sha256::new();
        let counted = body.map(|chunk| {
            let chunk = chunk.map_err(|err| io::Error::other(UploadAbort::Body(err)))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(io::Error::other(UploadAbort::TooLarge));
            }
            sha256.update(&chunk);
            Ok(chunk)
        });
        let stored = self.store.put(&ContentKey::original(media_id), counted.boxed()).await;
        match stored {
            Ok(()) => Ok(Stored { size: i64::try_from(size).unwrap_or(i64::MAX), sha256: sha256.finalize().to_vec() }),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(cannot_overwrite()),
            Err(err) => match err.get_ref().and_then(|inner| inner.downcast_ref::<UploadAbort>()) {
                Some(UploadAbort::TooLarge) => Err(too_large(max)),
                Some(UploadAbort::Body(cause)) => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::Unknown,
                    format!("Could not read the upload: {cause}"),
                )),
                None => Err(store_error(err)),
            },
        }
    }

    /// Removes content whose metadata could not be recorded, so no
    /// unreachable bytes stay behind; failing that, it is only logged.
    async fn discard(&self, media_id: &MediaId) {
        if let Err(err) = self.store.delete(&ContentKey::original(media_id)).await {
            tracing::warn!(media_id = media_id.as_str(), %err, "orphaned media content not deleted");
        }
    }

    /// The row of an uploaded media id and its size; a reserved one is
    /// polled until filled or `timeout` (504 `M_NOT_YET_UPLOADED`).
    async fn wait_for_upload(&self, media_id: &MediaId, timeout: Duration) -> ApiResult<(MediaRow, u64)> {
        let deadline = Instant::now() + timeout.min(MAX_UPLOAD_WAIT);
        let db = self.db.media_shard(media_id.as_str());
        loop {
            let row = storage::media::get(db, media_id.as_str())
                .await?
                .filter(|row| row.is_live(storage::now_ms()))
                .ok_or_else(unknown_media)?;
            if let (Some(_), Some(size)) = (row.uploaded_ts, row.size) {
                return Ok((row, u64::try_from(size).unwrap_or_default()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::NotYetUploaded,
                    "The media has not been uploaded yet",
                ));
            }
            tokio::time::sleep(left.min(UPLOAD_POLL)).await;
        }
    }

    /// A blob that the metadata says exists; its absence is data loss on
    /// our side, not the client's mistake.
    async fn read(&self, key: &ContentKey) -> ApiResult<ByteStream<'static>> {
        self.store
            .get(key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("media content {} is missing from the store", key.as_str())))
    }

    /// Renders a thumbnail, at most a few at a time (see `rendering`).
    async fn render(&self, media_id: &MediaId, original_size: u64, size: ThumbnailSize) -> ApiResult<thumbnail::Thumbnail> {
        let _permit = self.rendering.acquire().await.map_err(|err| ApiError::Internal(err.into()))?;
        let mut source = BytesMut::with_capacity(usize::try_from(original_size).unwrap_or_default());
        let mut body = self.read(&ContentKey::original(media_id)).await?;
        while let Some(chunk) = body.next().await {
            source.extend_from_slice(&chunk.map_err(store_error)?);
        }
        thumbnail::generate(source.freeze(), size).await.map_err(|err| match err {
            ThumbnailError::TooLarge => ApiError::too_large("The image is too large to thumbnail"),
            ThumbnailError::Unsupported(reason) => cannot_thumbnail(format!("Cannot thumbnail this media: {reason}")),
            ThumbnailError::Internal(_) => ApiError::Internal(err.into()),
        })
    }

    async fn cache_thumbnail(&self, media_id: &MediaId, key: &ContentKey, size: &ThumbnailSize, rendered: &thumbnail::Thumbnail) -> anyhow::Result<()> {
        let bytes: Bytes = rendered.bytes.clone();
        match self.store.put(key, futures::stream::once(futures::future::ready(Ok(bytes))).boxed()).await {
            // A concurrent request stored the same rendering first.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            other => other?,
        }
        let length = i64::try_from(rendered.bytes.len()).unwrap_or(i64::MAX);
        let db = self.db.media_shard(media_id.as_str());
        storage::media::insert_thumbnail(db, media_id.as_str(), size.width, size.height, size.method.as_str(), rendered.content_type, length).await?;
        Ok(())
    }
}

/// What the store holds after an upload.
struct Stored {
    size: i64,
    sha256: Vec<u8>,
}

/// The content type and file name as stored: empty means absent; too long
/// or (file names) with control characters is refused, since both end up
/// in response headers.
fn checked_metadata<'a>(content_type: Option<&'a str>, filename: Option<&'a str>) -> ApiResult<(Option<&'a str>, Option<&'a str>)> {
    let content_type = content_type.map(str::trim).filter(|value| !value.is_empty());
    if content_type.is_some_and(|value| value.len() > MAX_CONTENT_TYPE_LEN || http::HeaderValue::from_str(value).is_err()) {
        return Err(ApiError::invalid_param("Content-Type is not a valid media type"));
    }
    let filename = filename.filter(|name| !name.is_empty());
    if filename.is_some_and(|name| name.len() > MAX_FILENAME_LEN || name.chars().any(char::is_control)) {
        return Err(ApiError::invalid_param(format!("filename must be at most {MAX_FILENAME_LEN} bytes without control characters")));
    }
    Ok((content_type, filename))
}

/// The media type of a `Content-Type` value without parameters, lowercase:
/// `Image/PNG; foo=bar` → `image/png`.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn unknown_media() -> ApiError {
    ApiError::not_found("Unknown media")
}

fn cannot_overwrite() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorKind::CannotOverwriteMedia, "This media id already has content")
}

fn too_large(max: u64) -> ApiError {
    ApiError::too_large(format!("Uploads are limited to {max} bytes"))
}

/// The spec's answer for content the server cannot thumbnail: 400
/// `M_UNKNOWN`.
fn cannot_thumbnail(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
}

fn store_error(err: io::Error) -> ApiError {
    ApiError::Internal(anyhow::Error::new(err).context("media store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_path_safe() {
        assert!(MediaId::parse("AbC-12_x").is_some());
        for bad in ["", "..", "a/b", "a.b", "a b", "ä", &"x".repeat(MAX_MEDIA_ID_LEN + 1)] {
            assert!(MediaId::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(MediaId::generate().as_str().len(), MEDIA_ID_LEN);
    }

    #[test]
    fn metadata_is_normalized_or_refused() {
        assert_eq!(checked_metadata(Some(" image/png "), Some("a.png")).unwrap(), (Some("image/png"), Some("a.png")));
        assert_eq!(checked_metadata(Some(""), Some("")).unwrap(), (None, None));
        assert!(checked_metadata(None, Some("bad\nname")).is_err());
        assert!(checked_metadata(Some(&"a".repeat(300)), None).is_err());
    }

    #[test]
    fn essence_drops_parameters_and_case() {
        assert_eq!(essence("Text/Plain; charset=utf-8"), "text/plain");
        assert_eq!(essence("image/png"), "image/png");
    }
}
