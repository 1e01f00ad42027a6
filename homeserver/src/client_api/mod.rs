//! The Client-Server API, one module per endpoint family. Each module's
//! `routes` adds its endpoints; handlers read top to bottom: check, act,
//! answer.

pub(crate) mod account;
mod account_data;
mod appservice;
pub mod admin;
mod devices;
mod directory;
mod discovery;
mod ephemeral;
mod key_backup;
mod keys;
mod media;
mod membership;
mod messages;
mod profile;
mod push_rules;
mod pushers;
mod rooms;
mod session;
mod sliding_sync;
mod sso;
mod state;
mod sync;

use axum::Router;
use ruma::UserId;

use crate::{
    http::{ApiError, ApiResult, Session},
    server::Homeserver,
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    let router = discovery::routes(router);
    let router = session::routes(router);
    let router = sso::routes(router);
    let router = account::routes(router);
    let router = admin::routes(router);
    let router = appservice::routes(router);
    let router = devices::routes(router);
    let router = profile::routes(router);
    let router = account_data::routes(router);
    let router = push_rules::routes(router);
    let router = pushers::routes(router);
    let router = rooms::routes(router);
    let router = membership::routes(router);
    let router = state::routes(router);
    let router = messages::routes(router);
    let router = directory::routes(router);
    let router = ephemeral::routes(router);
    let router = media::routes(router);
    let router = key_backup::routes(router);
    let router = keys::routes(router);
    let router = sliding_sync::routes(router);
    sync::routes(router)
}

/// Endpoints that name a user in the path (`/user/{userId}/…`, profile
/// writes) act on the caller's own account only.
fn require_own_account(session: &Session, user_id: &UserId) -> ApiResult<()> {
    if session.user_id != user_id {
        return Err(ApiError::forbidden("You may only access your own account"));
    }
    Ok(())
}
