//! Carries the notifier's wake-ups between workers over Redis pub/sub, and
//! keeps long-polling syncs correct while Redis is away.
//!
//! **Channels.** `<prefix>:notify:0` … `<prefix>:notify:15`. Every worker
//! subscribes to all of them and publishes each message on the next one in
//! turn. On a cluster they are sharded channels (`SPUBLISH`/`SSUBSCRIBE`)
//! whose names hash to different slots, so the messages spread over the
//! shards instead of being broadcast on the cluster bus; on one server the
//! same code uses plain `PUBLISH`/`SUBSCRIBE`.
//!
//! **Messages.** The publishing worker's random id, then one user id per
//! line, or the line `*` for "wake every waiting sync". The notifier
//! coalesces what was queued while a publish was in flight, so one message
//! carries every user of one commit, or of several under load. A worker does
//! not wake anyone for its own messages (it woke its syncs when it queued
//! them) but takes them as heartbeats: every [`HEARTBEAT`] it publishes an
//! empty message on every channel, and a channel whose echo stops coming
//! ends the session, even when the TCP connection looks fine.
//!
//! **Without Redis.** Until the subscriptions stand, nothing tells this
//! worker about the others' writes, so it watches the database instead:
//! every [`FALLBACK_POLL`] it reads the stream heads and wakes all its
//! waiting syncs when one moved (they re-read and go back to waiting when
//! it was not for them). One query per database per interval, however many
//! syncs wait. Meanwhile it reconnects with backoff; when the subscriptions
//! stand again, it wakes all its syncs once more, for what was published
//! while it was away, and publishes what it queued itself.

use std::{convert::Infallible, sync::Arc, time::Duration};

use rand::Rng as _;
use redis::{PushInfo, PushKind, RedisResult, Value};
use ruma::UserId;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use super::notifier::{Batch, Notifier};
use crate::push::Wakeup;
use crate::{
    redis_link::{Connection, RedisLink},
    server::Homeserver,
    storage,
};

/// Notification channels. A fixed number, so that all workers agree; enough
/// to spread over the shards of a cluster.
const CHANNELS: usize = 16;
/// Users named in one message at most; more go in the next message.
const MAX_USERS_PER_MESSAGE: usize = 1000;
/// The line of a message that wakes every waiting sync.
const EVERYONE: &str = "*";
/// How often every channel carries a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A channel that echoed no heartbeat for this long has stopped delivering.
const ECHO_DEADLINE: Duration = Duration::from_secs(15);
/// How often the stream heads are polled while Redis is away.
pub const FALLBACK_POLL: Duration = Duration::from_millis(250);
/// First and longest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stop may spend publishing what is still queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a stop may wait for the task.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The running relay of this worker; dropping it stops the task too.
pub struct Relay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts the relay; `None` without Redis (a single process).
    pub fn start(server: &Homeserver) -> Option<Self> {
        let link = server.redis.clone()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(server.clone(), link, stopped));
        Some(Self { stop, task })
    }

    /// Publishes what is still queued (briefly) and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            tracing::warn!("the Redis relay did not stop in time");
        }
    }
}

/// Connects, relays while connected, polls while not, until stopped.
async fn run(server: Homeserver, link: Arc<RedisLink>, mut stop: watch::Receiver<bool>) {
    let origin = format!("{:016x}", rand::rng().random::<u64>());
    let channels: Vec<String> = (0..CHANNELS).map(|k| format!("{}:notify:{k}", link.prefix())).collect();
    let mut outage = Outage::starting();
    loop {
        let session = tokio::select! {
            () = stopped(&mut stop) => return,
            never = poll_positions(&server) => match never {},
            session = connect(&link, &channels, &mut outage) => session,
        };
        link.offer(Some(session.connection.clone()));
        server.metrics.redis_connected.set(1);
        outage.end(&link);
        // Whatever the others published while this worker was not
        // subscribed is lost: every waiting sync re-reads.
        server.notifier.wake_all_local();
        let ended = session.run(&server.notifier, &server.push_wakeup, &origin, &channels, &mut stop).await;
        link.offer(None);
        server.metrics.redis_connected.set(0);
        match ended {
            Ended::Stopped => return,
            Ended::Failed(reason) => outage = Outage::begin(&reason),
        }
    }
}

/// Resolves when the worker stops (or its handle is dropped).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Tries to connect and subscribe until it works, pausing with jittered
/// exponential backoff, so that workers do not reconnect in lockstep.
async fn connect(link: &RedisLink, channels: &[String], outage: &mut Outage) -> Session {
    let mut pause = BACKOFF_MIN;
    loop {
        match Session::open(link, channels).await {
            Ok(session) => return session,
            Err(err) => outage.attempt_failed(&err),
        }
        let jittered = pause.mul_f64(rand::rng().random_range(0.5..=1.0));
        tokio::time::sleep(jittered).await;
        pause = (pause * 2).min(BACKOFF_MAX);
    }
}

/// Watches the stream heads and wakes every waiting sync of this worker
/// when one moved. The first read wakes them too: a notification may have
/// been lost just before Redis went away.
async fn poll_positions(server: &Homeserver) -> Infallible {
    let mut seen: Option<Vec<i64>> = None;
    let mut tick = tokio::time::interval(FALLBACK_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match storage::stream::heads(&server.db).await {
            Ok(heads) if seen.as_ref() != Some(&heads) => {
                server.notifier.wake_all_local();
                seen = Some(heads);
            }
            Ok(_) => {}
            // The syncs themselves report database trouble.
            Err(err) => tracing::debug!(error = %err, "polling the stream heads failed"),
        }
    }
}

/// Logs an outage once when it begins and once when it ends, not for every
/// failed attempt in between.
struct Outage {
    since: Instant,
    /// Whether the beginning was logged (the first attempt at start is not
    /// an outage until it fails).
    logged: bool,
}

impl Outage {
    fn starting() -> Self {
        Self { since: Instant::now(), logged: false }
    }

    fn begin(reason: &str) -> Self {
        tracing::warn!(reason, "lost Redis; waiting syncs poll PostgreSQL every {FALLBACK_POLL:?} until it is back");
        Self { since: Instant::now(), logged: true }
    }

    fn attempt_failed(&mut self, err: &redis::RedisError) {
        if self.logged {
            tracing::debug!(error = %err, "Redis still unavailable");
        } else {
            tracing::warn!(error = %err, "Redis unavailable; waiting syncs poll PostgreSQL every {FALLBACK_POLL:?} until it is back");
            self.logged = true;
        }
    }

    fn end(&self, link: &RedisLink) {
        let kind = if link.is_cluster() { "Redis Cluster" } else { "Redis" };
        if self.logged {
            tracing::info!(outage_secs = self.since.elapsed().as_secs(), "{kind} is back; notifications travel through it again");
        } else {
            tracing::info!(prefix = link.prefix(), "connected to {kind}");
        }
    }
}

/// How a session ended.
enum Ended {
    Stopped,
    Failed(String),
}

/// A connection with all channels subscribed, and the pushes it delivers.
struct Session {
    connection: Connection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Session {
    async fn open(link: &RedisLink, channels: &[String]) -> RedisResult<Self> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let mut connection = link.connect(sender).await?;
        connection.subscribe(channels).await?;
        Ok(Self { connection, pushes })
    }

    /// Relays until the connection fails or the worker stops.
    /// Another worker's message also wakes this worker's push processors:
    /// most wake-ups follow a commit of events, and a processor that finds
    /// nothing new costs one query.
    async fn run(mut self, notifier: &Notifier, push_wakeup: &Wakeup, origin: &str, channels: &[String], stop: &mut watch::Receiver<bool>) -> Ended {
        let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut echoed = vec![Instant::now(); channels.len()];
        let mut turn = 0;
        loop {
            tokio::select! {
                () = stopped(stop) => {
                    let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.publish_queued(notifier, origin, channels, &mut turn)).await;
                    return Ended::Stopped;
                }
                push = self.pushes.recv() => {
                    let Some(push) = push else { return Ended::Failed("the connection closed".into()) };
                    match push.kind {
                        PushKind::Message | PushKind::SMessage => {
                            match receive(notifier, origin, channels, &push.data) {
                                Received::Own(channel) => echoed[channel] = Instant::now(),
                                Received::News => push_wakeup.events_committed(),
                                Received::Nothing => {}
                            }
                        }
                        PushKind::Disconnection => return Ended::Failed("the connection closed".into()),
                        // Redis ends a sharded subscription when its slot
                        // moves to another node: subscribe anew.
                        PushKind::Unsubscribe | PushKind::SUnsubscribe => return Ended::Failed("Redis ended a subscription".into()),
                        _ => {}
                    }
                }
                () = notifier.queued() => {
                    if let Err(err) = self.publish_queued(notifier, origin, channels, &mut turn).await {
                        return Ended::Failed(format!("publishing failed: {err}"));
                    }
                }
                _ = heartbeat.tick() => {
                    if let Some(silent) = echoed.iter().position(|at| at.elapsed() > ECHO_DEADLINE) {
                        return Ended::Failed(format!("channel {} stopped delivering", channels[silent]));
                    }
                    let beats = channels.iter().map(|channel| {
                        let mut connection = self.connection.clone();
                        async move { connection.publish(channel, origin.as_bytes()).await }
                    });
                    if let Err(err) = futures::future::try_join_all(beats).await {
                        return Ended::Failed(format!("publishing a heartbeat failed: {err}"));
                    }
                }
            }
        }
    }

    /// Publishes everything queued, each message on the next channel. A
    /// batch that fails goes back to the queue for the next session.
    async fn publish_queued(&mut self, notifier: &Notifier, origin: &str, channels: &[String], turn: &mut usize) -> RedisResult<()> {
        loop {
            let batch = notifier.take_queued(MAX_USERS_PER_MESSAGE);
            if batch.is_empty() {
                return Ok(());
            }
            let channel = &channels[*turn % channels.len()];
            *turn = turn.wrapping_add(1);
            if let Err(err) = self.connection.publish(channel, encode(origin, &batch).as_bytes()).await {
                notifier.requeue(batch);
                return Err(err);
            }
        }
    }
}

/// The text of a message: the origin, then the users (or [`EVERYONE`]).
fn encode(origin: &str, batch: &Batch) -> String {
    let mut text = origin.to_owned();
    if batch.everyone {
        text.push('\n');
        text.push_str(EVERYONE);
    }
    for user in &batch.users {
        text.push('\n');
        text.push_str(user.as_str());
    }
    text
}

/// What a delivered message was.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    /// This worker's own, on the channel with this index (a heartbeat echo).
    Own(usize),
    /// Another worker's, naming someone: their syncs were woken.
    News,
    /// An empty heartbeat of another worker, or garbage.
    Nothing,
}

/// Wakes the syncs a delivered message names. Anything malformed is
/// ignored: a message can at worst fail to wake someone, whose sync then
/// ends at its timeout.
fn receive(notifier: &Notifier, origin: &str, channels: &[String], data: &[Value]) -> Received {
    let [Value::BulkString(channel), Value::BulkString(payload), ..] = data else { return Received::Nothing };
    let Ok(text) = std::str::from_utf8(payload) else { return Received::Nothing };
    let mut lines = text.split('\n');
    if lines.next() == Some(origin) {
        return channels.iter().position(|name| name.as_bytes() == channel.as_slice()).map_or(Received::Nothing, Received::Own);
    }
    let mut users = lines.filter(|line| !line.is_empty()).peekable();
    match users.peek() {
        None => Received::Nothing,
        Some(&EVERYONE) => {
            notifier.wake_all_local();
            Received::News
        }
        Some(_) => {
            notifier.wake_local(users.filter_map(|line| <&UserId>::try_from(line).ok()));
            Received::News
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::owned_user_id;

    use super::*;

    fn delivery(channel: &str, text: &str) -> Vec<Value> {
        vec![Value::BulkString(channel.into()), Value::BulkString(text.into())]
    }

    #[tokio::test]
    async fn messages_wake_the_users_they_name() {
        let notifier = Notifier::shared();
        let channels = vec!["p:notify:0".to_owned(), "p:notify:1".to_owned()];
        let (alice, bob) = (owned_user_id!("@alice:example.org"), owned_user_id!("@bob:example.org"));
        let text = encode("them", &Batch { users: vec![alice.clone(), bob.clone()], everyone: false });
        assert_eq!(text, "them\n@alice:example.org\n@bob:example.org");

        let subscription = notifier.subscribe(&bob);
        let notified = subscription.notified();
        assert_eq!(receive(&notifier, "us", &channels, &delivery("p:notify:1", &text)), Received::News);
        tokio::time::timeout(Duration::from_secs(1), notified).await.expect("Bob is woken");

        let notified = subscription.notified();
        let everyone = encode("them", &Batch { users: Vec::new(), everyone: true });
        receive(&notifier, "us", &channels, &delivery("p:notify:0", &everyone));
        tokio::time::timeout(Duration::from_secs(1), notified).await.expect("everyone is woken");
    }

    #[tokio::test]
    async fn own_messages_are_heartbeats_and_garbage_is_ignored() {
        let notifier = Notifier::shared();
        let channels = vec!["p:notify:0".to_owned(), "p:notify:1".to_owned()];
        let alice = owned_user_id!("@alice:example.org");
        let subscription = notifier.subscribe(&alice);
        let notified = subscription.notified();
        assert_eq!(receive(&notifier, "us", &channels, &delivery("p:notify:1", "us\n@alice:example.org")), Received::Own(1));
        assert_eq!(receive(&notifier, "us", &channels, &delivery("p:notify:0", "them")), Received::Nothing, "another worker's heartbeat");
        for garbage in [vec![], vec![Value::Nil, Value::Int(3)], vec![Value::BulkString("p:notify:0".into()), Value::BulkString(vec![0xff, 0xfe])]] {
            assert_eq!(receive(&notifier, "us", &channels, &garbage), Received::Nothing);
        }
        // Lines that are no user ids wake nobody (but count as news).
        assert_eq!(receive(&notifier, "us", &channels, &delivery("p:notify:0", "them\nnot a user\n\n")), Received::News);
        assert!(tokio::time::timeout(Duration::from_millis(50), notified).await.is_err(), "nobody is woken");
    }
}
