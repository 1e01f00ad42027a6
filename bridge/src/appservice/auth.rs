//! The homeserver authenticates itself with the registration's `hs_token`:
//! `Authorization: Bearer` (spec v1.4+) or the legacy `access_token` query
//! parameter. Compared in constant time.

use http::{HeaderMap, Uri};
use subtle::ConstantTimeEq as _;

use super::error::{ApiError, ApiResult};

pub fn check_hs_token(expected: &str, headers: &HeaderMap, uri: &Uri) -> ApiResult<()> {
    let from_header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let token = from_header.or_else(|| {
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .find(|(key, _)| key == "access_token")
            .map(|(_, value)| value.into_owned())
    });
    let token = token.ok_or_else(ApiError::unauthorized)?;
    if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}
