//! Rate limits: how often a user, a client address or an account's wrong
//! passwords may come, answered with 429 `M_LIMIT_EXCEEDED` and the time to
//! wait (`retry_after_ms` and `Retry-After`).
//!
//! Each limit is a GCRA ("generic cell rate algorithm"): one number per key,
//! the theoretical arrival time (TAT) of the next request at the steady
//! rate. A request may come while the TAT is at most `burst` intervals in
//! the future, and pushes it one interval further. That is a token bucket
//! without a refill timer, and one value to keep, which is what makes it
//! cheap to share: workers keep it in Redis ([`redis_store`], one Lua script
//! per check) so a client spreading its requests over workers meets one
//! limit; a single process, or a worker whose Redis is away, keeps it in
//! memory ([`memory`]) and the limit then holds per worker.
//!
//! Which requests count where ([`Class`]): room writes per user (ruma does
//! not mark `/send` as rate-limited, the spec leaves it to servers), the
//! endpoints the spec marks rate-limited per user, or per client address
//! when called without a token, and wrong passwords per account.

mod memory;
mod redis_store;

use std::{any::TypeId, future::Future, net::IpAddr, sync::Arc, time::Duration};

use http::StatusCode;
use ruma::{
    UserId,
    api::{
    IncomingRequest,
    client::{
        knock::knock_room,
        membership::{ban_user, invite_user, join_room_by_id, join_room_by_id_or_alias, kick_user, leave_room, unban_user},
        message::send_message_event,
        redact::redact_event,
        room::create_room,
        state::send_state_event,
    },
    error::{ErrorKind, LimitExceededErrorData, RetryAfter},
    },
};

use self::{memory::MemoryLimits, redis_store::RedisLimits};
use crate::{
    config::{RateLimit, RateLimitsConfig},
    http::ApiError,
    metrics::RateLimitMetrics,
    redis_link::RedisLink,
};

/// What a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Per user: events written into rooms.
    RoomWrites,
    /// Per user: the other endpoints the spec marks rate-limited.
    Requests,
    /// Per client address: rate-limited endpoints called without a token.
    Anonymous,
    /// Per account: wrong passwords.
    FailedLogins,
}

impl Class {
    /// The name in Redis keys and the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoomWrites => "room_writes",
            Self::Requests => "requests",
            Self::Anonymous => "anonymous",
            Self::FailedLogins => "failed_logins",
        }
    }

    fn limit(self, config: &RateLimitsConfig) -> RateLimit {
        match self {
            Self::RoomWrites => config.room_writes,
            Self::Requests => config.requests,
            Self::Anonymous => config.anonymous,
            Self::FailedLogins => config.failed_logins,
        }
    }

    /// The class of endpoint `R`, called with a token or without, if it
    /// counts against any.
    pub fn of_request<R: IncomingRequest + 'static>(authenticated: bool) -> Option<Self> {
        match (is_room_write::<R>(), R::RATE_LIMITED, authenticated) {
            (true, _, true) => Some(Self::RoomWrites),
            (false, true, true) => Some(Self::Requests),
            (_, true, false) => Some(Self::Anonymous),
            _ => None,
        }
    }
}

/// Endpoints that append events to a room: each is a locked write on the
/// room's database and a wake-up of every member's sync.
fn is_room_write<R: 'static>() -> bool {
    let id = TypeId::of::<R>();
    [
        TypeId::of::<send_message_event::v3::Request>(),
        TypeId::of::<send_state_event::v3::Request>(),
        TypeId::of::<redact_event::v3::Request>(),
        TypeId::of::<create_room::v3::Request>(),
        TypeId::of::<invite_user::v3::Request>(),
        TypeId::of::<join_room_by_id::v3::Request>(),
        TypeId::of::<join_room_by_id_or_alias::v3::Request>(),
        TypeId::of::<knock_room::v3::Request>(),
        TypeId::of::<leave_room::v3::Request>(),
        TypeId::of::<kick_user::v3::Request>(),
        TypeId::of::<ban_user::v3::Request>(),
        TypeId::of::<unban_user::v3::Request>(),
    ]
    .contains(&id)
}

/// The key of a client address: IPv6 clients get a /64 each (one
/// customer's prefix), so one host cannot dodge its limit by rotating
/// through its own addresses.
pub fn address_key(addr: IpAddr) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// The parameters of one limit in microseconds: the steady interval and the
/// burst, as both stores take them.
#[derive(Clone, Copy, Debug)]
struct Cells {
    interval_us: u64,
    burst: u32,
}

impl From<RateLimit> for Cells {
    fn from(limit: RateLimit) -> Self {
        // Validated positive at config load; at least 1 µs.
        let interval_us = (1_000_000.0 / limit.per_second).round().max(1.0) as u64;
        Self { interval_us, burst: limit.burst }
    }
}

/// The rate limits of one worker.
pub struct RateLimiter {
    config: RateLimitsConfig,
    memory: MemoryLimits,
    redis: Option<RedisLimits>,
    metrics: RateLimitMetrics,
}

impl RateLimiter {
    /// Limits kept in `redis` when given (in memory while it is away).
    pub fn new(config: RateLimitsConfig, redis: Option<Arc<RedisLink>>, metrics: RateLimitMetrics) -> Self {
        Self { config, memory: MemoryLimits::default(), redis: redis.map(RedisLimits::new), metrics }
    }

    /// Counts one request of `class` for `key`; 429 `M_LIMIT_EXCEEDED` when
    /// it is over the limit (and then it does not count).
    pub async fn take(&self, class: Class, key: &str) -> Result<(), ApiError> {
        self.decide(class, key, true).await
    }

    /// Whether one more request of `class` for `key` would be allowed now,
    /// without counting it: 429 when not. For wrong passwords, which are
    /// counted only once known to be wrong, but must be refused before the
    /// password is checked (else a guess beyond the limit still learns
    /// whether it was right).
    pub async fn check(&self, class: Class, key: &str) -> Result<(), ApiError> {
        self.decide(class, key, false).await
    }

    /// Runs `verify` (a password check of `user_id`) under the account's
    /// limit of wrong passwords: 429 once it is used up, before the
    /// password is looked at (else guesses beyond the limit would still
    /// learn which one is right); a wrong password counts.
    pub async fn verify_password(&self, user_id: &UserId, verify: impl Future<Output = bool>) -> Result<bool, ApiError> {
        self.check(Class::FailedLogins, user_id.as_str()).await?;
        let valid = verify.await;
        if !valid {
            // Allowed a moment ago; a refusal now (a concurrent guess took
            // the last cell) changes nothing for this answer.
            let _ = self.take(Class::FailedLogins, user_id.as_str()).await;
        }
        Ok(valid)
    }

    async fn decide(&self, class: Class, key: &str, take: bool) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        let cells = Cells::from(class.limit(&self.config));
        let shared = match &self.redis {
            Some(redis) => redis.decide(class, key, cells, take).await,
            None => None,
        };
        let wait = match shared {
            Some(wait) => wait,
            None => self.memory.decide(class, key, cells, take),
        };
        match wait {
            None => Ok(()),
            Some(wait) => {
                self.metrics.rejected(class.name());
                Err(limit_exceeded(wait))
            }
        }
    }
}

/// 429 `M_LIMIT_EXCEEDED` with the time to wait, rounded up to whole
/// milliseconds so a client that waits exactly that long gets through.
fn limit_exceeded(wait: Duration) -> ApiError {
    let wait = Duration::from_millis(wait.as_micros().div_ceil(1000).try_into().unwrap_or(u64::MAX));
    let mut data = LimitExceededErrorData::new();
    data.retry_after = Some(RetryAfter::Delay(wait));
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorKind::LimitExceeded(data), "Too many requests")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::api::client::{account::whoami, message::get_message_events, session::login};

    #[test]
    fn endpoints_count_against_their_class() {
        assert_eq!(Class::of_request::<send_message_event::v3::Request>(true), Some(Class::RoomWrites));
        assert_eq!(Class::of_request::<whoami::v3::Request>(true), Some(Class::Requests));
        assert_eq!(Class::of_request::<login::v3::Request>(false), Some(Class::Anonymous));
        assert_eq!(Class::of_request::<get_message_events::v3::Request>(true), None);
    }

    #[test]
    fn ipv6_clients_share_their_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(address_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
