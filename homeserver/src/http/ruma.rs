//! Glue between axum and ruma: every endpoint is declared by its ruma request
//! type, which knows its paths, method and authentication scheme. The
//! extractor authenticates and parses; the response type serializes.

use std::{any::TypeId, future::Future};

use axum::{
    Router,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::BytesMut;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ruma::api::{
    IncomingRequest, Metadata, OutgoingResponse,
    auth_scheme::{AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional},
    error::FromHttpRequestError,
    path_builder::PathBuilder,
};

use super::{
    auth::{Session, authenticate, bearer_token},
    client_address::client_address,
    error::{ApiError, ApiResult},
    limits,
};
use crate::{
    rate_limit::{Class, address_key},
    server::Homeserver,
};

/// A parsed request of endpoint `R` with the identity that sent it.
pub struct Args<R> {
    pub body: R,
    /// Present when the endpoint takes an access token and one was given.
    pub session: Option<Session>,
}

impl<R> Args<R> {
    /// The authenticated caller. Only endpoints whose scheme requires a
    /// token call this; for them the extractor already rejected anonymous
    /// requests.
    pub fn session(&self) -> ApiResult<&Session> {
        self.session.as_ref().ok_or_else(ApiError::missing_token)
    }
}

/// A ruma endpoint that the spec opens to anonymous callers, served to
/// authenticated callers only (TI-M: profiles, the public room list): the
/// extractor then answers a request without a token with 401
/// `M_MISSING_TOKEN`.
pub struct Authenticated<R>(pub R);

impl<R: Metadata> Metadata for Authenticated<R> {
    const METHOD: http::Method = R::METHOD;
    const RATE_LIMITED: bool = R::RATE_LIMITED;
    type Authentication = AccessToken;
    type PathBuilder = R::PathBuilder;
    const PATH_BUILDER: R::PathBuilder = R::PATH_BUILDER;
}

impl<R: IncomingRequest> IncomingRequest for Authenticated<R> {
    type EndpointError = R::EndpointError;
    type OutgoingResponse = R::OutgoingResponse;

    fn try_from_http_request<B, S>(request: http::Request<B>, path_args: &[S]) -> Result<Self, FromHttpRequestError>
    where
        B: AsRef<[u8]>,
        S: AsRef<str>,
    {
        R::try_from_http_request(request, path_args).map(Self)
    }
}

/// How an endpoint authenticates, derived from its ruma scheme.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenPolicy {
    Required,
    Optional,
    Ignored,
}

fn token_policy<R: IncomingRequest>() -> TokenPolicy
where
    R::Authentication: 'static,
{
    let scheme = TypeId::of::<R::Authentication>();
    if scheme == TypeId::of::<AccessToken>() || scheme == TypeId::of::<AppserviceToken>() {
        TokenPolicy::Required
    } else if scheme == TypeId::of::<AccessTokenOptional>() || scheme == TypeId::of::<AppserviceTokenOptional>() {
        TokenPolicy::Optional
    } else {
        TokenPolicy::Ignored
    }
}

impl<R> FromRequest<Homeserver> for Args<R>
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: 'static,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, server: &Homeserver) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, server).await {
            Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
            Err(_) => Vec::new(),
        };

        let limit = server.config.limits.max_request_bytes;
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(ApiError::too_large(format!("Request body exceeds {limit} bytes")));
            }
            Err(_) => return Err(ApiError::bad_json("Could not read the request body")),
        };

        let policy = token_policy::<R>();
        let session = match (policy, bearer_token(&parts)) {
            (TokenPolicy::Ignored, _) => None,
            (TokenPolicy::Required, None) => return Err(ApiError::missing_token()),
            (_, None) => None,
            (_, Some(token)) => Some(authenticate(server, &token, parts.uri.query()).await?),
        };
        rate_limit::<R>(server, &parts, session.as_ref()).await?;
        limits::check_path_params(&path_args)?;
        limits::check_json_depth(&bytes, server.config.limits.max_json_depth)?;

        // An empty body on a JSON endpoint means `{}` (clients send that for
        // POSTs without parameters).
        let bytes = if bytes.is_empty() && parts.method != http::Method::GET { bytes::Bytes::from_static(b"{}") } else { bytes };
        // Routes without a trailing empty parameter (`/state/{type}` for
        // `/state/{type}/{state_key}`) pass it as "".
        let expected = R::PATH_BUILDER.all_paths().next().map_or(0, |path| path.matches('{').count());
        let mut path_args = path_args;
        path_args.resize(expected.max(path_args.len()), String::new());

        let http_request = http::Request::from_parts(parts, bytes);
        // Some ruma deserializers panic on hostile input (`/login` without
        // `type` indexes a missing key); that is the client's bad JSON, not
        // our failure.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| R::try_from_http_request(http_request, &path_args)));
        let body = parsed.map_err(|_| ApiError::bad_json("Malformed request"))??;
        Ok(Args { body, session })
    }
}

/// Counts the request against its rate limit (see `rate_limit`): the
/// caller's, or their address's when anonymous. Appservices registered with
/// `rate_limited: false` are not limited, nor is an appservice's sender.
async fn rate_limit<R: IncomingRequest + 'static>(server: &Homeserver, parts: &http::request::Parts, session: Option<&Session>) -> ApiResult<()> {
    if let Some(Session { appservice: Some(appservice), user_id, .. }) = session
        && (!appservice.rate_limited || *user_id == appservice.sender)
    {
        return Ok(());
    }
    let Some(class) = Class::of_request::<R>(session.is_some()) else { return Ok(()) };
    let key = match session {
        Some(session) => session.user_id.to_string(),
        None => match client_address(parts, &server.config.rate_limits.trusted_proxies) {
            Some(addr) => address_key(addr),
            None => return Ok(()),
        },
    };
    server.rate_limiter.take(class, &key).await
}

/// A ruma response turned into an HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| axum::body::Body::from(body.freeze())).into_response(),
            Err(err) => ApiError::Internal(anyhow::anyhow!("serializing response: {err}")).into_response(),
        }
    }
}

/// Adds endpoint `R`, on every path ruma knows for it, to the router.
pub trait RouterExt {
    fn endpoint<R, F, Fut>(self, handler: F) -> Self
    where
        R: IncomingRequest + Send + 'static,
        R::Authentication: 'static,
        R::OutgoingResponse: Send,
        F: Fn(Homeserver, Args<R>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ApiResult<R::OutgoingResponse>> + Send + 'static;
}

impl RouterExt for Router<Homeserver> {
    fn endpoint<R, F, Fut>(mut self, handler: F) -> Self
    where
        R: IncomingRequest + Send + 'static,
        R::Authentication: 'static,
        R::OutgoingResponse: Send,
        F: Fn(Homeserver, Args<R>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ApiResult<R::OutgoingResponse>> + Send + 'static,
    {
        let filter = MethodFilter::try_from(R::METHOD).expect("ruma endpoints use standard methods");
        for path in R::PATH_BUILDER.all_paths().flat_map(with_optional_state_key) {
            let handler = handler.clone();
            self = self.route(
                &path,
                on(filter, move |axum::extract::State(server): axum::extract::State<Homeserver>, args: Args<R>| {
                    let handler = handler.clone();
                    async move { handler(server, args).await.map(RumaResponse) }
                }),
            );
        }
        self
    }
}

/// A path, and for paths ending in `{state_key}` (which may be empty) also
/// the forms without it: `/state/{event_type}/` and `/state/{event_type}`,
/// since axum matches no empty segment.
fn with_optional_state_key(path: &'static str) -> Vec<String> {
    match path.strip_suffix("/{state_key}") {
        Some(prefix) => vec![path.to_owned(), format!("{prefix}/"), prefix.to_owned()],
        None => vec![path.to_owned()],
    }
}

/// A JSON value as ruma's `Raw<T>`, for events and keys we pass through as
/// they were stored (serializing a `serde_json` value cannot fail).
pub fn raw_json<T, V: serde::Serialize + ?Sized>(value: &V) -> ruma::serde::Raw<T> {
    ruma::serde::Raw::from_json(serde_json::value::to_raw_value(value).unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()))
}
