//! History visibility: which events of a room one user may read, following
//! the spec's algorithm (world_readable, shared, invited, joined) over the
//! user's membership changes and the room's visibility changes.

use ruma::{RoomId, UserId};
use sqlx::PgExecutor;

use crate::{http::{ApiError, ApiResult}, storage::events::StoredEvent};

/// One user's view of one room's history.
#[derive(Debug, Default)]
pub struct HistoryAccess {
    /// `(stream_pos, membership)` of the user's member events, in order.
    memberships: Vec<(i64, String)>,
    /// `(stream_pos, history_visibility)` of the room, in order.
    visibilities: Vec<(i64, String)>,
}

impl HistoryAccess {
    pub async fn load(db: impl PgExecutor<'_>, room_id: &RoomId, user_id: &UserId) -> sqlx::Result<Self> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT stream_pos, event_type,
                    CASE WHEN event_type = 'm.room.member' THEN pdu->'content'->>'membership'
                         ELSE pdu->'content'->>'history_visibility' END
             FROM events
             WHERE room_id = $1 AND ((event_type = 'm.room.member' AND state_key = $2)
                                  OR (event_type = 'm.room.history_visibility' AND state_key = ''))
             ORDER BY stream_pos",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_all(db)
        .await?;
        let mut access = Self::default();
        for (pos, kind, value) in rows {
            let value = value.unwrap_or_default();
            if kind == "m.room.member" {
                access.memberships.push((pos, value));
            } else {
                access.visibilities.push((pos, value));
            }
        }
        Ok(access)
    }

    /// The user's current membership.
    pub fn current_membership(&self) -> Option<&str> {
        self.memberships.last().map(|(_, m)| m.as_str())
    }

    pub fn is_joined(&self) -> bool {
        self.current_membership() == Some("join")
    }

    /// The last position the user may read state at: the present for a
    /// member, the moment they left for a former member. Never a member →
    /// 403.
    pub fn readable_upto(&self, current: i64) -> ApiResult<i64> {
        match self.memberships.last() {
            Some((_, m)) if m == "join" || m == "invite" => Ok(current),
            Some((pos, _)) if self.memberships.iter().any(|(_, m)| m == "join") => Ok(*pos),
            _ if self.visibility_at(current + 1) == "world_readable" => Ok(current),
            _ => Err(ApiError::forbidden("You are not a member of this room")),
        }
    }

    /// Whether the user may see the event at `pos`.
    pub fn can_see(&self, pos: i64, is_own_membership: bool) -> bool {
        if is_own_membership {
            return true;
        }
        let membership = self.memberships.iter().rev().find(|(p, _)| *p <= pos).map(|(_, m)| m.as_str());
        match self.visibility_at(pos) {
            "world_readable" => true,
            _ if membership == Some("join") => true,
            "shared" => self.is_joined(),
            "invited" => membership == Some("invite"),
            _ => false,
        }
    }

    /// Keeps the events the user may see.
    pub fn filter(&self, user_id: &UserId, events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        events
            .into_iter()
            .filter(|event| {
                let own = event.pdu.get("type").and_then(|t| t.as_str()) == Some("m.room.member")
                    && event.pdu.get("state_key").and_then(|k| k.as_str()) == Some(user_id.as_str());
                self.can_see(event.stream_pos, own)
            })
            .collect()
    }

    /// The visibility in force for an event at `pos` (set strictly before it).
    fn visibility_at(&self, pos: i64) -> &str {
        self.visibilities.iter().rev().find(|(p, _)| *p < pos).map_or("shared", |(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(memberships: &[(i64, &str)], visibilities: &[(i64, &str)]) -> HistoryAccess {
        HistoryAccess {
            memberships: memberships.iter().map(|(p, m)| (*p, (*m).to_owned())).collect(),
            visibilities: visibilities.iter().map(|(p, v)| (*p, (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn shared_history_is_visible_to_current_members() {
        let a = access(&[(10, "join")], &[(3, "shared")]);
        assert!(a.can_see(5, false));
        assert!(a.can_see(20, false));
    }

    #[test]
    fn invited_history_starts_at_the_invite() {
        let a = access(&[(10, "invite"), (12, "join")], &[(3, "invited")]);
        assert!(!a.can_see(5, false));
        assert!(a.can_see(11, false));
        assert!(a.can_see(13, false));
    }

    #[test]
    fn joined_history_starts_at_the_join() {
        let a = access(&[(10, "invite"), (12, "join")], &[(3, "joined")]);
        assert!(!a.can_see(11, false));
        assert!(a.can_see(12, false));
    }

    #[test]
    fn nothing_after_leaving() {
        let a = access(&[(10, "join"), (20, "leave")], &[(3, "joined")]);
        assert!(a.can_see(15, false));
        assert!(!a.can_see(25, false));
        assert!(a.can_see(20, true), "own leave event is visible");
        assert_eq!(a.readable_upto(100).unwrap(), 20);
    }

    #[test]
    fn strangers_may_not_read() {
        let a = access(&[], &[(3, "shared")]);
        assert!(a.readable_upto(100).is_err());
        assert!(!a.can_see(5, false));
    }
}
