//! Membership changes: join, invite, leave, kick, ban, unban, and profile
//! changes carried into every joined room. Each is one `m.room.member`
//! event through the room's writer; the authorization rules decide whether
//! the sender may make it.

use ruma::{OwnedEventId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Map, Value as JsonValue};

use super::writer::{NewEvent, RoomWriter};
use crate::{
    http::ApiResult,
    server::Homeserver,
    storage::{memberships, users},
};

/// A membership change requested by `sender` for `target`.
pub struct MembershipRequest<'a> {
    pub sender: &'a UserId,
    pub target: &'a UserId,
    pub membership: &'a str,
    pub reason: Option<&'a str>,
    /// `is_direct` on invites.
    pub is_direct: bool,
}

/// The content of a member event: the target's profile for joins and
/// invites, the reason when given.
pub async fn member_content(server: &Homeserver, request: &MembershipRequest<'_>) -> ApiResult<JsonValue> {
    let mut content = Map::new();
    content.insert("membership".into(), request.membership.into());
    if matches!(request.membership, "join" | "invite")
        && request.target.server_name() == server.server_name()
        && let Some(profile) = users::profile(server.db.user_shard(request.target), request.target).await?
    {
        if let Some(name) = profile.displayname {
            content.insert("displayname".into(), name.into());
        }
        if let Some(url) = profile.avatar_url {
            content.insert("avatar_url".into(), url.into());
        }
    }
    if let Some(reason) = request.reason {
        content.insert("reason".into(), reason.into());
    }
    if request.is_direct {
        content.insert("is_direct".into(), true.into());
    }
    Ok(JsonValue::Object(content))
}

/// Appends one membership event to the room and commits.
pub async fn change_membership(server: &Homeserver, room_id: &RoomId, request: MembershipRequest<'_>) -> ApiResult<OwnedEventId> {
    let content = member_content(server, &request).await?;
    RoomWriter::append_one(server, room_id, request.sender, NewEvent::state(TimelineEventType::RoomMember, request.target.as_str(), content), None).await
}


/// Leaves every room the user is joined to and rejects every invite
/// (account deactivation).
pub async fn leave_all_rooms(server: &Homeserver, user_id: &UserId) -> ApiResult<()> {
    let rooms = memberships::rooms_of_user(server.db.user_shard(user_id), user_id).await?;
    for room in rooms.iter().filter(|room| matches!(room.membership.as_str(), "join" | "invite" | "knock")) {
        let Some(room_id) = room.room_id() else { continue };
        let request = MembershipRequest { sender: user_id, target: user_id, membership: "leave", reason: None, is_direct: false };
        change_membership(server, &room_id, request).await?;
    }
    Ok(())
}

/// Sends a new member event with the user's current profile into every
/// joined room, so other members see a changed name or avatar.
pub async fn refresh_profile_in_rooms(server: &Homeserver, user_id: &UserId) -> ApiResult<()> {
    for room_id in memberships::joined_rooms(server.db.user_shard(user_id), user_id).await? {
        let request = MembershipRequest { sender: user_id, target: user_id, membership: "join", reason: None, is_direct: false };
        let content = member_content(server, &request).await?;
        let event = NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content);
        // One room refusing the event (e.g. its power levels changed) must
        // not keep the others from seeing the new profile.
        if let Err(err) = RoomWriter::append_one(server, &room_id, user_id, event, None).await {
            tracing::warn!(%room_id, %user_id, errcode = %err.errcode(), "profile not carried into room");
        }
    }
    Ok(())
}

/// Whether two users share a joined room: their indexes intersect (each on
/// its own user's database).
pub async fn share_a_room(server: &Homeserver, a: &UserId, b: &UserId) -> ApiResult<bool> {
    let rooms_of_a: std::collections::BTreeSet<_> = memberships::joined_rooms(server.db.user_shard(a), a).await?.into_iter().collect();
    let rooms_of_b = memberships::joined_rooms(server.db.user_shard(b), b).await?;
    Ok(rooms_of_b.iter().any(|room| rooms_of_a.contains(room)))
}

/// The user and everyone joined to a room the user is joined to: who sees
/// the user's presence and must track the user's devices.
pub async fn users_sharing_rooms(server: &Homeserver, user_id: &UserId) -> ApiResult<std::collections::BTreeSet<ruma::OwnedUserId>> {
    let rooms = memberships::joined_rooms(server.db.user_shard(user_id), user_id).await?;
    let mut users = std::collections::BTreeSet::from([user_id.to_owned()]);
    for (shard, rooms) in server.db.rooms_by_shard(&rooms) {
        users.extend(memberships::joined_members_of_rooms(&shard.pool, &rooms).await?);
    }
    Ok(users)
}
