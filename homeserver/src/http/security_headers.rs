//! Headers every response carries, so that a browser never runs, frames or
//! sniffs what this server sends (an uploaded HTML file, an error page) and
//! never leaks a URL with a token to another site.

use axum::{extract::Request, middleware::Next, response::Response};
use http::{HeaderValue, header};

/// The spec's recommendation for media (Client-Server API, "Content
/// repository", security considerations): no scripts, no plugins but PDF.
/// JSON answers need nothing either, so every response gets it.
pub const CONTENT_SECURITY_POLICY: &str =
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Paths of media downloads and thumbnails, which web clients of other
/// origins embed (`<img src>`): the spec asks for `Cross-Origin-Resource-Policy: cross-origin` there.
const MEDIA_PREFIXES: [&str; 2] = ["/_matrix/media/", "/_matrix/client/v1/media/"];

/// The middleware: adds the headers a handler did not set itself.
pub async fn add(request: Request, next: Next) -> Response {
    let media = MEDIA_PREFIXES.iter().any(|prefix| request.uri().path().starts_with(prefix));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ];
    for (name, value) in fixed {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if media {
        headers.entry(ruma::http_headers::CROSS_ORIGIN_RESOURCE_POLICY).or_insert(HeaderValue::from_static("cross-origin"));
    }
    response
}
