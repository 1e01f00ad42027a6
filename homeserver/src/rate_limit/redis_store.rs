//! Rate limits shared by the workers: each key's GCRA arrival time in Redis,
//! `<prefix>:ratelimit:<class>:<key>`, expiring when it lies in the past
//! (an expired key and a fresh one mean the same). One script per check, so
//! concurrent requests on different workers cannot both take the last
//! cell; one key per script, so keys spread over a cluster's nodes. The
//! clock is Redis's (`TIME`), so workers' clocks do not matter.

use std::{sync::Arc, time::Duration};

use redis::Script;

use super::{Cells, Class};
use crate::redis_link::{FailureLog, RedisLink};

/// `KEYS[1]` the key; `ARGV[1]` interval in µs, `ARGV[2]` burst, `ARGV[3]`
/// 1 to count the request, 0 to only ask. Returns the wait in µs (0:
/// allowed). The computation of `memory::gcra`.
const DECIDE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local arrival = tonumber(redis.call('GET', KEYS[1])) or now
if arrival < now then arrival = now end
local next_arrival = arrival + interval
local ahead = next_arrival - now
if ahead > tolerance then return ahead - tolerance end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', next_arrival), 'PX', math.ceil(ahead / 1000))
end
return 0
";

pub struct RedisLimits {
    link: Arc<RedisLink>,
    decide: Script,
    failures: FailureLog,
}

impl RedisLimits {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            decide: Script::new(DECIDE),
            failures: FailureLog::new("rate limits in Redis", "limits hold per worker until it works again"),
        }
    }

    /// `Some(None)`: allowed; `Some(Some(wait))`: over the limit; `None`:
    /// Redis is away (the caller decides in memory).
    pub async fn decide(&self, class: Class, key: &str, cells: Cells, take: bool) -> Option<Option<Duration>> {
        let mut connection = self.link.connection()?;
        let result = self
            .decide
            .key(format!("{}:ratelimit:{}:{key}", self.link.prefix(), class.name()))
            .arg(cells.interval_us)
            .arg(cells.burst)
            .arg(if take { "1" } else { "0" })
            .invoke_async::<u64>(&mut connection)
            .await;
        let wait_us = self.failures.checked(result)?;
        Some((wait_us > 0).then(|| Duration::from_micros(wait_us)))
    }
}
