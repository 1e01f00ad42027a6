//! User and alias queries: when something looks up a local user or alias
//! that does not exist and an appservice's namespace covers it, the server
//! asks that appservice (`GET /_matrix/app/v1/users/{userId}` or
//! `/rooms/{roomAlias}`), which may create it on the spot, and looks once
//! more. The bridge creates a practice's ghost when staff first invites
//! it, and a portal room when someone first joins its alias.
//!
//! Profile lookups do not ask: TI-M (A_26289) refuses them for users who
//! share no room with the caller, which an unknown user never does.

use std::future::Future;

use ruma::{RoomAliasId, UserId};

use super::client::Query;
use crate::{http::ApiResult, server::Homeserver};

/// `lookup` of a local user, asking the user's appservice once when it
/// finds nothing.
pub async fn user<T, Fut>(server: &Homeserver, user_id: &UserId, lookup: impl Fn() -> Fut) -> ApiResult<Option<T>>
where
    Fut: Future<Output = ApiResult<Option<T>>>,
{
    if user_id.server_name() != server.server_name() {
        return lookup().await;
    }
    looked_up_or_asked(server, Query::User, user_id.as_str(), lookup).await
}

/// `lookup` of a local alias, asking the alias's appservice once when it
/// finds nothing.
pub async fn alias<T, Fut>(server: &Homeserver, alias: &RoomAliasId, lookup: impl Fn() -> Fut) -> ApiResult<Option<T>>
where
    Fut: Future<Output = ApiResult<Option<T>>>,
{
    if alias.server_name() != server.server_name() {
        return lookup().await;
    }
    looked_up_or_asked(server, Query::Alias, alias.as_str(), lookup).await
}

async fn looked_up_or_asked<T, Fut>(server: &Homeserver, query: Query, id: &str, lookup: impl Fn() -> Fut) -> ApiResult<Option<T>>
where
    Fut: Future<Output = ApiResult<Option<T>>>,
{
    if let Some(found) = lookup().await? {
        return Ok(Some(found));
    }
    let covers = |appservice: &super::Appservice| match query {
        Query::User => appservice.namespaces.is_user(id),
        Query::Alias => appservice.namespaces.is_alias(id),
    };
    let Some(appservice) = server.appservices.responsible_for(covers) else { return Ok(None) };
    if !server.appservices.client.query(appservice, query, id).await {
        return Ok(None);
    }
    lookup().await
}
