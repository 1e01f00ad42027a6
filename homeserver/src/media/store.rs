//! Where media bytes live. [`ContentStore`] is the seam: the repository
//! only ever writes whole, immutable blobs under a [`ContentKey`] and reads
//! them back as streams, which maps onto a directory today and onto an
//! object store (S3 `PutObject` with `If-None-Match: *`, `GetObject`,
//! `DeleteObject`) later.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use futures::{StreamExt as _, future::BoxFuture, stream::BoxStream};
use tokio::io::AsyncWriteExt as _;
use tokio_util::io::ReaderStream;

use super::MediaId;
use crate::config::ThumbnailSize;

/// Bytes flowing into or out of a store.
pub type ByteStream<'a> = BoxStream<'a, io::Result<Bytes>>;

/// Chunk size of reads and of the write buffer: large enough that a 50 MiB
/// upload is a few hundred blocking-pool round trips, not thousands.
const CHUNK: usize = 256 * 1024;
/// Age after which a temporary file is an abandoned write: far longer than
/// any upload takes.
const STALE_TEMP_FILE: Duration = Duration::from_secs(24 * 60 * 60);

/// The name of one blob: an upload, or a thumbnail of it. Built only from a
/// validated [`MediaId`], so it holds nothing but `[A-Za-z0-9_.-]` and is
/// safe as a file name and an object key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentKey(String);

impl ContentKey {
    /// The uploaded file itself.
    pub fn original(media_id: &MediaId) -> Self {
        Self(media_id.as_str().to_owned())
    }

    /// A thumbnail of the upload; beside it in the store, so a listing of
    /// one media id shows everything derived from it.
    pub fn thumbnail(media_id: &MediaId, size: &ThumbnailSize) -> Self {
        Self(format!("{}.{}x{}.{}", media_id.as_str(), size.width, size.height, size.method.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A place to keep media bytes. Blobs are immutable: `put` never replaces
/// one, which is what makes "upload once" (`M_CANNOT_OVERWRITE_MEDIA`)
/// hold even for two uploads racing to the same id.
pub trait ContentStore: Send + Sync + 'static {
    /// Stores `content` under `key`, all or nothing: a reader sees either
    /// no blob or the complete one. Fails with
    /// [`io::ErrorKind::AlreadyExists`] when the key is taken. An error
    /// from `content` itself aborts the write and is returned unchanged, so
    /// the caller can tell its own failures (a size limit, a client gone)
    /// from the store's.
    fn put<'a>(&'a self, key: &'a ContentKey, content: ByteStream<'a>) -> BoxFuture<'a, io::Result<()>>;

    /// The blob under `key`, or `None` when there is none.
    fn get<'a>(&'a self, key: &'a ContentKey) -> BoxFuture<'a, io::Result<Option<ByteStream<'static>>>>;

    /// Removes the blob under `key`; a missing blob is not an error.
    fn delete<'a>(&'a self, key: &'a ContentKey) -> BoxFuture<'a, io::Result<()>>;
}

/// Blobs as files under one directory: `<root>/<k[0..2]>/<k[2..4]>/<key>`,
/// so no directory grows past a few thousand entries. Writes go to
/// `<root>/tmp/` first and are linked into place when complete.
#[derive(Debug)]
pub struct FilesystemStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl FilesystemStore {
    /// Opens (creating if needed) the store at `root`. Fails at start, not
    /// at the first upload, when the directory is not writable.
    pub fn open(root: &Path) -> io::Result<Self> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        // Leftovers of writes a crash interrupted; nothing refers to them.
        // Only old ones: other workers sharing the directory may be
        // writing the young ones right now.
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if age > STALE_TEMP_FILE {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self { root: root.to_owned(), tmp })
    }

    fn path_of(&self, key: &ContentKey) -> PathBuf {
        let name = key.as_str();
        let level = |range: std::ops::Range<usize>| name.get(range).unwrap_or("_");
        self.root.join(level(0..2)).join(level(2..4)).join(name)
    }

    async fn write(&self, key: &ContentKey, mut content: ByteStream<'_>) -> io::Result<()> {
        let path = self.path_of(key);
        let temp = TempFile(self.tmp.join(format!("{}.{}", key.as_str(), crate::auth::tokens::random_string(8))));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&temp.0).await?;
        let mut writer = tokio::io::BufWriter::with_capacity(CHUNK, file);
        while let Some(chunk) = content.next().await {
            writer.write_all(&chunk?).await?;
        }
        writer.flush().await?;
        writer.get_ref().sync_all().await?;
        drop(writer);

        let dir = path.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir).await?;
        // A hard link, unlike a rename, refuses to replace an existing
        // file: the atomic "create if absent" that `put` promises.
        tokio::fs::hard_link(&temp.0, &path).await?;
        sync_dir(dir).await
    }
}

impl ContentStore for FilesystemStore {
    fn put<'a>(&'a self, key: &'a ContentKey, content: ByteStream<'a>) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(self.write(key, content))
    }

    fn get<'a>(&'a self, key: &'a ContentKey) -> BoxFuture<'a, io::Result<Option<ByteStream<'static>>>> {
        Box::pin(async move {
            match tokio::fs::File::open(self.path_of(key)).await {
                Ok(file) => Ok(Some(ReaderStream::with_capacity(file, CHUNK).boxed())),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(err),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a ContentKey) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path_of(key)).await {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            }
        })
    }
}

/// A file in `tmp/` that is removed when dropped: after a successful link
/// it is the second name of the blob, after a failure a partial write.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes a new directory entry durable: an acknowledged upload must survive
/// a power cut, and the file's own `fsync` does not cover its name.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream<'static> {
        futures::stream::iter(parts.iter().map(|part| Ok(Bytes::from_static(part))).collect::<Vec<_>>()).boxed()
    }

    async fn read(store: &FilesystemStore, key: &ContentKey) -> Option<Vec<u8>> {
        let mut stream = store.get(key).await.unwrap()?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        Some(out)
    }

    fn temp_root() -> PathBuf {
        std::env::temp_dir().join(format!("media-store-test-{}", crate::auth::tokens::random_string(10)))
    }

    #[tokio::test]
    async fn blobs_are_written_once_and_read_back() {
        let root = temp_root();
        let store = FilesystemStore::open(&root).unwrap();
        let key = ContentKey::original(&MediaId::parse("AbCdEf123").unwrap());

        assert_eq!(read(&store, &key).await, None);
        store.put(&key, chunks(&[b"hello ", b"world"])).await.unwrap();
        assert_eq!(read(&store, &key).await.as_deref(), Some(&b"hello world"[..]));

        let again = store.put(&key, chunks(&[b"other"])).await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(read(&store, &key).await.as_deref(), Some(&b"hello world"[..]));

        store.delete(&key).await.unwrap();
        store.delete(&key).await.unwrap();
        assert_eq!(read(&store, &key).await, None);
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0, "no temporary files are left behind");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn a_failing_stream_stores_nothing_and_its_error_comes_back() {
        let root = temp_root();
        let store = FilesystemStore::open(&root).unwrap();
        let key = ContentKey::original(&MediaId::parse("x").unwrap());
        let failing = futures::stream::iter([Ok(Bytes::from_static(b"partial")), Err(io::Error::other("client went away"))]).boxed();

        let err = store.put(&key, failing).await.unwrap_err();
        assert_eq!(err.to_string(), "client went away");
        assert_eq!(read(&store, &key).await, None);
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        std::fs::remove_dir_all(root).unwrap();
    }
}
