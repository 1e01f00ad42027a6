//! Membership endpoints: join (by id or alias), invite, leave, forget,
//! kick, ban, unban, and the member lists.

use std::collections::BTreeMap;

use axum::Router;
use ruma::{
    OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, RoomOrAliasId, UserId,
    api::client::membership::{
        ban_user, forget_room, get_member_events, invite_user::{self, v3::InvitationRecipient}, join_room_by_id,
        join_room_by_id_or_alias, joined_members::{self, v3::RoomMember}, joined_rooms, kick_user, leave_room, unban_user,
    },
    events::room::member::MembershipState,
};

use crate::{
    appservice,
    http::{ApiError, ApiResult, Args, RouterExt},
    rooms::{membership::{MembershipRequest, change_membership}, visibility::HistoryAccess},
    server::Homeserver,
    storage::{self, aliases, events, memberships},
    tim::permissions,
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(join_by_id)
        .endpoint(join_by_id_or_alias)
        .endpoint(invite)
        .endpoint(leave)
        .endpoint(forget)
        .endpoint(kick)
        .endpoint(ban)
        .endpoint(unban)
        .endpoint(list_joined_rooms)
        .endpoint(members)
        .endpoint(list_joined_members)
}

/// `sender` changes its own or `target`'s membership.
async fn apply(server: &Homeserver, room_id: &RoomId, sender: &UserId, target: &UserId, membership: &str, reason: Option<&str>) -> ApiResult<()> {
    change_membership(server, room_id, MembershipRequest { sender, target, membership, reason, is_direct: false }).await?;
    Ok(())
}

async fn join_by_id(server: Homeserver, args: Args<join_room_by_id::v3::Request>) -> ApiResult<join_room_by_id::v3::Response> {
    let user = &args.session()?.user_id;
    apply(&server, &args.body.room_id, user, user, "join", args.body.reason.as_deref()).await?;
    Ok(join_room_by_id::v3::Response::new(args.body.room_id))
}

async fn join_by_id_or_alias(server: Homeserver, args: Args<join_room_by_id_or_alias::v3::Request>) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let user = &args.session()?.user_id;
    let room_id = resolve_room(&server, &args.body.room_id_or_alias).await?;
    apply(&server, &room_id, user, user, "join", args.body.reason.as_deref()).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// A room id, or the room a local alias points at (404 for unknown aliases;
/// remote aliases need federation).
pub async fn resolve_room(server: &Homeserver, id_or_alias: &RoomOrAliasId) -> ApiResult<OwnedRoomId> {
    match <&RoomId>::try_from(id_or_alias) {
        Ok(room_id) => Ok(room_id.to_owned()),
        Err(alias) => {
            let resolved = appservice::queries::alias(server, alias, || async { Ok(aliases::resolve(server.db.alias_shard(alias), alias).await?) }).await?;
            let (room_id, _) = resolved.ok_or_else(|| ApiError::not_found("Room alias not found"))?;
            OwnedRoomId::try_from(room_id).map_err(|err| ApiError::Internal(err.into()))
        }
    }
}

/// Invites a user whose TI-M permission config accepts the sender
/// (`tim::permissions`).
async fn invite(server: Homeserver, args: Args<invite_user::v3::Request>) -> ApiResult<invite_user::v3::Response> {
    let session = args.session()?;
    let InvitationRecipient::UserId(recipient) = &args.body.recipient else {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ruma::api::error::ErrorKind::Unrecognized, "Third-party invites are not supported"));
    };
    let target = &recipient.user_id;
    permissions::check_invite(&server, session, target).await?;
    apply(&server, &args.body.room_id, &session.user_id, target, "invite", recipient.reason.as_deref()).await?;
    Ok(invite_user::v3::Response::new())
}

async fn leave(server: Homeserver, args: Args<leave_room::v3::Request>) -> ApiResult<leave_room::v3::Response> {
    let user = &args.session()?.user_id;
    apply(&server, &args.body.room_id, user, user, "leave", args.body.reason.as_deref()).await?;
    Ok(leave_room::v3::Response::new())
}

async fn forget(server: Homeserver, args: Args<forget_room::v3::Request>) -> ApiResult<forget_room::v3::Response> {
    let user = &args.session()?.user_id;
    let room_id = &args.body.room_id;
    let membership = memberships::membership(server.db.room_shard(room_id), room_id, user).await?;
    match membership.as_deref() {
        None => return Err(ApiError::not_found("You have never been in this room")),
        Some("join" | "invite" | "knock") => return Err(ApiError::bad_json("Leave the room before forgetting it")),
        Some(_) => {}
    }
    memberships::forget(server.db.user_shard(user), user, room_id).await?;
    Ok(forget_room::v3::Response::new())
}

async fn kick(server: Homeserver, args: Args<kick_user::v3::Request>) -> ApiResult<kick_user::v3::Response> {
    let sender = &args.session()?.user_id;
    let current = memberships::membership(server.db.room_shard(&args.body.room_id), &args.body.room_id, &args.body.user_id).await?;
    if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
        return Err(ApiError::forbidden("The user is not in the room"));
    }
    apply(&server, &args.body.room_id, sender, &args.body.user_id, "leave", args.body.reason.as_deref()).await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban(server: Homeserver, args: Args<ban_user::v3::Request>) -> ApiResult<ban_user::v3::Response> {
    let sender = &args.session()?.user_id;
    apply(&server, &args.body.room_id, sender, &args.body.user_id, "ban", args.body.reason.as_deref()).await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban(server: Homeserver, args: Args<unban_user::v3::Request>) -> ApiResult<unban_user::v3::Response> {
    let sender = &args.session()?.user_id;
    let current = memberships::membership(server.db.room_shard(&args.body.room_id), &args.body.room_id, &args.body.user_id).await?;
    if current.as_deref() != Some("ban") {
        return Err(ApiError::forbidden("The user is not banned"));
    }
    apply(&server, &args.body.room_id, sender, &args.body.user_id, "leave", args.body.reason.as_deref()).await?;
    Ok(unban_user::v3::Response::new())
}

async fn list_joined_rooms(server: Homeserver, args: Args<joined_rooms::v3::Request>) -> ApiResult<joined_rooms::v3::Response> {
    let user = &args.session()?.user_id;
    Ok(joined_rooms::v3::Response::new(memberships::joined_rooms(server.db.user_shard(user), user).await?))
}

/// `GET /members`: member events as of now for members, as of leaving for
/// former members; filtered by `membership` / `not_membership`.
async fn members(server: Homeserver, args: Args<get_member_events::v3::Request>) -> ApiResult<get_member_events::v3::Response> {
    let session = args.session()?;
    let room_id = &args.body.room_id;
    let at = args.body.at.as_deref().map(str::parse::<crate::sync::token::SyncToken>).transpose()?;
    if let Some(at) = &at {
        at.follow_map(&server.db).await?;
    }
    let db = server.db.room_shard(room_id);
    let access = HistoryAccess::load(db, room_id, &session.user_id).await?;
    let upto = access.readable_upto(storage::stream::current(db).await?)?;
    let upto = match at {
        Some(at) => at.position_of(&server.db, room_id.as_str()).min(upto),
        None => upto,
    };
    let wanted = |membership: &str| {
        let state = MembershipState::from(membership);
        args.body.membership.as_ref().is_none_or(|m| *m == state) && args.body.not_membership.as_ref().is_none_or(|m| *m != state)
    };
    let chunk = events::state_at(db, room_id, upto, None)
        .await?
        .into_iter()
        .filter(|event| event.pdu.get("type").and_then(|t| t.as_str()) == Some("m.room.member"))
        .filter(|event| wanted(event.pdu.pointer("/content/membership").and_then(|m| m.as_str()).unwrap_or("leave")))
        .map(|event| event.to_client(None).raw())
        .collect();
    Ok(get_member_events::v3::Response::new(chunk))
}

async fn list_joined_members(server: Homeserver, args: Args<joined_members::v3::Request>) -> ApiResult<joined_members::v3::Response> {
    let session = args.session()?;
    let room_id = &args.body.room_id;
    let db = server.db.room_shard(room_id);
    if memberships::membership(db, room_id, &session.user_id).await?.as_deref() != Some("join") {
        return Err(ApiError::forbidden("You are not joined to this room"));
    }
    let joined: BTreeMap<OwnedUserId, RoomMember> = memberships::joined_profiles(db, room_id)
        .await?
        .into_iter()
        .filter_map(|(user_id, displayname, avatar_url)| {
            let mut member = RoomMember::new();
            member.display_name = displayname;
            member.avatar_url = avatar_url.map(OwnedMxcUri::from);
            Some((OwnedUserId::try_from(user_id).ok()?, member))
        })
        .collect();
    Ok(joined_members::v3::Response::new(joined))
}
