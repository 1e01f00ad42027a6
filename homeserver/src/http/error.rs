//! The one error type of the Client-Server API. Every failure a handler can
//! meet turns into a Matrix error body (`errcode`, `error`) with the status
//! the spec names for it; internal failures are logged and answered with a
//! generic 500 that leaks nothing.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponse,
    client::uiaa::UiaaInfo,
    error::{ErrorBody, ErrorKind, FromHttpRequestError, DeserializationError, StandardErrorBody, UnknownTokenErrorData},
};

/// A failed request, as the client will see it.
#[derive(Debug)]
pub enum ApiError {
    /// A standard Matrix error.
    Matrix { status: StatusCode, kind: ErrorKind, message: String },
    /// User-interactive auth is needed (or a stage failed): 401 with the flows.
    Uiaa(Box<UiaaInfo>),
    /// Something broke on our side; the cause is logged, not sent.
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix { status, kind, message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }
    pub fn missing_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token")
    }
    pub fn unknown_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            "Unknown or expired access token",
        )
    }
    pub fn unrecognized() -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::Unrecognized, "Unrecognized request")
    }
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, ErrorKind::Unrecognized, "Method not allowed for this endpoint")
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, message)
    }

    /// The errcode, for logs and metrics.
    /// A write refused by a shard move's fence: the row's shard has just
    /// moved and this worker has not followed yet. Nothing was written; the
    /// client retries, by then on the new map.
    pub fn shard_moving() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unknown, "This data is moving to another database; try again in a moment")
    }

    pub fn errcode(&self) -> String {
        match self {
            Self::Matrix { kind, .. } => kind.errcode().to_string(),
            Self::Uiaa(_) => "M_UIAA".to_owned(),
            Self::Internal(_) => "M_UNKNOWN".to_owned(),
        }
    }
}

/// A request that ruma could not parse: bad JSON syntax is `M_NOT_JSON`,
/// JSON of the wrong shape or a bad identifier `M_BAD_JSON`, a bad query
/// parameter `M_INVALID_PARAM`.
impl From<FromHttpRequestError> for ApiError {
    fn from(err: FromHttpRequestError) -> Self {
        match err {
            FromHttpRequestError::MethodMismatch { .. } => Self::method_not_allowed(),
            FromHttpRequestError::Deserialization(err) => {
                let message = err.to_string();
                match err {
                    DeserializationError::Json(json) if json.is_syntax() || json.is_eof() => {
                        Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, message)
                    }
                    DeserializationError::Utf8(_) => Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, message),
                    DeserializationError::Query(_) | DeserializationError::Header(_) => {
                        Self::invalid_param(message)
                    }
                    _ => Self::bad_json(message),
                }
            }
            other => Self::bad_json(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::rebalance::fence::is_fenced(&err) {
            return Self::shard_moving();
        }
        Self::Internal(err.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        if err.downcast_ref::<sqlx::Error>().is_some_and(crate::rebalance::fence::is_fenced) {
            return Self::shard_moving();
        }
        Self::Internal(err)
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(err: serde_json::Error) -> Self {
        Self::Internal(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::Matrix { status, kind, message } => {
                let error = ruma::api::error::Error::new(status, ErrorBody::Standard(StandardErrorBody::new(kind, message)));
                return match error.try_into_http_response::<Vec<u8>>() {
                    Ok(response) => response.map(axum::body::Body::from),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
            }
            Self::Uiaa(info) => (StatusCode::UNAUTHORIZED, serde_json::to_vec(&*info).unwrap_or_default()),
            Self::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    br#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#.to_vec(),
                )
            }
        };
        (status, [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
