//! Sliding sync lists: the user's rooms filtered, sorted by recency (the
//! newest "bump" first) and cut to the requested ranges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ruma::{OwnedRoomId, api::client::sync::sync_events::v5};

use crate::{
    http::{ApiError, ApiResult},
    server::Homeserver,
    storage::events,
};

/// A room that may appear in lists, with what lists sort and filter by.
pub struct Candidate {
    pub room_id: OwnedRoomId,
    pub membership: String,
    /// The recency stamp: the newest bump event, or the membership change
    /// for rooms whose events the user cannot see (invites, left rooms).
    pub bump_stamp: i64,
    pub is_dm: bool,
}

/// One list of the response: its size and the rooms its ranges cover.
pub struct ListWindow {
    pub name: String,
    /// How many rooms pass the list's filters (the list's `count`).
    pub count: u64,
    /// The rooms inside the requested ranges, in list order.
    pub rooms: Vec<OwnedRoomId>,
}

/// What list filters need beyond membership: the room type and encryption,
/// read only when some list filters on them.
struct RoomKind {
    room_type: Option<String>,
    encrypted: bool,
}

/// The windows of `lists` over `candidates` (sorted here, newest first).
pub async fn windows(server: &Homeserver, lists: &BTreeMap<String, v5::request::List>, candidates: &mut [Candidate]) -> ApiResult<Vec<ListWindow>> {
    candidates.sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id.cmp(&b.room_id)));
    let needs_kinds = lists.values().filter_map(|list| list.filters.as_ref()).any(|f| f.is_encrypted.is_some() || !f.room_types.is_empty() || !f.not_room_types.is_empty());
    let kinds = if needs_kinds { room_kinds(server, candidates).await? } else { HashMap::new() };

    let mut windows = Vec::with_capacity(lists.len());
    for (name, list) in lists {
        let matching: Vec<&Candidate> = candidates.iter().filter(|c| passes(list.filters.as_ref(), c, kinds.get(&c.room_id))).collect();
        let mut covered = BTreeSet::new();
        for (start, end) in &list.ranges {
            if start > end {
                return Err(ApiError::invalid_param(format!("List {name:?} has a range that ends before it starts")));
            }
            let start = usize::try_from(u64::from(*start)).unwrap_or(usize::MAX);
            let end = usize::try_from(u64::from(*end)).unwrap_or(usize::MAX);
            covered.extend((start..=end).take_while(|index| *index < matching.len()));
        }
        windows.push(ListWindow {
            name: name.clone(),
            count: matching.len() as u64,
            rooms: covered.into_iter().map(|index| matching[index].room_id.clone()).collect(),
        });
    }
    Ok(windows)
}

/// Whether a room passes a list's filters (all of them; an absent filter
/// lets everything through).
fn passes(filters: Option<&v5::request::ListFilters>, candidate: &Candidate, kind: Option<&RoomKind>) -> bool {
    let Some(filters) = filters else { return true };
    let room_type = kind.and_then(|k| k.room_type.as_deref());
    filters.is_invite.is_none_or(|wanted| wanted == (candidate.membership == "invite"))
        && filters.is_dm.is_none_or(|wanted| wanted == candidate.is_dm)
        && filters.is_encrypted.is_none_or(|wanted| wanted == kind.is_some_and(|k| k.encrypted))
        && (filters.room_types.is_empty() || filters.room_types.iter().any(|t| t.as_str() == room_type))
        && !filters.not_room_types.iter().any(|t| t.as_str() == room_type)
}

async fn room_kinds(server: &Homeserver, candidates: &[Candidate]) -> ApiResult<HashMap<OwnedRoomId, RoomKind>> {
    let ids: Vec<OwnedRoomId> = candidates.iter().map(|c| c.room_id.clone()).collect();
    let mut kinds = HashMap::new();
    for (shard, rooms) in server.db.rooms_by_shard(&ids) {
        for (room_id, room_type, encrypted) in events::room_kinds(&shard.pool, &rooms).await? {
            if let Ok(room_id) = OwnedRoomId::try_from(room_id) {
                kinds.insert(room_id, RoomKind { room_type, encrypted });
            }
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, membership: &str, is_dm: bool) -> Candidate {
        Candidate { room_id: OwnedRoomId::try_from(id).unwrap(), membership: membership.to_owned(), bump_stamp: 0, is_dm }
    }

    #[test]
    fn filters_combine() {
        let filters: v5::request::ListFilters = serde_json::from_value(serde_json::json!({ "is_invite": false, "is_dm": true })).unwrap();
        assert!(passes(Some(&filters), &candidate("!a:x", "join", true), None));
        assert!(!passes(Some(&filters), &candidate("!a:x", "invite", true), None));
        assert!(!passes(Some(&filters), &candidate("!a:x", "join", false), None));
        assert!(passes(None, &candidate("!a:x", "invite", false), None));

        let spaces: v5::request::ListFilters = serde_json::from_value(serde_json::json!({ "room_types": ["m.space"] })).unwrap();
        let space = RoomKind { room_type: Some("m.space".to_owned()), encrypted: false };
        assert!(passes(Some(&spaces), &candidate("!a:x", "join", false), Some(&space)));
        assert!(!passes(Some(&spaces), &candidate("!a:x", "join", false), None));
        let no_spaces: v5::request::ListFilters = serde_json::from_value(serde_json::json!({ "not_room_types": ["m.space"] })).unwrap();
        assert!(!passes(Some(&no_spaces), &candidate("!a:x", "join", false), Some(&space)));
    }
}
