//! The media endpoints: uploads (`/_matrix/media/v3/upload`, and reserve
//! first with `/_matrix/media/v1/create`, fill later), authenticated
//! downloads and thumbnails (`/_matrix/client/v1/media/…`), the legacy
//! unauthenticated `/_matrix/media/v3/download|thumbnail` that older clients
//! still use, and the upload limit (`…/config`).
//!
//! Uploads and downloads are plain axum handlers: their bodies are files
//! streamed to and from the store, not JSON through `Args`' 1 MiB limit.
//! ruma's request types still parse everything but the body.

#![allow(deprecated)] // The legacy endpoints' ruma types are deprecated since Matrix 1.11.

use std::io;

use axum::{
    Router,
    body::Body,
    extract::{FromRequestParts as _, RawPathParams, Request, State},
    response::Response,
    Json,
    routing::{MethodRouter, get, post, put},
};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use http::{HeaderValue, StatusCode, header};
use ruma::{
    UInt,
    api::{
        IncomingRequest, Metadata,
        client::{
            authenticated_media,
            media::{
                create_content, create_content_async, create_mxc_uri, get_content, get_content_as_filename,
                get_content_thumbnail, get_media_config, get_media_preview,
            },
        },
        error::ErrorKind,
        path_builder::PathBuilder as _,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method,
};

use crate::{
    config::ThumbnailMethod,
    http::{
        ApiError, ApiResult, Args, RouterExt, Session,
        auth::{authenticate, bearer_token},
        ruma::RumaResponse,
    },
    media::{Content, Upload, essence, store::ByteStream},
    server::Homeserver,
};

/// Content types a browser may show in place. Everything else is sent as
/// an attachment, so an uploaded HTML or SVG file never runs as a page of
/// this origin (the CSP below is the second fence).
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    let router = router
        .endpoint(media_config)
        .endpoint(legacy_media_config)
        .endpoint(create_mxc_uri)
        .route_all::<create_content::v3::Request>(post(upload))
        .route_all::<create_content_async::v3::Request>(put(fill));
    let router = router
        .route_all::<authenticated_media::get_content::v1::Request>(get(download))
        .route_all::<authenticated_media::get_content_as_filename::v1::Request>(get(download_as_filename))
        .route_all::<authenticated_media::get_content_thumbnail::v1::Request>(get(thumbnail))
        .route_all::<get_content::v3::Request>(get(legacy_download))
        .route_all::<get_content_as_filename::v3::Request>(get(legacy_download_as_filename))
        .route_all::<get_content_thumbnail::v3::Request>(get(legacy_thumbnail));
    router
        .route_all::<authenticated_media::get_media_preview::v1::Request>(get(no_url_previews))
        .route_all::<get_media_preview::v3::Request>(get(no_url_previews))
}

/// Registers a plain axum handler on every path ruma knows for endpoint
/// `R`, for endpoints whose bodies `RouterExt::endpoint` cannot carry.
trait RouteAll {
    fn route_all<R: Metadata>(self, handler: MethodRouter<Homeserver>) -> Self;
}

impl RouteAll for Router<Homeserver> {
    fn route_all<R: Metadata>(self, handler: MethodRouter<Homeserver>) -> Self {
        R::PATH_BUILDER.all_paths().fold(self, |router, path| router.route(path, handler.clone()))
    }
}

async fn media_config(server: Homeserver, args: Args<authenticated_media::get_media_config::v1::Request>) -> ApiResult<authenticated_media::get_media_config::v1::Response> {
    args.session()?;
    Ok(authenticated_media::get_media_config::v1::Response::new(upload_size(&server)))
}

async fn legacy_media_config(server: Homeserver, args: Args<get_media_config::v3::Request>) -> ApiResult<get_media_config::v3::Response> {
    args.session()?;
    Ok(get_media_config::v3::Response::new(upload_size(&server)))
}

fn upload_size(server: &Homeserver) -> UInt {
    UInt::new_saturating(server.media.max_upload_bytes())
}

/// `POST /_matrix/media/v3/upload`: the body is the file.
async fn upload(State(server): State<Homeserver>, request: Request) -> ApiResult<RumaResponse<create_content::v3::Response>> {
    let (session, head, upload) = streamed::<create_content::v3::Request>(&server, request).await?;
    let upload = Upload { content_type: head.content_type.as_deref(), filename: head.filename.as_deref(), ..upload };
    let content_uri = server.media.upload(&session.user_id, upload).await?;
    Ok(RumaResponse(create_content::v3::Response::new(content_uri)))
}

/// `POST /_matrix/media/v1/create`: a media id to upload to later, so a
/// client can send the event before the file.
async fn create_mxc_uri(server: Homeserver, args: Args<create_mxc_uri::v1::Request>) -> ApiResult<create_mxc_uri::v1::Response> {
    let session = args.session()?;
    let (content_uri, expires) = server.media.reserve(&session.user_id).await?;
    let mut response = create_mxc_uri::v1::Response::new(content_uri);
    response.unused_expires_at = Some(expires);
    Ok(response)
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the content of a
/// reserved id.
async fn fill(State(server): State<Homeserver>, request: Request) -> ApiResult<Json<serde_json::Map<String, serde_json::Value>>> {
    let (session, head, upload) = streamed::<create_content_async::v3::Request>(&server, request).await?;
    let upload = Upload { content_type: head.content_type.as_deref(), filename: head.filename.as_deref(), ..upload };
    server.media.fill(&session.user_id, &head.server_name, &head.media_id, upload).await?;
    // ruma-client-api 0.24 offers no way to build this (empty,
    // non-exhaustive) response type; its body is `{}`.
    Ok(Json(serde_json::Map::new()))
}

/// An upload request, authenticated and parsed by ruma from its path, query
/// and headers, with its body left as a stream. The caller fills in the
/// content type and file name, which borrow from the parsed request.
async fn streamed<R: IncomingRequest>(server: &Homeserver, request: Request) -> ApiResult<(Session, R, Upload<'static>)> {
    let (mut parts, body) = request.into_parts();
    let token = bearer_token(&parts).ok_or_else(ApiError::missing_token)?;
    let session = authenticate(server, &token, parts.uri.query()).await?;
    let path_args: Vec<String> = RawPathParams::from_request_parts(&mut parts, server)
        .await
        .map_err(|_| ApiError::invalid_param("Malformed request path"))?
        .iter()
        .map(|(_, value)| value.to_owned())
        .collect();
    let announced_size = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let head = R::try_from_http_request(http::Request::from_parts(parts, Bytes::new()), &path_args)?;
    let body: ByteStream<'static> = body.into_data_stream().map_err(io::Error::other).boxed();
    Ok((session, head, Upload { content_type: None, filename: None, announced_size, body }))
}

async fn download(State(server): State<Homeserver>, args: Args<authenticated_media::get_content::v1::Request>) -> ApiResult<Response> {
    let request = args.body;
    let content = server.media.content(&request.server_name, &request.media_id, request.timeout_ms).await?;
    Ok(media_response(content, None))
}

async fn download_as_filename(State(server): State<Homeserver>, args: Args<authenticated_media::get_content_as_filename::v1::Request>) -> ApiResult<Response> {
    let request = args.body;
    let content = server.media.content(&request.server_name, &request.media_id, request.timeout_ms).await?;
    Ok(media_response(content, Some(request.filename)))
}

async fn thumbnail(State(server): State<Homeserver>, args: Args<authenticated_media::get_content_thumbnail::v1::Request>) -> ApiResult<Response> {
    let request = args.body;
    let method = thumbnail_method(request.method.as_ref())?;
    let (width, height) = (edge(request.width), edge(request.height));
    let content = server.media.thumbnail(&request.server_name, &request.media_id, width, height, method, request.timeout_ms).await?;
    Ok(media_response(content, None))
}

/// `GET /_matrix/media/v3/download/…` without a token, for clients from
/// before authenticated media (Matrix 1.11).
async fn legacy_download(State(server): State<Homeserver>, args: Args<get_content::v3::Request>) -> ApiResult<Response> {
    let request = args.body;
    let content = server.media.content(&request.server_name, &request.media_id, request.timeout_ms).await?;
    Ok(media_response(content, None))
}

async fn legacy_download_as_filename(State(server): State<Homeserver>, args: Args<get_content_as_filename::v3::Request>) -> ApiResult<Response> {
    let request = args.body;
    let content = server.media.content(&request.server_name, &request.media_id, request.timeout_ms).await?;
    Ok(media_response(content, Some(request.filename)))
}

async fn legacy_thumbnail(State(server): State<Homeserver>, args: Args<get_content_thumbnail::v3::Request>) -> ApiResult<Response> {
    let request = args.body;
    let method = thumbnail_method(request.method.as_ref())?;
    let (width, height) = (edge(request.width), edge(request.height));
    let content = server.media.thumbnail(&request.server_name, &request.media_id, width, height, method, request.timeout_ms).await?;
    Ok(media_response(content, None))
}

/// URL previews would make the server fetch whatever users paste, telling
/// third parties what is said in a room; TI-Messenger forbids them, so the
/// endpoint answers as one this server does not have.
async fn no_url_previews() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorKind::Unrecognized, "URL previews are not offered by this server")
}

/// The spec leaves `method` optional; scaling keeps the whole picture.
fn thumbnail_method(method: Option<&Method>) -> ApiResult<ThumbnailMethod> {
    match method {
        None | Some(Method::Scale) => Ok(ThumbnailMethod::Scale),
        Some(Method::Crop) => Ok(ThumbnailMethod::Crop),
        Some(other) => Err(ApiError::invalid_param(format!("Unknown thumbnail method {:?}", other.as_str()))),
    }
}

fn edge(pixels: UInt) -> u32 {
    u32::try_from(u64::from(pixels)).unwrap_or(u32::MAX)
}

/// The response for media bytes, with a `Content-Disposition` that keeps a
/// browser from treating an upload as part of this site (the sandboxing
/// CSP and CORP come with every media response: `http::security_headers`).
fn media_response(content: Content, filename: Option<String>) -> Response {
    let content_type = content
        .content_type
        .and_then(|value| HeaderValue::from_str(&value).ok())
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    let disposition = content_disposition(content_type.to_str().unwrap_or(DEFAULT_CONTENT_TYPE), filename.or(content.filename));

    let mut response = Response::new(Body::from_stream(content.body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(content.size));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    response
}

/// `inline` for the allowlisted types, `attachment` otherwise; the file
/// name quoted, or RFC 8187-encoded (`filename*=utf-8''…`) when not ASCII.
fn content_disposition(content_type: &str, filename: Option<String>) -> HeaderValue {
    let disposition_type = if INLINE_CONTENT_TYPES.contains(&essence(content_type).as_str()) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let value = ContentDisposition::new(disposition_type.clone()).with_filename(filename).to_string();
    // The encoding leaves only visible ASCII; should that ever fail, the
    // disposition without the name is still right.
    HeaderValue::from_str(&value).unwrap_or_else(|_| match disposition_type {
        ContentDispositionType::Inline => HeaderValue::from_static("inline"),
        _ => HeaderValue::from_static("attachment"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_types_are_inline() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(content_disposition("text/plain; charset=utf-8", Some("notes.txt".into())), "inline; filename=notes.txt");
        assert_eq!(content_disposition("text/html", Some("page.html".into())), "attachment; filename=page.html");
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
    }

    #[test]
    fn file_names_are_quoted_or_encoded() {
        assert_eq!(content_disposition("application/pdf", Some("my report.pdf".into())), "attachment; filename=\"my report.pdf\"");
        assert_eq!(
            content_disposition("application/pdf", Some("Befund Größe.pdf".into())),
            "attachment; filename*=utf-8''Befund%20Gr%C3%B6%C3%9Fe.pdf"
        );
    }

    #[test]
    fn thumbnail_methods() {
        assert_eq!(thumbnail_method(None).unwrap(), ThumbnailMethod::Scale);
        assert_eq!(thumbnail_method(Some(&Method::Crop)).unwrap(), ThumbnailMethod::Crop);
        assert!(thumbnail_method(Some(&Method::from("stretch"))).is_err());
    }
}
