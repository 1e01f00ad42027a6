//! Profiles: `/profile/{userId}` and its `displayname` and `avatar_url`
//! fields. Reading takes an access token on this server and a shared room
//! (TI-M A_26289, `tim::privacy`); writing is for the user themself, and every
//! change is carried into the rooms they are joined to as a new member
//! event.

use axum::Router;
use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{
        AvatarUrl, DisplayName, StaticProfileField, get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
    },
};

use super::require_own_account;
use crate::{
    http::{ApiError, ApiResult, Args, Authenticated, RouterExt},
    rooms::membership,
    server::Homeserver,
    storage::users::{self, Profile},
    tim::privacy,
};

/// Longest display name we store (as Synapse does).
const MAX_DISPLAYNAME_CHARS: usize = 256;
/// Longest avatar URL we store.
const MAX_AVATAR_URL_BYTES: usize = 1000;

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(get_profile)
        .endpoint(get_displayname)
        .endpoint(set_displayname)
        .endpoint(get_avatar_url)
        .endpoint(set_avatar_url)
}

/// The profile of an active local user, if `viewer` may see it. Unknown,
/// deactivated and remote users (there is no federation) are all 404.
async fn profile_of(server: &Homeserver, viewer: &UserId, user_id: &UserId) -> ApiResult<Profile> {
    privacy::check_profile_lookup(server, viewer, user_id).await?;
    let not_found = || ApiError::not_found("Profile not found");
    if user_id.server_name() != server.server_name() {
        return Err(not_found());
    }
    users::profile(server.db.user_shard(user_id), user_id).await?.ok_or_else(not_found)
}

async fn get_profile(server: Homeserver, args: Args<Authenticated<get_profile::v3::Request>>) -> ApiResult<get_profile::v3::Response> {
    let profile = profile_of(&server, &args.session()?.user_id, &args.body.0.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = profile.displayname {
        response.set(DisplayName::NAME.to_owned(), name.into());
    }
    if let Some(url) = profile.avatar_url {
        response.set(AvatarUrl::NAME.to_owned(), url.into());
    }
    Ok(response)
}

async fn get_displayname(server: Homeserver, args: Args<Authenticated<get_display_name::v3::Request>>) -> ApiResult<get_display_name::v3::Response> {
    let profile = profile_of(&server, &args.session()?.user_id, &args.body.0.user_id).await?;
    Ok(get_display_name::v3::Response::new(profile.displayname))
}

async fn get_avatar_url(server: Homeserver, args: Args<Authenticated<get_avatar_url::v3::Request>>) -> ApiResult<get_avatar_url::v3::Response> {
    let profile = profile_of(&server, &args.session()?.user_id, &args.body.0.user_id).await?;
    Ok(get_avatar_url::v3::Response::new(profile.avatar_url.map(OwnedMxcUri::from)))
}

/// Sets or (with `null` or `""`) removes the display name.
async fn set_displayname(server: Homeserver, args: Args<set_display_name::v3::Request>) -> ApiResult<set_display_name::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    require_own_account(session, &request.user_id)?;
    let name = request.displayname.as_deref().filter(|name| !name.is_empty());
    if name.is_some_and(|name| name.chars().count() > MAX_DISPLAYNAME_CHARS) {
        return Err(ApiError::invalid_param(format!("Display name is longer than {MAX_DISPLAYNAME_CHARS} characters")));
    }
    set_field(&server, &session.user_id, Field::DisplayName, name).await?;
    Ok(set_display_name::v3::Response::new())
}

/// Sets or (with `null` or `""`) removes the avatar, which must be an
/// `mxc://` URI.
async fn set_avatar_url(server: Homeserver, args: Args<set_avatar_url::v3::Request>) -> ApiResult<set_avatar_url::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    require_own_account(session, &request.user_id)?;
    let url = request.avatar_url.as_deref().filter(|url| !url.as_str().is_empty());
    if let Some(url) = url {
        if url.validate().is_err() {
            return Err(ApiError::invalid_param("avatar_url must be an mxc:// URI"));
        }
        if url.as_str().len() > MAX_AVATAR_URL_BYTES {
            return Err(ApiError::invalid_param(format!("avatar_url is longer than {MAX_AVATAR_URL_BYTES} bytes")));
        }
    }
    set_field(&server, &session.user_id, Field::AvatarUrl, url.map(|url| url.as_str())).await?;
    Ok(set_avatar_url::v3::Response::new())
}

/// A profile field a client may set.
#[derive(Clone, Copy)]
enum Field {
    DisplayName,
    AvatarUrl,
}

impl Field {
    fn value(self, profile: &Profile) -> Option<&str> {
        match self {
            Self::DisplayName => profile.displayname.as_deref(),
            Self::AvatarUrl => profile.avatar_url.as_deref(),
        }
    }
}

/// Stores the new value and sends a member event with it into every joined
/// room. Setting the value the field already has changes nothing, so
/// repeated requests do not flood rooms with member events.
async fn set_field(server: &Homeserver, user_id: &UserId, field: Field, value: Option<&str>) -> ApiResult<()> {
    let db = server.db.user_shard(user_id);
    let current = users::profile(db, user_id).await?.unwrap_or_default();
    if field.value(&current) == value {
        return Ok(());
    }
    match field {
        Field::DisplayName => users::set_displayname(db, user_id, value).await?,
        Field::AvatarUrl => users::set_avatar_url(db, user_id, value).await?,
    }
    // The profile itself is saved; a room that refuses the member event
    // must not turn that into an error the client would retry.
    if let Err(err) = membership::refresh_profile_in_rooms(server, user_id).await {
        tracing::warn!(%user_id, error = ?err, "profile change not carried into every room");
    }
    Ok(())
}
