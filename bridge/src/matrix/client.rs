//! Client-Server API calls to the homeserver with the appservice's
//! `as_token`, acting as the bot, a ghost or one of a ghost's devices
//! (`?user_id=` / `?device_id=`, spec "Identity assertion" and MSC3202).
//!
//! Requests and responses are ruma's types, so every endpoint the bridge
//! uses is checked against the spec's shapes at compile time.

use std::{borrow::Cow, time::Duration};

use anyhow::Context as _;
use ruma::{
    DeviceId, UserId,
    api::{
        AppserviceUserIdentity, IncomingResponse, OutgoingRequest, OutgoingRequestAppserviceExt,
        SupportedVersions,
        auth_scheme::{AuthScheme, SendAccessToken},
        client::uiaa::UiaaResponse,
        error::{Error as MatrixError, ErrorKind, FromHttpResponseError},
        path_builder::{PathBuilder, SinglePath, VersionHistory},
    },
};

/// How long one call may take; long enough for a media upload of a KIM
/// attachment over loopback or a LAN.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed call: the homeserver's Matrix error, or why there was none.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The homeserver answered with a Matrix error.
    #[error("{endpoint}: {error}")]
    Matrix {
        endpoint: &'static str,
        error: MatrixError,
    },
    /// The homeserver's answer was not what the endpoint returns.
    #[error("{endpoint}: unexpected response: {reason}")]
    Response {
        endpoint: &'static str,
        reason: String,
    },
    /// The request never got an answer (connection refused, timeout, ...).
    #[error("{endpoint}: {source}")]
    Transport {
        endpoint: &'static str,
        source: reqwest::Error,
    },
    /// The request could not be built (a bug in the caller).
    #[error("{endpoint}: building the request: {source}")]
    Build {
        endpoint: &'static str,
        source: ruma::api::error::IntoHttpError,
    },
}

impl CallError {
    /// The Matrix error code, when the homeserver answered with one.
    pub fn error_kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Matrix { error, .. } => error.error_kind(),
            _ => None,
        }
    }

    /// Worth retrying later: the homeserver was unreachable or answered 5xx
    /// or 429, so nothing the bridge sent was wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Matrix { error, .. } => {
                error.status_code.is_server_error()
                    || error.status_code == http::StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// The Matrix error inside an endpoint's error type: endpoints with
/// user-interactive auth wrap it, all others are it.
pub trait EndpointMatrixError: Sized {
    fn into_matrix_error(self) -> Result<MatrixError, String>;
}

impl EndpointMatrixError for MatrixError {
    fn into_matrix_error(self) -> Result<MatrixError, String> {
        Ok(self)
    }
}

impl EndpointMatrixError for UiaaResponse {
    fn into_matrix_error(self) -> Result<MatrixError, String> {
        match self {
            Self::MatrixError(error) => Ok(error),
            // Appservices register ghosts without user-interactive auth.
            Self::AuthResponse(_) => {
                Err("the homeserver asked for user-interactive authentication".to_owned())
            }
        }
    }
}

/// Picks the path of an endpoint: the homeserver speaks the current spec,
/// so versioned endpoints take their newest stable path.
pub trait PathChoice: PathBuilder {
    fn choose<'a>(versions: &'a SupportedVersions) -> Self::Input<'a>;
}

impl PathChoice for VersionHistory {
    fn choose<'a>(versions: &'a SupportedVersions) -> Cow<'a, SupportedVersions> {
        Cow::Borrowed(versions)
    }
}

impl PathChoice for SinglePath {
    fn choose(_: &SupportedVersions) {}
}

/// The bridge's connection to its homeserver.
#[derive(Clone)]
pub struct HomeserverClient {
    http: reqwest::Client,
    base_url: String,
    as_token: String,
    versions: SupportedVersions,
}

impl HomeserverClient {
    /// `base_url` without a trailing slash, e.g. `http://127.0.0.1:8008`.
    pub fn new(base_url: &str, as_token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the homeserver client")?;
        let versions = SupportedVersions::from_parts(&["v1.11".to_owned()], &Default::default());
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            as_token: as_token.to_owned(),
            versions,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends `request` as the appservice's bot (`sender_localpart`).
    pub async fn send<R>(&self, request: R) -> Result<R::IncomingResponse, CallError>
    where
        R: OutgoingRequest,
        R::EndpointError: EndpointMatrixError,
        R::PathBuilder: PathChoice,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.send_as(request, None, None).await
    }

    /// Sends `request` as `user` (a ghost in the appservice's namespace),
    /// and as its `device` when given (for the crypto endpoints).
    pub async fn send_as<R>(
        &self,
        request: R,
        user: Option<&UserId>,
        device: Option<&DeviceId>,
    ) -> Result<R::IncomingResponse, CallError>
    where
        R: OutgoingRequest,
        R::EndpointError: EndpointMatrixError,
        R::PathBuilder: PathChoice,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let endpoint = std::any::type_name::<R>();
        let mut identity = AppserviceUserIdentity::default();
        identity.user_id = user;
        identity.device_id = device;
        let request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base_url,
                SendAccessToken::Appservice(&self.as_token),
                identity,
                R::PathBuilder::choose(&self.versions),
            )
            .map_err(|source| CallError::Build { endpoint, source })?;
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))
            .map_err(|source| CallError::Transport { endpoint, source })?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|source| CallError::Transport { endpoint, source })?;
        let mut http_response = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            http_response = http_response.header(name, value);
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| CallError::Transport { endpoint, source })?;
        let http_response = http_response
            .body(body)
            .expect("status and headers came from a valid response");
        R::IncomingResponse::try_from_http_response(http_response).map_err(|err| match err {
            FromHttpResponseError::Server(error) => match error.into_matrix_error() {
                Ok(error) => CallError::Matrix { endpoint, error },
                Err(reason) => CallError::Response { endpoint, reason },
            },
            other => CallError::Response {
                endpoint,
                reason: other.to_string(),
            },
        })
    }
}
