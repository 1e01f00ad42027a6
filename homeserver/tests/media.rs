//! The media repository: uploads and downloads through matrix-sdk (as
//! Element X does them), thumbnails, async uploads, and the refusals the
//! spec names: oversize uploads, overwrites, missing tokens, URL previews.

mod common;

use std::{io::Cursor, time::Duration};

use common::{SERVER_NAME, TestServer, api::enc};
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgba};
use matrix_sdk::{
    Client,
    media::{MediaError, MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    ruma::{MxcUri, OwnedMxcUri, UInt, api::error::ErrorKind, events::room::MediaSource, media::Method},
};
use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A PNG with a pattern, so that a thumbnail is a real resampling.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = ImageBuffer::from_fn(width, height, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255]));
    let mut out = Vec::new();
    DynamicImage::ImageRgba8(image).write_to(Cursor::new(&mut out), ImageFormat::Png).expect("encoding a PNG");
    out
}

/// Bytes that compress badly and differ at every offset.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

async fn download(client: &Client, uri: &MxcUri, format: MediaFormat) -> matrix_sdk::Result<Vec<u8>> {
    let request = MediaRequestParameters { source: MediaSource::Plain(uri.to_owned()), format };
    client.media().get_media_content(&request, false).await
}

fn thumbnail(method: Method, width: u32, height: u32) -> MediaFormat {
    MediaFormat::Thumbnail(MediaThumbnailSettings::with_method(method, UInt::from(width), UInt::from(height)))
}

fn media_id(uri: &MxcUri) -> String {
    uri.media_id().expect("a valid mxc URI").to_owned()
}

/// Raw HTTP for what matrix-sdk hides: headers, status codes, bodies that
/// are files.
struct Raw {
    http: reqwest::Client,
    base_url: String,
}

/// An answer whose body may be a file.
struct RawReply {
    status: StatusCode,
    headers: header::HeaderMap,
    bytes: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(&name).and_then(|value| value.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
    }

    #[track_caller]
    fn assert_error(&self, status: u16, errcode: &str) {
        let body: Value = serde_json::from_slice(&self.bytes).unwrap_or(Value::Null);
        assert_eq!((self.status.as_u16(), body["errcode"].as_str()), (status, Some(errcode)), "body: {body}");
    }
}

impl Raw {
    fn new(server: &TestServer) -> Self {
        Self { http: reqwest::Client::new(), base_url: server.base_url() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> RawReply {
        let mut request = self.http.request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(header::CONTENT_TYPE, content_type).body(bytes);
        }
        let response = request.send().await.unwrap_or_else(|err| panic!("{path}: {err}"));
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.bytes().await.expect("reading the body").to_vec();
        RawReply { status, headers, bytes }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> RawReply {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    /// `POST /upload`; returns the media id.
    async fn upload(&self, token: &str, query: &str, content_type: &str, bytes: Vec<u8>) -> String {
        let reply = self.send(reqwest::Method::POST, &format!("/_matrix/media/v3/upload{query}"), Some(token), Some((content_type, bytes))).await;
        assert_eq!(reply.status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&reply.bytes).expect("JSON");
        let uri = OwnedMxcUri::from(body["content_uri"].as_str().expect("content_uri").to_owned());
        media_id(&uri)
    }
}

fn download_path(media_id: &str) -> String {
    format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{media_id}")
}

#[tokio::test]
async fn upload_and_download_round_trip_through_matrix_sdk() {
    let server = TestServer::start().await;
    let alice = server.matrix_client("alice").await;
    // Larger than the 1 MiB JSON body limit: uploads have their own.
    let data = noise(3 * 1024 * 1024 + 17);

    let uri = alice.media().upload(&mime::APPLICATION_OCTET_STREAM, data.clone(), None).await.expect("upload").content_uri;
    assert_eq!(uri.server_name().expect("server name").as_str(), SERVER_NAME);
    let downloaded = download(&alice, &uri, MediaFormat::File).await.expect("download");
    assert!(downloaded == data, "downloaded {} bytes, not the {} uploaded", downloaded.len(), data.len());

    // Another user of the server can fetch it too (media is not scoped).
    let bob = server.matrix_client("bob").await;
    assert!(download(&bob, &uri, MediaFormat::File).await.expect("bob's download") == data);
}

#[tokio::test]
async fn downloads_carry_type_name_and_protective_headers() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let raw = Raw::new(&server);

    let pdf = raw.upload(&alice.access_token, "?filename=Befund%20Gr%C3%B6%C3%9Fe.pdf", "application/pdf", b"%PDF-1.7".to_vec()).await;
    let reply = raw.get(&download_path(&pdf), Some(&alice.access_token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes, b"%PDF-1.7");
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/pdf");
    assert_eq!(reply.header(header::CONTENT_DISPOSITION), "attachment; filename*=utf-8''Befund%20Gr%C3%B6%C3%9Fe.pdf");
    assert!(reply.header(header::CONTENT_SECURITY_POLICY).starts_with("sandbox; default-src 'none'; script-src 'none';"));
    assert_eq!(reply.header(header::HeaderName::from_static("cross-origin-resource-policy")), "cross-origin");

    // The name in the path wins; an image may be shown in place.
    let picture = raw.upload(&alice.access_token, "?filename=a.png", "image/png", png(4, 4)).await;
    let reply = raw.get(&format!("{}/renamed.png", download_path(&picture)), Some(&alice.access_token)).await;
    assert_eq!(reply.header(header::CONTENT_DISPOSITION), "inline; filename=renamed.png");

    // HTML is never shown in place, and no type given means octet-stream.
    let page = raw.upload(&alice.access_token, "", "text/html", b"<script>alert(1)</script>".to_vec()).await;
    assert_eq!(raw.get(&download_path(&page), Some(&alice.access_token)).await.header(header::CONTENT_DISPOSITION), "attachment");
    let reply = raw.send(reqwest::Method::POST, "/_matrix/media/v3/upload", Some(&alice.access_token), None).await;
    let untyped: Value = serde_json::from_slice(&reply.bytes).expect("JSON");
    let untyped = media_id(&OwnedMxcUri::from(untyped["content_uri"].as_str().expect("content_uri").to_owned()));
    let reply = raw.get(&download_path(&untyped), Some(&alice.access_token)).await;
    assert_eq!((reply.header(header::CONTENT_TYPE), reply.bytes.len()), ("application/octet-stream", 0));
}

#[tokio::test]
async fn thumbnails_fit_the_requested_box() {
    let server = TestServer::start().await;
    let alice = server.matrix_client("alice").await;
    let uri = alice.media().upload(&mime::IMAGE_PNG, png(1000, 500), None).await.expect("upload").content_uri;

    let scaled = download(&alice, &uri, thumbnail(Method::Scale, 320, 240)).await.expect("scaled thumbnail");
    let scaled = image::load_from_memory(&scaled).expect("a thumbnail is an image");
    assert_eq!((scaled.width(), scaled.height()), (320, 160), "scaling keeps the 2:1 aspect ratio inside 320×240");

    let cropped = download(&alice, &uri, thumbnail(Method::Crop, 96, 96)).await.expect("cropped thumbnail");
    let again = download(&alice, &uri, thumbnail(Method::Crop, 96, 96)).await.expect("cached thumbnail");
    assert!(cropped == again, "the second request is served from the cache");
    let cropped = image::load_from_memory(&cropped).expect("a thumbnail is an image");
    assert_eq!((cropped.width(), cropped.height()), (96, 96));

    // A size between the offered ones gets the next larger one, never less.
    let between = download(&alice, &uri, thumbnail(Method::Crop, 50, 50)).await.expect("thumbnail");
    let between = image::load_from_memory(&between).expect("a thumbnail is an image");
    assert_eq!((between.width(), between.height()), (96, 96));
}

#[tokio::test]
async fn only_images_are_thumbnailed() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let raw = Raw::new(&server);
    let text = raw.upload(&alice.access_token, "", "text/plain", b"hello".to_vec()).await;
    let path = format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{text}?width=96&height=96&method=crop");
    raw.get(&path, Some(&alice.access_token)).await.assert_error(400, "M_UNKNOWN");
    // Bytes that claim to be a PNG but are not one.
    let fake = raw.upload(&alice.access_token, "", "image/png", b"not a png".to_vec()).await;
    let path = format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{fake}?width=96&height=96&method=crop");
    raw.get(&path, Some(&alice.access_token)).await.assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn legacy_download_works_without_a_token_authenticated_needs_one() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let raw = Raw::new(&server);
    let id = raw.upload(&alice.access_token, "", "image/png", png(200, 100)).await;

    let legacy = raw.get(&format!("/_matrix/media/v3/download/{SERVER_NAME}/{id}"), None).await;
    assert_eq!((legacy.status, legacy.bytes.len()), (StatusCode::OK, png(200, 100).len()));
    let legacy_thumbnail = raw.get(&format!("/_matrix/media/v3/thumbnail/{SERVER_NAME}/{id}?width=32&height=32&method=crop"), None).await;
    assert_eq!(legacy_thumbnail.status, StatusCode::OK);
    assert_eq!(image::load_from_memory(&legacy_thumbnail.bytes).expect("an image").width(), 32);

    raw.get(&download_path(&id), None).await.assert_error(401, "M_MISSING_TOKEN");
    let thumbnail_path = format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{id}?width=32&height=32");
    raw.get(&thumbnail_path, None).await.assert_error(401, "M_MISSING_TOKEN");
    raw.get(&download_path(&id), Some("mat_garbage")).await.assert_error(401, "M_UNKNOWN_TOKEN");
    let upload = raw.send(reqwest::Method::POST, "/_matrix/media/v3/upload", None, Some(("text/plain", b"x".to_vec()))).await;
    upload.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn unknown_and_remote_media_are_not_found() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let raw = Raw::new(&server);
    raw.get(&download_path("NoSuchMediaId"), Some(&alice.access_token)).await.assert_error(404, "M_NOT_FOUND");
    raw.get("/_matrix/client/v1/media/download/other.example/abc", Some(&alice.access_token)).await.assert_error(404, "M_NOT_FOUND");
    raw.get(&download_path(&enc("../../etc/passwd")), Some(&alice.access_token)).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn oversize_upload_is_too_large() {
    const LIMIT: u64 = 4096;
    let server = TestServer::start_with(|config| config.media.max_upload_bytes = LIMIT).await;
    let alice = server.matrix_client("alice").await;
    let token = alice.access_token().expect("logged in");
    let raw = Raw::new(&server);

    let config = server.api_as(&token).get("/_matrix/client/v1/media/config").await;
    assert_eq!(config.ok()["m.upload.size"], LIMIT);
    assert_eq!(server.api_as(&token).get("/_matrix/media/v3/config").await.ok()["m.upload.size"], LIMIT);

    // Exactly the limit is fine; one byte more is not.
    alice.media().upload(&mime::APPLICATION_OCTET_STREAM, noise(LIMIT as usize), None).await.expect("upload at the limit");
    // matrix-sdk reads the advertised limit and does not even try…
    let err = alice.media().upload(&mime::APPLICATION_OCTET_STREAM, noise(LIMIT as usize + 1), None).await.expect_err("over the limit");
    assert!(matches!(err, matrix_sdk::Error::Media(MediaError::MediaTooLargeToUpload { max, .. }) if u64::from(max) == LIMIT), "{err:?}");
    // …a client that does gets 413.
    let reply = raw.send(reqwest::Method::POST, "/_matrix/media/v3/upload", Some(&token), Some(("text/plain", noise(3 * LIMIT as usize)))).await;
    reply.assert_error(413, "M_TOO_LARGE");

    // Without a Content-Length the limit holds while the body streams in.
    let answer = chunked_upload(&server, &token, &noise(3 * LIMIT as usize)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");
}

/// `POST /upload` with `Transfer-Encoding: chunked`, written by hand (the
/// HTTP client always announces the length); returns the raw answer.
async fn chunked_upload(server: &TestServer, token: &str, body: &[u8]) -> String {
    let addr = server.base_url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connecting");
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(head.as_bytes()).await;
    for chunk in body.chunks(1000) {
        let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        let _ = stream.write_all(chunk).await;
        let _ = stream.write_all(b"\r\n").await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// TI-M A_26344: URL previews are not offered (404).
#[tokio::test]
async fn url_previews_are_not_offered() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    for path in ["/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"] {
        let reply = server.api_as(&alice.access_token).get(&format!("{path}?url=https%3A%2F%2Fexample.org")).await;
        reply.assert_error(404, "M_UNRECOGNIZED");
    }
}

#[tokio::test]
async fn async_upload_fills_a_reserved_id_once() {
    let server = TestServer::start().await;
    let alice = server.matrix_client("alice").await;
    let token = alice.access_token().expect("logged in");
    let raw = Raw::new(&server);

    let reserved = alice.media().create_content_uri().await.expect("create");
    let uri = reserved.uri.clone();
    let id = media_id(&uri);

    // Not there yet: a download gives up after its timeout.
    let early = raw.get(&format!("{}?timeout_ms=100", download_path(&id)), Some(&token)).await;
    early.assert_error(504, "M_NOT_YET_UPLOADED");

    // Only the creator may fill it.
    let mallory = server.register_user("mallory").await;
    let put_path = format!("/_matrix/media/v3/upload/{SERVER_NAME}/{id}");
    let stolen = raw.send(reqwest::Method::PUT, &put_path, Some(&mallory.access_token), Some(("text/plain", b"mine".to_vec()))).await;
    stolen.assert_error(403, "M_FORBIDDEN");

    // A download waiting for the content gets it as soon as it arrives.
    let waiting = {
        let alice = alice.clone();
        let uri = uri.clone();
        tokio::spawn(async move { download(&alice, &uri, MediaFormat::File).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = noise(100_000);
    alice.media().upload_preallocated(reserved, &mime::APPLICATION_OCTET_STREAM, data.clone()).await.expect("upload");
    let waited = waiting.await.expect("the download task").expect("the waiting download");
    assert!(waited == data, "the waiting download got the uploaded bytes");
    assert!(download(&alice, &uri, MediaFormat::File).await.expect("download") == data);

    // Once filled, it stays as it is.
    let again = raw.send(reqwest::Method::PUT, &put_path, Some(&token), Some(("text/plain", b"other".to_vec()))).await;
    again.assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    let second = alice.media().create_content_uri().await.expect("create");
    let second_uri = second.uri.clone();
    alice.media().upload_preallocated(second, &mime::TEXT_PLAIN, b"one".to_vec()).await.expect("upload");
    let overwrite = raw.send(reqwest::Method::PUT, &format!("/_matrix/media/v3/upload/{SERVER_NAME}/{}", media_id(&second_uri)), Some(&token), Some(("text/plain", b"two".to_vec()))).await;
    overwrite.assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    assert_eq!(download(&alice, &second_uri, MediaFormat::File).await.expect("download"), b"one");

    // Unknown ids cannot be filled.
    let unknown = raw.send(reqwest::Method::PUT, &format!("/_matrix/media/v3/upload/{SERVER_NAME}/NoSuchId"), Some(&token), Some(("text/plain", b"x".to_vec()))).await;
    unknown.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn reserved_ids_are_limited_per_user() {
    let server = TestServer::start_with(|config| config.media.max_pending_uploads = 2).await;
    let alice = server.matrix_client("alice").await;
    for _ in 0..2 {
        alice.media().create_content_uri().await.expect("create");
    }
    let err = alice.media().create_content_uri().await.expect_err("a third pending id");
    assert!(matches!(err.client_api_error_kind(), Some(ErrorKind::LimitExceeded(_))), "{err:?}");
    // Another user has their own allowance.
    let bob = server.matrix_client("bob").await;
    bob.media().create_content_uri().await.expect("bob's create");
}

#[tokio::test]
async fn matrix_sdk_reports_an_overwrite() {
    let server = TestServer::start().await;
    let alice = server.matrix_client("alice").await;
    let reserved = alice.media().create_content_uri().await.expect("create");
    let token = alice.access_token().expect("logged in");
    let path = format!("/_matrix/media/v3/upload/{SERVER_NAME}/{}", media_id(&reserved.uri));
    let first = Raw::new(&server).send(reqwest::Method::PUT, &path, Some(&token), Some(("text/plain", b"first".to_vec()))).await;
    assert_eq!(first.status, StatusCode::OK);
    let err = alice.media().upload_preallocated(reserved, &mime::TEXT_PLAIN, b"second".to_vec()).await.expect_err("a second upload");
    assert!(matches!(err, matrix_sdk::Error::Media(MediaError::CannotOverwriteMedia)), "{err:?}");
}
