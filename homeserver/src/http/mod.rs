//! The HTTP layer: router, request extraction, authentication, errors.

pub mod auth;
pub mod client_address;
pub mod error;
pub mod limits;
pub mod router;
pub mod ruma;
pub mod security_headers;

pub use self::{
    auth::Session,
    error::{ApiError, ApiResult},
    ruma::{Args, Authenticated, RouterExt, raw_json},
};
