//! Typing shared by the workers, in Redis.
//!
//! Keys, all with the hash tag `{<prefix>:typing}`:
//! - `{<prefix>:typing}:version`: the version counter.
//! - `{<prefix>:typing}:room:<room id>`: a hash of user id → typing until
//!   (milliseconds of Redis's clock) plus `v` → the version of the room's
//!   last change.
//!
//! Every read and write is one Lua script, so a change and the version it
//! takes are one atomic step and a sync's view of the version and of the
//! rooms can never disagree. The shared tag is what makes that possible on
//! a cluster (a script may only touch keys of one slot); the price is that
//! all typing lands on one node, which is fine for entries that live two
//! minutes. The clock is Redis's (`TIME`), so workers' clocks do not matter.
//! An expired entry is dropped, as a change with a new version, by the
//! first script that meets it.
//!
//! Keys expire [`RETENTION_MS`] after a room's last change: a client that
//! comes back within that time still learns that someone stopped typing;
//! one away longer may show a stale typist until the room's next change.
//! Whatever refreshes a room's expiry refreshes the counter's too: a
//! counter that restarted below the rooms' versions would make every sync
//! find "news" at once, over and over.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use redis::Script;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::redis_link::{FailureLog, RedisLink};

/// How long a room's key (and the version counter) outlive the last change,
/// in milliseconds.
const RETENTION_MS: u64 = 60 * 60 * 1000;
/// Rooms read by one script call: a staff account's thousands of rooms take
/// several calls rather than blocking Redis for long.
const ROOMS_PER_CALL: usize = 500;

/// `KEYS[1]` version, `KEYS[2]` room; `ARGV[1]` user, `ARGV[2]` timeout in
/// ms (empty: stopped typing), `ARGV[3]` retention in ms. Returns 1 when the
/// room's list changed.
const SET: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local changed = false
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local until_ms = tonumber(entries[i + 1])
  if entries[i] ~= 'v' and (until_ms == nil or until_ms <= now) then
    redis.call('HDEL', KEYS[2], entries[i])
    changed = true
  end
end
if ARGV[2] == '' then
  changed = redis.call('HDEL', KEYS[2], ARGV[1]) == 1 or changed
else
  changed = redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[2])) == 1 or changed
end
if changed then
  redis.call('HSET', KEYS[2], 'v', redis.call('INCR', KEYS[1]))
end
if changed or ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return changed and 1 or 0
";

/// `KEYS[1]` version, `KEYS[2..]` rooms; `ARGV[1]` the token's version
/// (empty: an initial sync), `ARGV[2]` retention in ms. Returns
/// `{index of the room among KEYS[2..], {user, …}}` for every room whose
/// list changed after the token (every non-empty list for an initial sync;
/// every list when the token is ahead of the counter, which restarted).
const CHANGED: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local since = tonumber(ARGV[1])
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local result = {}
for k = 2, #KEYS do
  local entries = redis.call('HGETALL', KEYS[k])
  if #entries > 0 then
    local users, changed_at, expired = {}, 0, false
    for i = 1, #entries, 2 do
      local value = tonumber(entries[i + 1])
      if entries[i] == 'v' then
        changed_at = value or 0
      elseif value == nil or value <= now then
        redis.call('HDEL', KEYS[k], entries[i])
        expired = true
      else
        users[#users + 1] = entries[i]
      end
    end
    if expired then
      version = redis.call('INCR', KEYS[1])
      changed_at = version
      redis.call('HSET', KEYS[k], 'v', version)
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
      redis.call('PEXPIRE', KEYS[k], ARGV[2])
    end
    local changed
    if since == nil then
      changed = #users > 0
    else
      changed = changed_at > since or since > version
    end
    if changed then
      result[#result + 1] = {k - 1, users}
    end
  end
end
return result
";

pub struct RedisTyping {
    link: Arc<RedisLink>,
    version_key: String,
    room_key_prefix: String,
    set: Script,
    changed: Script,
    failures: FailureLog,
}

impl RedisTyping {
    pub fn new(link: Arc<RedisLink>) -> Self {
        let tag = format!("{{{}:typing}}", link.prefix());
        Self {
            version_key: format!("{tag}:version"),
            room_key_prefix: format!("{tag}:room:"),
            link,
            set: Script::new(SET),
            changed: Script::new(CHANGED),
            failures: FailureLog::new("typing through Redis", "typing notifications are off until it works again"),
        }
    }

    pub async fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) -> bool {
        let Some(mut connection) = self.link.connection() else { return false };
        let timeout_ms = timeout.map(|timeout| timeout.as_millis().to_string()).unwrap_or_default();
        let result = self
            .set
            .key(&self.version_key)
            .key(self.room_key(room_id))
            .arg(user_id.as_str())
            .arg(timeout_ms)
            .arg(RETENTION_MS)
            .invoke_async::<i64>(&mut connection)
            .await;
        self.failures.checked(result).is_some_and(|changed| changed == 1)
    }

    pub async fn version(&self) -> u64 {
        let Some(mut connection) = self.link.connection() else { return 0 };
        let result = redis::cmd("GET").arg(&self.version_key).query_async::<Option<u64>>(&mut connection).await;
        self.failures.checked(result).flatten().unwrap_or(0)
    }

    pub async fn changed_in(&self, room_ids: &[OwnedRoomId], since: Option<u64>) -> BTreeMap<OwnedRoomId, Vec<OwnedUserId>> {
        let mut changed_rooms = BTreeMap::new();
        let Some(mut connection) = self.link.connection() else { return changed_rooms };
        for rooms in room_ids.chunks(ROOMS_PER_CALL) {
            let mut invocation = self.changed.key(&self.version_key);
            for room_id in rooms {
                invocation.key(self.room_key(room_id));
            }
            invocation.arg(since.map(|since| since.to_string()).unwrap_or_default()).arg(RETENTION_MS);
            let Some(changed) = self.failures.checked(invocation.invoke_async::<Vec<(usize, Vec<String>)>>(&mut connection).await) else {
                break;
            };
            for (index, users) in changed {
                let Some(room_id) = index.checked_sub(1).and_then(|index| rooms.get(index)) else { continue };
                let users = users.into_iter().filter_map(|user| OwnedUserId::try_from(user).ok()).collect();
                changed_rooms.insert(room_id.clone(), users);
            }
        }
        changed_rooms
    }

    fn room_key(&self, room_id: &RoomId) -> String {
        format!("{}{room_id}", self.room_key_prefix)
    }
}
