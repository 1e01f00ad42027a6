//! When each user was last active, per logical shard: in Redis, shared by
//! the workers, or in memory for a single process.
//!
//! Redis keys: `{<prefix>:presence:<logical shard>}`, a sorted set of user
//! id → last activity (milliseconds of Redis's clock, so workers' clocks do
//! not matter). One key per logical shard spreads them over a cluster's
//! nodes and lets the sweeper of a database read exactly its users.
//!
//! Redis trouble never fails a request: `touch` is skipped, reads answer
//! `None` ("unknown"), and the sweeper takes nobody offline while it lasts.

use std::{collections::HashMap, sync::{Arc, Mutex}, time::Duration};

use redis::Script;
use ruma::{OwnedUserId, UserId};

use crate::{
    redis_link::{FailureLog, RedisLink},
    storage::{now_ms, shard_map::{LOGICAL_SHARDS, logical_shard}},
};

/// `KEYS[1]` the shard's set; `ARGV[1]` the user.
const TOUCH: &str = r"
local time = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000), ARGV[1])
";

/// `KEYS[1]` the shard's set; `ARGV[1]` inactivity in ms, `ARGV[2]` most
/// users to take. Removes and returns the users inactive that long.
const TAKE_EXPIRED: &str = r"
local time = redis.call('TIME')
local cutoff = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - tonumber(ARGV[1])
local expired = redis.call('ZRANGE', KEYS[1], '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
if #expired > 0 then
  redis.call('ZREM', KEYS[1], unpack(expired))
end
return expired
";

/// Users' last activity.
pub struct Activity {
    store: Store,
    offline_after_ms: i64,
}

enum Store {
    /// One map per logical shard.
    Memory(Mutex<Vec<HashMap<OwnedUserId, i64>>>),
    Redis { link: Arc<RedisLink>, touch: Script, take_expired: Script, failures: FailureLog },
}

impl Activity {
    /// Activity of a single process.
    pub fn in_memory(offline_after: Duration) -> Self {
        Self::with(Store::Memory(Mutex::new(vec![HashMap::new(); LOGICAL_SHARDS])), offline_after)
    }

    /// Activity shared by the workers using `link`.
    pub fn in_redis(link: Arc<RedisLink>, offline_after: Duration) -> Self {
        let failures = FailureLog::new("presence through Redis", "users are not taken offline until it works again");
        Self::with(Store::Redis { link, touch: Script::new(TOUCH), take_expired: Script::new(TAKE_EXPIRED), failures }, offline_after)
    }

    fn with(store: Store, offline_after: Duration) -> Self {
        Self { store, offline_after_ms: i64::try_from(offline_after.as_millis()).unwrap_or(i64::MAX) }
    }

    /// How long a user stays online without activity.
    pub fn offline_after_ms(&self) -> i64 {
        self.offline_after_ms
    }

    /// Records that `user_id` is active now.
    pub async fn touch(&self, user_id: &UserId) {
        match &self.store {
            Store::Memory(shards) => {
                let mut shards = shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                shards[logical_shard(user_id.as_str())].insert(user_id.to_owned(), now_ms());
            }
            Store::Redis { link, touch, failures, .. } => {
                let Some(mut connection) = link.connection() else { return };
                let result = touch.key(key(link, user_id)).arg(user_id.as_str()).invoke_async::<()>(&mut connection).await;
                failures.checked(result);
            }
        }
    }

    /// Records activity now for those of `users` without any on record;
    /// returns false when Redis failed. Uses this worker's clock, which is
    /// as good as Redis's for a deadline of `offline_after`.
    pub async fn adopt(&self, users: &[OwnedUserId]) -> bool {
        let now = now_ms();
        match &self.store {
            Store::Memory(shards) => {
                let mut shards = shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for user in users {
                    shards[logical_shard(user.as_str())].entry(user.clone()).or_insert(now);
                }
                true
            }
            Store::Redis { link, failures, .. } => {
                let Some(mut connection) = link.connection() else { return false };
                let mut pipe = redis::pipe();
                for user in users {
                    pipe.cmd("ZADD").arg(key(link, user)).arg("NX").arg(now).arg(user.as_str()).ignore();
                }
                failures.checked(pipe.query_async::<()>(&mut connection).await).is_some()
            }
        }
    }

    /// Forgets `user_id`'s activity (the user went offline).
    pub async fn forget(&self, user_id: &UserId) {
        match &self.store {
            Store::Memory(shards) => {
                let mut shards = shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                shards[logical_shard(user_id.as_str())].remove(user_id);
            }
            Store::Redis { link, failures, .. } => {
                let Some(mut connection) = link.connection() else { return };
                let result = redis::cmd("ZREM").arg(key(link, user_id)).arg(user_id.as_str()).query_async::<()>(&mut connection).await;
                failures.checked(result);
            }
        }
    }

    /// The last activity (ms since the epoch) of those of `users` who were
    /// active within `offline_after`; `None` when that cannot be known now.
    pub async fn last_active(&self, users: &[OwnedUserId]) -> Option<HashMap<OwnedUserId, i64>> {
        match &self.store {
            Store::Memory(shards) => {
                let shards = shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let found = users.iter().filter_map(|user| Some((user.clone(), *shards[logical_shard(user.as_str())].get(user)?)));
                Some(found.collect())
            }
            Store::Redis { link, failures, .. } => {
                let mut connection = link.connection()?;
                let mut pipe = redis::pipe();
                for user in users {
                    pipe.cmd("ZSCORE").arg(key(link, user)).arg(user.as_str());
                }
                let scores = failures.checked(pipe.query_async::<Vec<Option<f64>>>(&mut connection).await)?;
                // Scores are whole milliseconds, far below f64's exact integer range.
                #[allow(clippy::cast_possible_truncation)]
                let found = users.iter().zip(scores).filter_map(|(user, score)| Some((user.clone(), score? as i64)));
                Some(found.collect())
            }
        }
    }

    /// Removes and returns up to `limit` users of logical shard `logical`
    /// inactive for longer than `offline_after`; `None` when Redis fails.
    pub async fn take_expired(&self, logical: usize, limit: usize) -> Option<Vec<OwnedUserId>> {
        match &self.store {
            Store::Memory(shards) => {
                let cutoff = now_ms() - self.offline_after_ms;
                let mut shards = shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let shard = &mut shards[logical];
                let expired: Vec<OwnedUserId> = shard.iter().filter(|(_, at)| **at <= cutoff).map(|(user, _)| user.clone()).take(limit).collect();
                for user in &expired {
                    shard.remove(user);
                }
                Some(expired)
            }
            Store::Redis { link, take_expired, failures, .. } => {
                let mut connection = link.connection()?;
                let mut invocation = take_expired.key(shard_key(link, logical));
                invocation.arg(self.offline_after_ms).arg(limit);
                let expired = failures.checked(invocation.invoke_async::<Vec<String>>(&mut connection).await)?;
                Some(expired.into_iter().filter_map(|user| OwnedUserId::try_from(user).ok()).collect())
            }
        }
    }
}

fn key(link: &RedisLink, user_id: &UserId) -> String {
    shard_key(link, logical_shard(user_id.as_str()))
}

fn shard_key(link: &RedisLink, logical: usize) -> String {
    format!("{{{}:presence:{logical}}}", link.prefix())
}
