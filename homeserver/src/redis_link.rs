//! This worker's link to Redis, which carries what the workers share but
//! need not keep (see ARCHITECTURE.md, "Redis"): the notifier's wake-ups,
//! typing and rate limits.
//!
//! A worker holds one RESP3 connection, so subscriptions, publishes and
//! commands share it: on a single server one multiplexed connection, on a
//! cluster redis-rs's cluster connection (one multiplexed connection per
//! node, commands routed by key slot). The notifier's relay
//! ([`crate::sync::relay`]) owns its lifecycle: it connects, subscribes, and
//! only then offers the connection here; it withdraws it as soon as
//! anything fails. Everyone else takes the offered connection or, while
//! there is none, degrades at once rather than waiting for a timeout.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo as _, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};
use tokio::sync::{mpsc::UnboundedSender, watch};

use crate::config::RedisConfig;

/// How long opening a connection (to one node) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer. Requests (typing) wait at
/// most this long when Redis hangs instead of failing fast.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis this worker uses and the connection to it while it is healthy.
pub struct RedisLink {
    target: Target,
    prefix: String,
    current: watch::Sender<Option<Connection>>,
}

/// Where to connect: parsed once at start, so a bad URL stops the server
/// instead of looking like an outage.
enum Target {
    Single(redis::Client),
    Cluster(Vec<ConnectionInfo>),
}

/// A connection to a single server or to a cluster. Cheap to clone: clones
/// share the underlying connection(s).
#[derive(Clone)]
pub enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisLink {
    /// The link of `config`, or `None` when no Redis is configured. Does
    /// not connect; the relay does.
    pub fn new(config: &RedisConfig, prefix: &str) -> anyhow::Result<Option<Self>> {
        let Some(url) = config.url.as_deref() else { return Ok(None) };
        let resp3 = |url: &str| -> anyhow::Result<ConnectionInfo> {
            let info = url.into_connection_info().with_context(|| format!("redis.url: {url:?} is not a Redis URL"))?;
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            Ok(info.set_redis_settings(settings))
        };
        let target = if config.cluster {
            let seeds = url.split(',').map(str::trim).filter(|seed| !seed.is_empty()).map(resp3).collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(!seeds.is_empty(), "redis.url names no cluster node");
            Target::Cluster(seeds)
        } else {
            Target::Single(redis::Client::open(resp3(url)?)?)
        };
        Ok(Some(Self { target, prefix: prefix.to_owned(), current: watch::channel(None).0 }))
    }

    /// The prefix of this deployment's keys and channels.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Opens a new connection whose push messages (pub/sub deliveries, and
    /// redis-rs's notice that the connection closed) go to `pushes`.
    pub(crate) async fn connect(&self, pushes: UnboundedSender<PushInfo>) -> RedisResult<Connection> {
        match &self.target {
            Target::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_push_sender(pushes);
                Ok(Connection::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Target::Cluster(seeds) => {
                // The push sender is a property of the cluster client, so
                // every connection gets a client of its own.
                let client = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Offers `connection` to everyone (the relay found it healthy), or
    /// withdraws the current one (`None`).
    pub(crate) fn offer(&self, connection: Option<Connection>) {
        self.current.send_replace(connection);
    }

    /// The healthy connection, if there is one now.
    pub fn connection(&self) -> Option<Connection> {
        self.current.borrow().clone()
    }

    /// Whether the relay currently vouches for a connection.
    pub fn is_connected(&self) -> bool {
        self.current.borrow().is_some()
    }
}

impl Connection {
    /// Subscribes to `channels`: sharded (`SSUBSCRIBE`, one channel at a
    /// time, as each may live on another node) on a cluster. Returns once
    /// Redis confirmed every subscription.
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(connection) => connection.subscribe(channels).await,
            Self::Cluster(connection) => {
                for channel in channels {
                    connection.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    /// Publishes `payload` on `channel` (`SPUBLISH` on a cluster: the
    /// message stays within the channel's shard).
    pub async fn publish(&mut self, channel: &str, payload: &[u8]) -> RedisResult<()> {
        let command = match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        };
        redis::cmd(command).arg(channel).arg(payload).exec_async(self).await
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Logs when a feature's Redis commands start and stop failing, rather than
/// every failure: an outage would otherwise flood the log.
pub struct FailureLog {
    /// What fails, e.g. "typing through Redis".
    what: &'static str,
    /// What that means for users while it lasts.
    consequence: &'static str,
    failing: AtomicBool,
}

impl FailureLog {
    pub const fn new(what: &'static str, consequence: &'static str) -> Self {
        Self { what, consequence, failing: AtomicBool::new(false) }
    }

    /// The value of a command that worked; `None` for one that failed.
    pub fn checked<T>(&self, result: RedisResult<T>) -> Option<T> {
        match result {
            Ok(value) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(what = self.what, "works again");
                }
                Some(value)
            }
            Err(err) => {
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(what = self.what, error = %err, "failed");
                } else {
                    tracing::warn!(what = self.what, error = %err, consequence = self.consequence, "failed");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, cluster: bool) -> RedisConfig {
        RedisConfig { url: Some(url.to_owned()), cluster, prefix: None }
    }

    #[test]
    fn urls_are_checked_at_start() {
        assert!(RedisLink::new(&RedisConfig::default(), "p").unwrap().is_none(), "no Redis, no link");
        let single = RedisLink::new(&config("redis://127.0.0.1:6379", false), "p").unwrap().unwrap();
        assert!(!single.is_cluster() && !single.is_connected());
        let cluster = RedisLink::new(&config("redis://10.0.0.1:7000, redis://10.0.0.2:7000", true), "p").unwrap().unwrap();
        assert!(cluster.is_cluster());
        assert!(RedisLink::new(&config("http://example.org", false), "p").is_err());
        assert!(RedisLink::new(&config(" , ", true), "p").is_err());
    }
}
