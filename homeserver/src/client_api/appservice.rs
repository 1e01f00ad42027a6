//! Endpoints for appservices themselves: `POST /appservice/{id}/ping`
//! (the appservice asks the server to call its `/_matrix/app/v1/ping`, to
//! check both directions).

use axum::Router;
use ruma::api::client::appservice::request_ping;

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt},
    server::Homeserver,
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(ping)
}

/// Only the appservice itself may ping itself; failures are the spec's
/// `M_URL_NOT_SET`, `M_CONNECTION_FAILED`, `M_CONNECTION_TIMEOUT` and
/// `M_BAD_STATUS`.
async fn ping(server: Homeserver, args: Args<request_ping::v1::Request>) -> ApiResult<request_ping::v1::Response> {
    let session = args.session()?;
    let Some(appservice) = session.appservice.as_ref().filter(|appservice| appservice.id == args.body.appservice_id) else {
        return Err(ApiError::forbidden("Only the application service itself may ping it"));
    };
    let duration = server.appservices.client.ping(appservice, args.body.transaction_id.as_deref().map(|id| id.as_str())).await?;
    Ok(request_ping::v1::Response::new(duration))
}
