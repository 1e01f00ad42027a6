//! One error type for the appservice endpoints, answered in the Matrix
//! error format (`errcode`, `error`) the homeserver expects.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errcode: &'static str,
    message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            errcode: "M_FORBIDDEN",
            message: "Bad hs_token".to_owned(),
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            errcode: "M_UNAUTHORIZED",
            message: "Missing hs_token".to_owned(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errcode: "M_NOT_FOUND",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errcode: "M_BAD_JSON",
            message: message.into(),
        }
    }

    /// Something on our side failed; the homeserver retries.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::warn!(%error, "appservice request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            errcode: "M_UNKNOWN",
            message: "Internal error".to_owned(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "errcode": self.errcode, "error": self.message });
        (self.status, Json(body)).into_response()
    }
}
