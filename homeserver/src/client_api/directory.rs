//! Directories: room aliases (`/directory/room/{roomAlias}`,
//! `/rooms/{roomId}/aliases`), the public room list (`/publicRooms`,
//! `/directory/list/room/{roomId}`) and the user directory
//! (`/user_directory/search`).
//!
//! The server does not federate: remote aliases and remote room lists are
//! not found, and the user directory only knows users who share a joined
//! room with the searcher (TI-M A_26375). Insured persons neither read nor
//! add to the public room list (`tim::room_rules`).

use std::collections::BTreeMap;

use axum::Router;
use ruma::{
    OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, ServerName, UInt, UserId,
    api::{
        client::{
            alias::{create_alias, delete_alias, get_alias},
            directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
            room::{Visibility, aliases},
            user_directory::search_users,
        },
        error::ErrorKind,
    },
    directory::{Filter, PublicRoomsChunk, PublicRoomsChunkInit, RoomNetwork},
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsSource},
    },
    room::{JoinRuleKind, RoomType},
    room_version_rules::AuthorizationRules,
};
use serde_json::Value as JsonValue;

use crate::{
    appservice,
    http::{ApiError, ApiResult, Args, Authenticated, RouterExt},
    rooms::writer::rules_of,
    server::Homeserver,
    storage::{
        self,
        directory::{self, PublishedRoomsQuery},
        events, memberships,
    },
    tim::room_rules,
};

/// Rooms per `/publicRooms` page when the client names no limit, and the
/// most it may ask for.
const DEFAULT_PUBLIC_ROOMS_LIMIT: u64 = 100;
const MAX_PUBLIC_ROOMS_LIMIT: u64 = 500;
/// The most users one user directory search returns.
const MAX_USER_SEARCH_LIMIT: u64 = 100;

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(create_alias)
        .endpoint(get_alias)
        .endpoint(delete_alias)
        .endpoint(room_aliases)
        .endpoint(get_visibility)
        .endpoint(set_visibility)
        .endpoint(public_rooms)
        .endpoint(public_rooms_filtered)
        .endpoint(search_users)
}

// ------------------------------------------------------------------ helpers

fn unknown_room() -> ApiError {
    ApiError::not_found("Unknown room")
}

/// Aliases this server may hand out are on this server.
fn require_local_alias(server_name: &ServerName, alias: &RoomAliasId) -> ApiResult<()> {
    if alias.server_name() != server_name {
        return Err(ApiError::invalid_param(format!("Room alias must be on {server_name}")));
    }
    Ok(())
}

async fn is_joined(server: &Homeserver, room_id: &RoomId, user_id: &UserId) -> ApiResult<bool> {
    let membership = memberships::membership(server.db.room_shard(room_id), room_id, user_id).await?;
    Ok(membership.as_deref() == Some("join"))
}

/// Content and sender of the room's current state event `(event_type, "")`.
async fn state_event(server: &Homeserver, room_id: &RoomId, event_type: StateEventType) -> ApiResult<Option<(JsonValue, String)>> {
    let entry = events::current_state_entry(server.db.room_shard(room_id), room_id, &event_type.to_string(), "").await?;
    Ok(entry.map(|(_, content, sender)| (content, sender)))
}

/// Whether a joined member may list or unlist the room: they may change
/// its canonical alias (moderators and admins under default power levels).
async fn may_edit_directory(server: &Homeserver, room_id: &RoomId, user_id: &UserId) -> ApiResult<bool> {
    if !is_joined(server, room_id, user_id).await? {
        return Ok(false);
    }
    let version = events::room_version(server.db.room_shard(room_id), room_id).await?.ok_or_else(unknown_room)?;
    let version = RoomVersionId::try_from(version).map_err(|err| ApiError::Internal(err.into()))?;
    let creators = state_event(server, room_id, StateEventType::RoomCreate)
        .await?
        .and_then(|(_, sender)| OwnedUserId::try_from(sender).ok());
    let power_levels = state_event(server, room_id, StateEventType::RoomPowerLevels).await?.map(|(content, _)| content);
    can_change_canonical_alias(power_levels, creators, &rules_of(&version)?.authorization, user_id)
}

/// The power-level check behind [`may_edit_directory`], on the room's
/// `m.room.power_levels` content (the spec's defaults when there is none).
fn can_change_canonical_alias(power_levels: Option<JsonValue>, creators: Option<OwnedUserId>, rules: &AuthorizationRules, user_id: &UserId) -> ApiResult<bool> {
    let source = match power_levels {
        Some(content) => RoomPowerLevelsSource::Original(serde_json::from_value(content)?),
        None => RoomPowerLevelsSource::None,
    };
    let levels = RoomPowerLevels::new(source, rules, creators);
    Ok(levels.user_can_send_state(user_id, StateEventType::RoomCanonicalAlias))
}

// ------------------------------------------------------------------ aliases

/// Points a new alias at a room the caller is joined to; 409 if taken.
async fn create_alias(server: Homeserver, args: Args<create_alias::v3::Request>) -> ApiResult<create_alias::v3::Response> {
    let session = args.session()?;
    let user_id = &session.user_id;
    let request = &args.body;
    require_local_alias(server.server_name(), &request.room_alias)?;
    server.appservices.ensure_alias_unclaimed(request.room_alias.as_str(), session.appservice.as_deref())?;
    if events::room_version(server.db.room_shard(&request.room_id), &request.room_id).await?.is_none() {
        return Err(unknown_room());
    }
    if !is_joined(&server, &request.room_id, user_id).await? {
        return Err(ApiError::forbidden("You are not joined to this room"));
    }
    if !storage::aliases::add(server.db.alias_shard(&request.room_alias), &request.room_alias, &request.room_id, user_id).await? {
        return Err(ApiError::new(http::StatusCode::CONFLICT, ErrorKind::Unknown, "Room alias already exists"));
    }
    tracing::info!(alias = %request.room_alias, room_id = %request.room_id, %user_id, "room alias created");
    Ok(create_alias::v3::Response::new())
}

async fn get_alias(server: Homeserver, args: Args<get_alias::v3::Request>) -> ApiResult<get_alias::v3::Response> {
    let alias = &args.body.room_alias;
    let not_found = || ApiError::not_found("Room alias not found");
    if alias.server_name() != server.server_name() {
        return Err(not_found());
    }
    let resolved = appservice::queries::alias(&server, alias, || async { Ok(storage::aliases::resolve(server.db.alias_shard(alias), alias).await?) }).await?;
    let (room_id, _) = resolved.ok_or_else(not_found)?;
    let room_id = OwnedRoomId::try_from(room_id).map_err(|err| ApiError::Internal(err.into()))?;
    Ok(get_alias::v3::Response::new(room_id, vec![server.server_name().to_owned()]))
}

/// Removes an alias; only its creator or a server admin may.
async fn delete_alias(server: Homeserver, args: Args<delete_alias::v3::Request>) -> ApiResult<delete_alias::v3::Response> {
    let session = args.session()?;
    let alias = &args.body.room_alias;
    let db = server.db.alias_shard(alias);
    let (_, creator) = storage::aliases::resolve(db, alias).await?.ok_or_else(|| ApiError::not_found("Room alias not found"))?;
    if creator != session.user_id.as_str() && !session.is_admin {
        return Err(ApiError::forbidden("Only the alias's creator or a server admin may delete it"));
    }
    storage::aliases::remove(db, alias).await?;
    tracing::info!(%alias, user_id = %session.user_id, "room alias deleted");
    Ok(delete_alias::v3::Response::new())
}

/// The room's local aliases, for its members (or anyone when its history
/// is world-readable).
async fn room_aliases(server: Homeserver, args: Args<aliases::v3::Request>) -> ApiResult<aliases::v3::Response> {
    let user_id = &args.session()?.user_id;
    let room_id = &args.body.room_id;
    let world_readable = || async {
        let visibility = state_event(&server, room_id, StateEventType::RoomHistoryVisibility).await?;
        ApiResult::Ok(visibility.is_some_and(|(content, _)| content["history_visibility"] == "world_readable"))
    };
    if !is_joined(&server, room_id, user_id).await? && !world_readable().await? {
        return Err(ApiError::forbidden("You are not joined to this room"));
    }
    let mut found = Vec::new();
    // Aliases are sharded by alias, so a room's aliases may be anywhere.
    for shard in server.db.shards() {
        found.extend(storage::aliases::of_room(&shard.pool, room_id).await?);
    }
    let mut aliases: Vec<OwnedRoomAliasId> = found.into_iter().filter_map(|alias| OwnedRoomAliasId::try_from(alias).ok()).collect();
    aliases.sort();
    aliases.dedup();
    Ok(aliases::v3::Response::new(aliases))
}

// ------------------------------------------------------- public room list

async fn get_visibility(server: Homeserver, args: Args<get_room_visibility::v3::Request>) -> ApiResult<get_room_visibility::v3::Response> {
    let room_id = &args.body.room_id;
    let published = directory::is_published(server.db.room_shard(room_id), room_id).await?.ok_or_else(unknown_room)?;
    Ok(get_room_visibility::v3::Response::new(if published { Visibility::Public } else { Visibility::Private }))
}

/// Lists or unlists the room; see [`may_edit_directory`] for who may.
async fn set_visibility(server: Homeserver, args: Args<set_room_visibility::v3::Request>) -> ApiResult<set_room_visibility::v3::Response> {
    let user_id = &args.session()?.user_id;
    let request = &args.body;
    let published = match request.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(ApiError::invalid_param("visibility must be \"public\" or \"private\"")),
    };
    let db = server.db.room_shard(&request.room_id);
    if directory::is_published(db, &request.room_id).await?.is_none() {
        return Err(unknown_room());
    }
    room_rules::check_room_publication(args.session()?.kind, published)?;
    if !may_edit_directory(&server, &request.room_id, user_id).await? {
        return Err(ApiError::forbidden("You may not change this room's directory listing"));
    }
    directory::set_published(db, &request.room_id, published).await?;
    tracing::info!(room_id = %request.room_id, %user_id, published, "room directory visibility changed");
    Ok(set_room_visibility::v3::Response::new())
}

/// The public room list, for authenticated callers (TI-M A_26518) who may
/// read it (A_28587).
async fn public_rooms(server: Homeserver, args: Args<Authenticated<get_public_rooms::v3::Request>>) -> ApiResult<get_public_rooms::v3::Response> {
    room_rules::check_public_room_list(args.session()?)?;
    let request = args.body.0;
    let page = list_public_rooms(&server, request.server.as_deref(), request.limit, request.since.as_deref(), &Filter::new(), &RoomNetwork::Matrix).await?;
    let mut response = get_public_rooms::v3::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = page.total_room_count_estimate;
    Ok(response)
}

async fn public_rooms_filtered(server: Homeserver, args: Args<get_public_rooms_filtered::v3::Request>) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    room_rules::check_public_room_list(args.session()?)?;
    let request = &args.body;
    list_public_rooms(&server, request.server.as_deref(), request.limit, request.since.as_deref(), &request.filter, &request.room_network).await
}

/// One page of the public room list, most joined members first. `since`
/// tokens are offsets into the list.
async fn list_public_rooms(
    server: &Homeserver,
    from_server: Option<&ServerName>,
    limit: Option<UInt>,
    since: Option<&str>,
    filter: &Filter,
    network: &RoomNetwork,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    if from_server.is_some_and(|name| name != server.server_name()) {
        return Err(ApiError::invalid_param("This server only has its own room directory"));
    }
    let mut response = get_public_rooms_filtered::v3::Response::new();
    if let RoomNetwork::ThirdParty(_) = network {
        // No bridged networks publish rooms here.
        return Ok(response);
    }
    let offset = parse_since(since)?;
    let limit = limit.map_or(DEFAULT_PUBLIC_ROOMS_LIMIT, u64::from).min(MAX_PUBLIC_ROOMS_LIMIT);
    let search_term = filter.generic_search_term.as_deref().map(str::trim).filter(|term| !term.is_empty());
    let room_types: Vec<&str> = filter.room_types.iter().map(|kind| kind.as_str().unwrap_or("")).collect();
    let query = PublishedRoomsQuery {
        search_term,
        room_types: (!room_types.is_empty()).then_some(room_types.as_slice()),
        // Each shard's first `offset + limit` rooms, plus one to tell
        // whether there is a next page.
        limit: i64::try_from(offset.saturating_add(limit).saturating_add(1)).unwrap_or(i64::MAX),
    };

    let mut rooms = Vec::new();
    let mut total: u64 = 0;
    for shard in server.db.shards() {
        let found = directory::published_rooms(&shard.pool, query).await?;
        total += found.first().map_or(0, |room| u64::try_from(room.total).unwrap_or(0));
        rooms.extend(found);
    }
    rooms.sort_by(|a, b| b.num_joined_members.cmp(&a.num_joined_members).then_with(|| a.room_id.cmp(&b.room_id)));
    let has_more = u64::try_from(rooms.len()).unwrap_or(u64::MAX) > offset.saturating_add(limit);

    let (skip, take) = (usize::try_from(offset).unwrap_or(usize::MAX), usize::try_from(limit).unwrap_or(usize::MAX));
    response.chunk = rooms.into_iter().skip(skip).take(take).filter_map(to_chunk).collect();
    response.prev_batch = (offset > 0).then(|| offset.saturating_sub(limit).to_string());
    response.next_batch = has_more.then(|| (offset + limit).to_string());
    response.total_room_count_estimate = UInt::new(total);
    Ok(response)
}

/// The offset a `since` token stands for (0 without one).
fn parse_since(since: Option<&str>) -> ApiResult<u64> {
    since.map_or(Ok(0), |token| token.parse().map_err(|_| ApiError::invalid_param("Invalid since token")))
}

/// What a client shows of a published room; `None` for a corrupt room id.
fn to_chunk(room: directory::PublishedRoom) -> Option<PublicRoomsChunk> {
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(room.num_joined_members).unwrap_or_default(),
        room_id: OwnedRoomId::try_from(room.room_id).ok()?,
        world_readable: room.history_visibility.as_deref() == Some("world_readable"),
        guest_can_join: room.guest_access.as_deref() == Some("can_join"),
    }
    .into();
    chunk.name = room.name;
    chunk.topic = room.topic;
    chunk.canonical_alias = room.canonical_alias.and_then(|alias| OwnedRoomAliasId::try_from(alias).ok());
    chunk.avatar_url = room.avatar_url.filter(|url| !url.is_empty()).map(OwnedMxcUri::from);
    chunk.join_rule = room.join_rule.map(JoinRuleKind::from).unwrap_or_default();
    chunk.room_type = room.room_type.map(RoomType::from);
    Some(chunk)
}

// ----------------------------------------------------------- user directory

/// Users who share a joined room with the searcher, matched on user id or
/// display name.
async fn search_users(server: Homeserver, args: Args<search_users::v3::Request>) -> ApiResult<search_users::v3::Response> {
    let searcher = &args.session()?.user_id;
    let request = &args.body;
    let term = request.search_term.trim();
    let limit = u64::from(request.limit).min(MAX_USER_SEARCH_LIMIT);
    let rooms = memberships::joined_rooms(server.db.user_shard(searcher), searcher).await?;
    if term.is_empty() || limit == 0 || rooms.is_empty() {
        return Ok(search_users::v3::Response::new(Vec::new(), false));
    }

    // A user may be found on several shards (rooms of each); keep one entry,
    // ranked as a prefix match if any shard found one.
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut found: BTreeMap<String, directory::DirectoryUser> = BTreeMap::new();
    for (shard, rooms) in server.db.rooms_by_shard(&rooms) {
        for user in directory::search_joined_members(&shard.pool, &rooms, searcher, term, fetch).await? {
            let prefix_match = user.prefix_match || found.get(&user.user_id).is_some_and(|known| known.prefix_match);
            found.insert(user.user_id.clone(), directory::DirectoryUser { prefix_match, ..user });
        }
    }
    let mut users: Vec<_> = found.into_values().collect();
    users.sort_by(|a, b| b.prefix_match.cmp(&a.prefix_match).then_with(|| a.user_id.cmp(&b.user_id)));

    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let limited = users.len() > limit;
    let results = users.into_iter().take(limit).filter_map(to_directory_user).collect();
    Ok(search_users::v3::Response::new(results, limited))
}

fn to_directory_user(user: directory::DirectoryUser) -> Option<search_users::v3::User> {
    let mut result = search_users::v3::User::new(OwnedUserId::try_from(user.user_id).ok()?);
    result.display_name = user.displayname;
    result.avatar_url = user.avatar_url.filter(|url| !url.is_empty()).map(OwnedMxcUri::from);
    Some(result)
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_alias_id, owned_user_id, room_version_rules::RoomVersionRules, server_name};
    use serde_json::json;

    use super::*;

    #[test]
    fn aliases_must_be_on_this_server() {
        let ours = server_name!("example.org");
        assert!(require_local_alias(ours, &owned_room_alias_id!("#room:example.org")).is_ok());
        let err = require_local_alias(ours, &owned_room_alias_id!("#room:other.org")).unwrap_err();
        assert_eq!(err.errcode(), "M_INVALID_PARAM");
    }

    #[test]
    fn since_tokens_are_offsets() {
        assert_eq!(parse_since(None).unwrap(), 0);
        assert_eq!(parse_since(Some("40")).unwrap(), 40);
        assert_eq!(parse_since(Some("-1")).unwrap_err().errcode(), "M_INVALID_PARAM");
        assert_eq!(parse_since(Some("abc")).unwrap_err().errcode(), "M_INVALID_PARAM");
    }

    #[test]
    fn directory_changes_need_the_canonical_alias_level() {
        let rules = RoomVersionRules::V10.authorization;
        let (creator, moderator, member) = (owned_user_id!("@c:x.org"), owned_user_id!("@m:x.org"), owned_user_id!("@u:x.org"));
        let levels = json!({ "users": { "@c:x.org": 100, "@m:x.org": 50 }, "state_default": 50 });
        let can = |user: &UserId, levels: Option<JsonValue>| can_change_canonical_alias(levels, Some(creator.clone()), &rules, user).unwrap();
        assert!(can(&creator, Some(levels.clone())));
        assert!(can(&moderator, Some(levels.clone())));
        assert!(!can(&member, Some(levels.clone())));

        let raised = json!({ "users": { "@m:x.org": 50 }, "events": { "m.room.canonical_alias": 100 } });
        assert!(!can(&moderator, Some(raised)));

        // Without power levels the creator alone has power.
        assert!(can(&creator, None));
        assert!(!can(&member, None));
    }
}
