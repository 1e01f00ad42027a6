//! Device-list tracking: who must re-download whose keys.
//!
//! A user's device list "changed" when their devices or keys changed, or
//! when they newly share a room with the observer; it "left" when they no
//! longer share any room. Clients use this to keep the set of devices they
//! encrypt to exact (a deleted device must stop receiving room keys).

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId};
use crate::{
    http::ApiResult,
    rooms::membership,
    server::Homeserver,
    storage::{device_keys, events, memberships},
    sync::token::StreamRange,
};

/// After the commit of a device change (`storage::device_keys::
/// mark_device_list_changed` in the same transaction): wake everyone who
/// shares a room with the user, and the user's own other devices.
pub async fn notify_observers(server: &Homeserver, user_id: &UserId) -> ApiResult<()> {
    let observers = membership::users_sharing_rooms(server, user_id).await?;
    server.notifier.notify_users(observers.iter());
    Ok(())
}

/// `(changed, left)` for `observer` between the positions of `range`.
pub async fn changes(server: &Homeserver, observer: &UserId, range: StreamRange<'_>) -> ApiResult<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    let mut changed = BTreeSet::new();
    let mut maybe_left = BTreeSet::new();
    let (own_since, own_upto) = range.of(&server.db, observer.as_str());
    let rooms = memberships::rooms_of_user(server.db.user_shard(observer), observer).await?;
    for room in &rooms {
        let Some(room_id) = room.room_id() else { continue };
        let db = server.db.room_shard(&room_id);
        let own_change = own_since.is_none_or(|since| room.stream_pos > since) && room.stream_pos <= own_upto;
        match room.membership.as_str() {
            "join" if own_change => {
                changed.extend(memberships::members_with(db, &room_id, &["join"]).await?);
            }
            "join" => {
                let (since, upto) = range.of(&server.db, room_id.as_str());
                for (target, membership) in events::member_changes(db, &room_id, since.unwrap_or(-1), upto).await? {
                    let Ok(target) = OwnedUserId::try_from(target) else { continue };
                    if membership == "join" {
                        changed.insert(target);
                    } else {
                        maybe_left.insert(target);
                    }
                }
            }
            "leave" | "ban" if own_change => {
                maybe_left.extend(memberships::members_with(db, &room_id, &["join"]).await?);
            }
            _ => {}
        }
    }

    let sharing: Vec<OwnedUserId> = membership::users_sharing_rooms(server, observer).await?.into_iter().collect();
    // Each user's device list position is on that user's own database.
    for (shard, (since, upto), users) in range.group_by_shard(&server.db, &sharing, |user| user.as_str()) {
        let candidates: Vec<String> = users.iter().map(ToString::to_string).collect();
        for user in device_keys::device_lists_changed(&shard.pool, &candidates, since.unwrap_or(-1), upto).await? {
            changed.extend(OwnedUserId::try_from(user).ok());
        }
    }
    let sharing: BTreeSet<OwnedUserId> = sharing.into_iter().collect();
    changed.retain(|user| sharing.contains(user));
    let left = maybe_left.into_iter().filter(|user| !sharing.contains(user) && user != observer).collect();
    Ok((changed.into_iter().collect(), left))
}
