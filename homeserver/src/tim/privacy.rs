//! Privacy rules: what users may learn about each other. The user directory
//! (A_26375: only users who share a room with the searcher) is enforced by
//! its query in `client_api/directory.rs`, URL previews (A_26344) are not
//! routed at all (`client_api/media.rs`); profile lookups are judged here.

use ruma::UserId;

use crate::{
    http::{ApiError, ApiResult},
    rooms::membership::share_a_room,
    server::Homeserver,
};

/// A_26289: profiles are for authenticated callers only (the endpoints
/// demand a token: 401 without) who share a joined room with the user, or
/// are the user; anyone else gets 403 `M_FORBIDDEN`, unknown users too, so
/// that lookups cannot probe which accounts exist.
pub async fn check_profile_lookup(server: &Homeserver, viewer: &UserId, target: &UserId) -> ApiResult<()> {
    if viewer == target || share_a_room(server, viewer, target).await? {
        return Ok(());
    }
    Err(ApiError::forbidden("You share no room with this user"))
}
