//! Typing of a single process: in memory, under one lock.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// Version at which this room's list last changed.
    changed_at: u64,
}

#[derive(Default)]
struct State {
    rooms: HashMap<OwnedRoomId, RoomTyping>,
    version: u64,
}

/// Who is typing where, on this worker.
#[derive(Default)]
pub struct MemoryTyping {
    state: Mutex<State>,
}

impl MemoryTyping {
    /// Sets (for `timeout`, already capped) or clears a user's typing flag;
    /// returns whether the list changed.
    pub fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) -> bool {
        let mut state = self.state.lock().expect("typing lock poisoned");
        let now = Instant::now();
        state.expire(room_id, now);
        let next_version = state.version + 1;
        let room = state.rooms.entry(room_id.to_owned()).or_default();
        let changed = match timeout {
            Some(timeout) => room.users.insert(user_id.to_owned(), now + timeout).is_none(),
            None => room.users.remove(user_id).is_some(),
        };
        if changed {
            room.changed_at = next_version;
            state.version = next_version;
        }
        changed
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.state.lock().expect("typing lock poisoned").version
    }

    /// The users typing in those of `room_ids` whose list changed after
    /// `since` (non-empty lists when `since` is `None`; every list when the
    /// token comes from before a restart and is ahead of us).
    pub fn changed_in(&self, room_ids: &[OwnedRoomId], since: Option<u64>) -> BTreeMap<OwnedRoomId, Vec<OwnedUserId>> {
        let mut state = self.state.lock().expect("typing lock poisoned");
        let now = Instant::now();
        let mut changed_rooms = BTreeMap::new();
        for room_id in room_ids {
            state.expire(room_id, now);
            let current = state.version;
            let Some(room) = state.rooms.get(room_id) else { continue };
            let changed = match since {
                None => !room.users.is_empty(),
                Some(since) => room.changed_at > since || since > current,
            };
            if changed {
                changed_rooms.insert(room_id.clone(), room.users.keys().cloned().collect());
            }
        }
        changed_rooms
    }
}

impl State {
    /// Drops expired entries of one room, bumping the version if any expired.
    fn expire(&mut self, room_id: &RoomId, now: Instant) {
        let next_version = self.version + 1;
        let Some(room) = self.rooms.get_mut(room_id) else { return };
        let before = room.users.len();
        room.users.retain(|_, until| *until > now);
        if room.users.len() != before {
            room.changed_at = next_version;
            self.version = next_version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(typing: &MemoryTyping, room: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        typing.changed_in(&[room.to_owned()], since).remove(room)
    }

    #[test]
    fn typing_changes_are_versioned() {
        let typing = MemoryTyping::default();
        let room = ruma::room_id!("!r:example.org");
        let alice = ruma::user_id!("@alice:example.org");
        assert!(typing.set(room, alice, Some(Duration::from_secs(30))));
        let v1 = typing.version();
        assert_eq!(changed(&typing, room, Some(0)).unwrap().len(), 1);
        assert!(changed(&typing, room, Some(v1)).is_none());
        assert!(!typing.set(room, alice, Some(Duration::from_secs(30))), "refresh is no change");
        assert!(typing.set(room, alice, None));
        assert_eq!(changed(&typing, room, Some(v1)).unwrap(), Vec::<OwnedUserId>::new());
    }

    #[test]
    fn expired_typing_disappears() {
        let typing = MemoryTyping::default();
        let room = ruma::room_id!("!r:example.org");
        typing.set(room, ruma::user_id!("@a:example.org"), Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(changed(&typing, room, Some(1)).unwrap(), Vec::<OwnedUserId>::new());
    }
}
