//! TI-M's account-kind query (`GET /_tim/appservice/v1/users/{user_id}/kind`,
//! a homeserver extension for appservices): whether a user is staff or an
//! insured person. Only staff may add KIM addresses to a room.
//!
//! ruma's `#[request]`/`#[response]` macros only work inside ruma's own
//! crates, so the two trait impls are written out; the metadata is ruma's.

use bytes::BufMut;
use ruma::{
    OwnedUserId,
    api::{
        EndpointError as _, IncomingResponse, Metadata as _, OutgoingRequest,
        auth_scheme::{AccessToken, AuthScheme as _, SendAccessToken},
        error::{DeserializationError, Error as MatrixError, FromHttpResponseError, IntoHttpError},
    },
    metadata,
};
use serde::{Deserialize, Serialize};

metadata! {
    method: GET,
    rate_limited: false,
    authentication: AccessToken,
    path: "/_tim/appservice/v1/users/{user_id}/kind",
}

#[derive(Clone, Debug)]
pub struct Request {
    pub user_id: OwnedUserId,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Response {
    pub kind: AccountKind,
}

impl Request {
    pub fn new(user_id: OwnedUserId) -> Self {
        Self { user_id }
    }
}

/// Whose an account is (TI-M: Versicherter or Org-User).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Insured,
    Staff,
}

impl OutgoingRequest for Request {
    type EndpointError = MatrixError;
    type IncomingResponse = Response;

    fn try_into_http_request<T: Default + BufMut + AsRef<[u8]>>(
        self,
        base_url: &str,
        access_token: SendAccessToken<'_>,
        path_builder_input: (),
    ) -> Result<http::Request<T>, IntoHttpError> {
        let url = Self::make_endpoint_url(path_builder_input, base_url, &[&self.user_id], "")?;
        let mut request = http::Request::builder()
            .method(Self::METHOD)
            .uri(url)
            .body(Self::empty_request_body::<T>())?;
        AccessToken::add_authentication(&mut request, access_token)
            .map_err(|err| IntoHttpError::Authentication(err.into()))?;
        Ok(request)
    }
}

impl IncomingResponse for Response {
    type EndpointError = MatrixError;

    fn try_from_http_response<T: AsRef<[u8]>>(
        response: http::Response<T>,
    ) -> Result<Self, FromHttpResponseError<MatrixError>> {
        if !response.status().is_success() {
            return Err(FromHttpResponseError::Server(
                MatrixError::from_http_response(response),
            ));
        }
        serde_json::from_slice(response.body().as_ref())
            .map_err(|err| FromHttpResponseError::Deserialization(DeserializationError::Json(err)))
    }
}
