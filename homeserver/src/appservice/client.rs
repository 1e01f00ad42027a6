//! The server's HTTP calls to appservices, each authenticated with the
//! appservice's `hs_token`: transactions, pings, user and alias queries.
//!
//! Written with reqwest rather than ruma's appservice request types: those
//! need ruma's `appservice-api-c` feature, which would rebuild every crate
//! on ruma (matrix-sdk in the tests) for four small requests.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::StatusCode;
use ruma::api::error::{BadStatusErrorData, ErrorKind};
use serde_json::{Value as JsonValue, json};

use super::Appservice;
use crate::http::ApiError;

/// How long an appservice may take to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of an unexpected answer's body passed on in `M_BAD_STATUS`.
const MAX_ERROR_BODY: usize = 1024;

/// A failed call: why, and what the ping endpoint answers for it.
#[derive(Debug)]
pub enum CallError {
    UrlNotSet,
    Timeout,
    Connection(String),
    Status { status: StatusCode, body: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UrlNotSet => write!(f, "the appservice has no URL"),
            Self::Timeout => write!(f, "the appservice did not answer in time"),
            Self::Connection(reason) => write!(f, "connecting failed: {reason}"),
            Self::Status { status, .. } => write!(f, "the appservice answered {status}"),
        }
    }
}

/// The spec's errors of `POST /appservice/{id}/ping`.
impl From<CallError> for ApiError {
    fn from(err: CallError) -> Self {
        let message = err.to_string();
        match err {
            CallError::UrlNotSet => ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::UrlNotSet, message),
            CallError::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, ErrorKind::ConnectionTimeout, message),
            CallError::Connection(_) => ApiError::new(StatusCode::BAD_GATEWAY, ErrorKind::ConnectionFailed, message),
            CallError::Status { status, body } => {
                let mut data = BadStatusErrorData::new();
                data.status = Some(status);
                data.body = Some(body);
                ApiError::new(StatusCode::BAD_GATEWAY, ErrorKind::BadStatus(data), message)
            }
        }
    }
}

/// The HTTP client all calls to appservices share.
pub struct AppserviceClient {
    http: reqwest::Client,
}

impl AppserviceClient {
    pub fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // An appservice answers; it does not send the server elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the appservice client")?;
        Ok(Self { http })
    }

    /// `PUT /_matrix/app/v1/transactions/{txnId}`.
    pub async fn send_transaction(&self, appservice: &Appservice, txn_id: &str, body: &JsonValue) -> Result<(), CallError> {
        let url = endpoint(appservice, &["transactions", txn_id])?;
        self.call(appservice, self.http.put(url).json(body)).await
    }

    /// `POST /_matrix/app/v1/ping`; returns how long the appservice took.
    pub async fn ping(&self, appservice: &Appservice, transaction_id: Option<&str>) -> Result<Duration, CallError> {
        let url = endpoint(appservice, &["ping"])?;
        let body = match transaction_id {
            Some(id) => json!({ "transaction_id": id }),
            None => json!({}),
        };
        let started = Instant::now();
        self.call(appservice, self.http.post(url).json(&body)).await?;
        Ok(started.elapsed())
    }

    /// `GET /_matrix/app/v1/users/{userId}` or `/rooms/{roomAlias}`: whether
    /// the appservice says it has (now) created the user or room.
    pub async fn query(&self, appservice: &Appservice, kind: Query, id: &str) -> bool {
        let segment = match kind {
            Query::User => "users",
            Query::Alias => "rooms",
        };
        let Ok(url) = endpoint(appservice, &[segment, id]) else { return false };
        match self.call(appservice, self.http.get(url)).await {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(appservice = %appservice.id, error = %err, "appservice query unanswered");
                false
            }
        }
    }

    async fn call(&self, appservice: &Appservice, request: reqwest::RequestBuilder) -> Result<(), CallError> {
        let response = request.bearer_auth(&appservice.hs_token).send().await.map_err(|err| {
            if err.is_timeout() { CallError::Timeout } else { CallError::Connection(format!("{:#}", anyhow::Error::from(err))) }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = response.text().await.unwrap_or_default();
        if let Some((cut, _)) = body.char_indices().nth(MAX_ERROR_BODY) {
            body.truncate(cut);
        }
        Err(CallError::Status { status, body })
    }
}

/// What a query asks about.
#[derive(Clone, Copy, Debug)]
pub enum Query {
    User,
    Alias,
}

/// `<url>/_matrix/app/v1/<segments…>`, each segment percent-encoded.
fn endpoint(appservice: &Appservice, segments: &[&str]) -> Result<url::Url, CallError> {
    let mut url = appservice.url.clone().ok_or(CallError::UrlNotSet)?;
    url.path_segments_mut()
        .map_err(|()| CallError::Connection("the appservice URL cannot take a path".to_owned()))?
        .pop_if_empty()
        .extend(["_matrix", "app", "v1"])
        .extend(segments);
    Ok(url)
}
