//! Typing notifications: ephemeral, kept with a timeout, never persisted.
//! Each change bumps a version that sync tokens carry, so a sync sends a
//! room's typing list only when it changed.
//!
//! A single process keeps typing in memory ([`memory`]); workers share it in
//! Redis ([`redis_store`]), where the version is one counter, so a token's
//! typing part means the same on every worker. Both behave alike; with
//! Redis unavailable typing degrades to "nobody is typing" and never fails
//! a request.

mod memory;
mod redis_store;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use self::{memory::MemoryTyping, redis_store::RedisTyping};
use crate::redis_link::RedisLink;

/// Longest typing timeout a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Who is typing where.
pub struct Typing(Store);

enum Store {
    Memory(MemoryTyping),
    Redis(RedisTyping),
}

impl Typing {
    /// Typing of a single process.
    pub fn in_memory() -> Self {
        Self(Store::Memory(MemoryTyping::default()))
    }

    /// Typing shared by the workers using `link`.
    pub fn in_redis(link: Arc<RedisLink>) -> Self {
        Self(Store::Redis(RedisTyping::new(link)))
    }

    /// Sets a user's typing flag for `timeout` (capped at two minutes) or
    /// clears it (`None`); returns whether the room's list changed, that is
    /// whether its members need waking. Redis trouble counts as no change.
    pub async fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) -> bool {
        let timeout = timeout.map(|timeout| timeout.min(MAX_TIMEOUT));
        match &self.0 {
            Store::Memory(typing) => typing.set(room_id, user_id, timeout),
            Store::Redis(typing) => typing.set(room_id, user_id, timeout).await,
        }
    }

    /// The current version, for a sync token. 0 when Redis is unavailable:
    /// a sync from such a token gets the lists of the rooms with recent
    /// typing again, so nothing missed during the outage stays missed.
    pub async fn version(&self) -> u64 {
        match &self.0 {
            Store::Memory(typing) => typing.version(),
            Store::Redis(typing) => typing.version().await,
        }
    }

    /// The users typing in `room_id` if its list changed after `since`
    /// (when it is not empty, if `since` is `None`).
    pub async fn changed_since(&self, room_id: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        self.changed_in(&[room_id.to_owned()], since).await.remove(room_id)
    }

    /// [`Self::changed_since`] for many rooms at once (one round trip to
    /// Redis per few hundred rooms).
    pub async fn changed_in(&self, room_ids: &[OwnedRoomId], since: Option<u64>) -> BTreeMap<OwnedRoomId, Vec<OwnedUserId>> {
        match &self.0 {
            Store::Memory(typing) => typing.changed_in(room_ids, since),
            Store::Redis(typing) => typing.changed_in(room_ids, since).await,
        }
    }
}
