//! Several stateless workers on the same databases, with Redis between
//! them (and nginx in front): a sync on one worker wakes for writes through
//! another, tokens move freely between workers, concurrent senders on both
//! make one history, typing is shared, and losing Redis costs latency,
//! never messages or requests.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestServer,
    api::{Api, Reply, enc, sync_timeline},
    message_bodies,
    nginx::{self, PrivateNginx},
    redis::{self, PrivateCluster, PrivateRedis},
};
use serde_json::{Value, json};

/// The bound the scale-out issue sets for a cross-worker wake-up.
const WAKE_BOUND: Duration = Duration::from_secs(1);
/// Time for a worker to (re)connect to Redis.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// Long-poll timeout of the syncs that are expected to be woken.
const LONG_POLL_MS: u64 = 10_000;
/// Answers a sync loop follows at most while waiting for one thing.
const MAX_ANSWERS: usize = 10;

/// Two workers of one deployment, both connected to Redis.
async fn two_workers(configure: impl FnOnce(&mut homeserver::Config)) -> (TestServer, TestServer) {
    let a = TestServer::start_with(configure).await;
    let b = a.start_worker(|_| {}).await;
    for worker in [&a, &b] {
        redis::wait_until_connected(worker.server(), true, CONNECT_WITHIN).await;
    }
    (a, b)
}

/// Alice talks, Bob syncs: his token and what he received, against what
/// she sent.
struct Conversation {
    alice: String,
    alice_id: String,
    bob: String,
    room_id: String,
    since: String,
    sent: Vec<String>,
    received: Vec<String>,
}

impl Conversation {
    /// New users (several conversations may share a database) in a room.
    async fn start(server: &TestServer) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let alice = server.register_user(&format!("alice{n}")).await;
        let bob = server.register_user(&format!("bob{n}")).await;
        let room_id = server.api_as(&alice.access_token).create_room(json!({ "invite": [bob.user_id] })).await;
        server.api_as(&bob.access_token).join(&room_id).await.ok();
        let since = server.api_as(&bob.access_token).sync(None, 0).await.str("next_batch");
        Self { alice: alice.access_token, alice_id: alice.user_id, bob: bob.access_token, room_id, since, sent: Vec::new(), received: Vec::new() }
    }

    /// Alice sends `body` through `worker`.
    async fn send(&mut self, worker: &TestServer, body: String) {
        worker.api_as(&self.alice).send_text(&self.room_id, &body).await.ok();
        self.sent.push(body);
    }

    /// Bob long-polls on `syncing` while Alice sends `bodies` through
    /// `sending`. Returns the time from the first send request to the
    /// answer with the last of them, and the messages of the answers.
    async fn round(&mut self, syncing: &TestServer, sending: &TestServer, bodies: &[String]) -> (Duration, Vec<String>) {
        let last = bodies.last().cloned().unwrap_or_default();
        let room_id = self.room_id.clone();
        let sync = self.sync_loop(syncing, move |reply| message_bodies(&sync_timeline(&reply.body, &room_id)).contains(&last)).await;
        let start = Instant::now();
        for body in bodies {
            self.send(sending, body.clone()).await;
        }
        let (replies, answered) = sync.await.expect("the sync task");
        (answered - start, self.take(&replies))
    }

    /// Bob's long-poll on `syncing` while Alice types (or stops) through
    /// `typing_on`: the typing lists the answers carried.
    async fn typing_round(&mut self, syncing: &TestServer, typing_on: &TestServer, typing: bool) -> Vec<Vec<String>> {
        let room_id = self.room_id.clone();
        let sync = self.sync_loop(syncing, move |reply| !typing_lists(&reply.body, &room_id).is_empty()).await;
        self.typing(typing_on, typing).await;
        let (replies, _) = sync.await.expect("the sync task");
        self.take(&replies);
        replies.iter().flat_map(|reply| typing_lists(&reply.body, &self.room_id)).collect()
    }

    /// Starts Bob's sync loop on `syncing` from his token and returns once
    /// its first long-poll waits (the notifier saw its subscription). The
    /// loop follows `next_batch` until an answer passes `done`, as a client
    /// would: an answer may come early with other news (notification
    /// counts, which the push processor writes after their events). The
    /// handle yields the answers and when the last came.
    async fn sync_loop(&self, syncing: &TestServer, done: impl Fn(&Reply) -> bool + Send + 'static) -> tokio::task::JoinHandle<(Vec<Reply>, Instant)> {
        let (api, mut since) = (syncing.api_as(&self.bob), self.since.clone());
        let sync = tokio::spawn(async move {
            let mut replies = Vec::new();
            loop {
                let reply = api.sync(Some(&since), LONG_POLL_MS).await;
                since = reply.str("next_batch");
                let finished = done(&reply);
                replies.push(reply);
                if finished || replies.len() >= MAX_ANSWERS {
                    return (replies, Instant::now());
                }
            }
        });
        assert!(syncing.wait_for_waiting_sync(Duration::from_secs(5)).await, "the sync did not start waiting");
        sync
    }

    /// Records what `replies` carried and moves Bob's token past them;
    /// returns their messages.
    fn take(&mut self, replies: &[Reply]) -> Vec<String> {
        let mut messages = Vec::new();
        for reply in replies {
            messages.extend(message_bodies(&sync_timeline(reply.ok(), &self.room_id)));
            self.since = reply.str("next_batch");
        }
        self.received.extend(messages.iter().cloned());
        messages
    }

    /// One sync on `worker` that returns at once; its answer.
    async fn sync_now(&mut self, worker: &TestServer) -> Reply {
        let reply = worker.api_as(&self.bob).sync(Some(&self.since), 0).await;
        self.received.extend(message_bodies(&sync_timeline(reply.ok(), &self.room_id)));
        self.since = reply.str("next_batch");
        reply
    }

    /// Alice types (or stops) through `worker`.
    async fn typing(&self, worker: &TestServer, typing: bool) {
        let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&self.room_id), enc(&self.alice_id));
        worker.api_as(&self.alice).put(&path, json!({ "typing": typing, "timeout": 30_000 })).await.ok();
    }

}

/// The `m.typing` user lists of `room_id` in a sync answer.
fn typing_lists(body: &Value, room_id: &str) -> Vec<Vec<String>> {
    body["rooms"]["join"][room_id]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == "m.typing")
        .map(|event| event["content"]["user_ids"].as_array().into_iter().flatten().filter_map(|user| user.as_str().map(str::to_owned)).collect())
        .collect()
}

/// Bob long-polls on `a` while Alice sends through `b`, five times; every
/// answer carries exactly the new message. Returns the wake-up latencies,
/// from the start of the send request to the answer.
async fn wake_across_workers(a: &TestServer, b: &TestServer) -> Vec<Duration> {
    let mut chat = Conversation::start(a).await;
    let mut latencies = Vec::new();
    for i in 0..5 {
        let body = format!("across workers {i}");
        let (latency, messages) = chat.round(a, b, std::slice::from_ref(&body)).await;
        assert_eq!(messages, [body], "the woken sync");
        latencies.push(latency);
    }
    latencies
}

/// Alice types through `b`; Bob's sync on `a` shows it, and his next sync,
/// on `b` with `a`'s token, shows her stop through `a`.
async fn typing_across_workers(a: &TestServer, b: &TestServer) {
    let mut chat = Conversation::start(a).await;
    assert_eq!(chat.typing_round(a, b, true).await, [vec![chat.alice_id.clone()]], "Bob's sync on worker A");
    assert_eq!(chat.typing_round(b, a, false).await, [Vec::<String>::new()], "Bob's sync on worker B");
    // Nothing changed since: the version in the token means the same on
    // both workers, so neither sends the list again. (One sync first: a
    // change that lands while a sync reads may come once more, harmlessly,
    // as the token's version was read before the rooms.)
    chat.sync_now(a).await;
    let since = chat.since.clone();
    for worker in [b, a] {
        let quiet = worker.api_as(&chat.bob).sync(Some(&since), 0).await;
        assert_eq!(typing_lists(quiet.ok(), &chat.room_id), Vec::<Vec<String>>::new(), "a sync without news: {quiet}");
    }
}

fn report(what: &str, latencies: &[Duration]) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    eprintln!("{what}: wake-up latencies {sorted:?} (median {:?})", sorted[sorted.len() / 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_on_one_worker_wakes_within_a_second_for_a_message_sent_through_another() {
    let (a, b) = two_workers(redis::use_shared).await;
    let latencies = wake_across_workers(&a, &b).await;
    report("single Redis", &latencies);
    assert!(latencies.iter().all(|latency| *latency < WAKE_BOUND), "{latencies:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_switching_workers_sees_every_message_exactly_once() {
    let (a, b) = two_workers(redis::use_shared).await;
    let workers = [&a, &b];
    let mut chat = Conversation::start(&a).await;
    for round in 0..12 {
        let (syncing, sending) = (workers[round % 2], workers[(round + 1) % 2]);
        // Some messages are there before the sync starts, some wake it,
        // some arrive while it answers.
        if round % 3 == 0 {
            chat.send(sending, format!("round {round}: before the sync")).await;
        }
        let bodies: Vec<String> = (0..=round % 2).map(|k| format!("round {round}: message {k}")).collect();
        chat.round(syncing, sending, &bodies).await;
    }
    // Whatever the last answers left behind, from either worker.
    for worker in workers {
        chat.sync_now(worker).await;
    }
    assert_eq!(chat.received, chat.sent, "what Bob's syncs, alternating between workers, received");
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_set_on_one_worker_appears_in_a_sync_on_another() {
    let (a, b) = two_workers(redis::use_shared).await;
    typing_across_workers(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_without_redis_keeps_serving_and_polls_for_the_others_writes() {
    let a = TestServer::start_with(redis::use_shared).await;
    let b = a.start_worker(|config| config.redis.url = Some(redis::unreachable_url())).await;
    redis::wait_until_connected(a.server(), true, CONNECT_WITHIN).await;
    assert!(!b.server().redis.as_ref().expect("Redis configured").is_connected());
    let mut chat = Conversation::start(&a).await;

    // Bob waits on the worker that cannot hear the others: it notices
    // Alice's messages through worker A within its polling interval.
    let mut latencies = Vec::new();
    for i in 0..3 {
        let body = format!("while B has no Redis {i}");
        let (latency, messages) = chat.round(&b, &a, std::slice::from_ref(&body)).await;
        assert_eq!(messages, [body], "the woken sync");
        latencies.push(latency);
    }
    report("worker without Redis (polling)", &latencies);
    let bound = homeserver::sync::relay::FALLBACK_POLL + Duration::from_millis(500);
    assert!(latencies.iter().all(|latency| *latency < bound), "{latencies:?}, expected under {bound:?}");

    // Everything else works there; typing is off (no error, nobody shown).
    chat.typing(&b, true).await;
    chat.send(&b, "sent through the worker without Redis".to_owned()).await;
    let reply = chat.sync_now(&b).await;
    assert_eq!(typing_lists(&reply.body, &chat.room_id), Vec::<Vec<String>>::new(), "{reply}");
    // Its token is good on worker A, and nothing comes twice.
    chat.sync_now(&a).await;
    assert_eq!(chat.received, chat.sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_and_restarted_during_a_sync_loop_loses_nothing() {
    if !redis::installed() {
        eprintln!("SKIPPED: redis-server / redis-cli are not installed");
        return;
    }
    let mut private = PrivateRedis::start().await;
    let url = private.url();
    let (a, b) = two_workers(|config| {
        config.redis.url = Some(url);
        config.redis.prefix = Some(redis::unique_prefix());
    })
    .await;
    let mut chat = Conversation::start(&a).await;

    let mut before = Vec::new();
    for i in 0..3 {
        before.push(chat.round(&a, &b, &[format!("before {i}")]).await.0);
    }
    report("before the outage", &before);

    private.kill();
    for worker in [&a, &b] {
        redis::wait_until_connected(worker.server(), false, CONNECT_WITHIN).await;
    }
    let mut during = Vec::new();
    for i in 0..3 {
        during.push(chat.round(&a, &b, &[format!("during {i}")]).await.0);
    }
    report("Redis down (polling)", &during);
    // Typing is off meanwhile, without failing anyone.
    chat.typing(&b, true).await;

    private.restart().await;
    for worker in [&a, &b] {
        redis::wait_until_connected(worker.server(), true, CONNECT_WITHIN).await;
    }
    let mut after = Vec::new();
    for i in 0..3 {
        after.push(chat.round(&a, &b, &[format!("after {i}")]).await.0);
    }
    report("Redis back", &after);
    assert!(before.iter().chain(&after).all(|latency| *latency < WAKE_BOUND), "wake-ups through Redis: {before:?} {after:?}");
    for worker in [&a, &b] {
        chat.sync_now(worker).await;
    }
    assert_eq!(chat.received, chat.sent, "Bob's sync loop across the outage");

    // Typing works again: the restarted Redis lost the old state and
    // counter, and the tokens from before must not confuse anyone.
    assert_eq!(chat.typing_round(&a, &b, true).await, [vec![chat.alice_id.clone()]], "typing after the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_share_a_redis_cluster_through_sharded_pub_sub() {
    if !redis::installed() {
        eprintln!("SKIPPED: redis-server / redis-cli are not installed");
        return;
    }
    let cluster = PrivateCluster::start().await;
    let url = cluster.url();
    let (a, b) = two_workers(|config| {
        config.redis.url = Some(url);
        config.redis.cluster = true;
    })
    .await;
    let latencies = wake_across_workers(&a, &b).await;
    report("Redis Cluster", &latencies);
    assert!(latencies.iter().all(|latency| *latency < WAKE_BOUND), "{latencies:?}");
    typing_across_workers(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_senders_on_two_workers_make_one_linear_history() {
    const SENDERS_PER_WORKER: usize = 50;
    const MESSAGES_PER_SENDER: usize = 3;
    const USERS: usize = 10;
    let (a, b) = two_workers(redis::use_shared).await;
    let owner = a.register_user("owner").await;
    let room_id = a.api_as(&owner.access_token).create_room(json!({ "preset": "public_chat" })).await;
    let mut tokens = Vec::new();
    for n in 0..USERS {
        let user = a.register_user(&format!("sender{n}")).await;
        a.api_as(&user.access_token).join(&room_id).await.ok();
        tokens.push(user.access_token);
    }

    // Every sender sends its messages one after another; all senders at
    // once, half through each worker. Each message is sent twice with the
    // same transaction id (a client retrying after a lost answer).
    let mut senders = Vec::new();
    for sender in 0..2 * SENDERS_PER_WORKER {
        let worker = if sender % 2 == 0 { &a } else { &b };
        let api = worker.api_as(&tokens[sender % USERS]);
        let room_id = room_id.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for message in 0..MESSAGES_PER_SENDER {
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(&room_id), common::api::new_txn_id());
                let body = json!({ "msgtype": "m.text", "body": format!("{sender}/{message}") });
                let first = api.put(&path, body.clone()).await.ok()["event_id"].clone();
                let retry = api.put(&path, body).await.ok()["event_id"].clone();
                assert_eq!(first, retry, "a retried transaction id returns the first event");
                ids.push(first);
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.expect("sender task"));
    }

    // The stored history: one line (each event's only prev_event is the
    // one before it, depth counting up by one), every message exactly once.
    let room = ruma::RoomId::parse(room_id.as_str()).expect("room id");
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as("SELECT event_id, pdu FROM events WHERE room_id = $1 ORDER BY stream_pos")
        .bind(room_id.as_str())
        .fetch_all(a.server().db.room_shard(&room))
        .await
        .expect("reading the room's events");
    for pair in rows.windows(2) {
        let ((previous_id, previous), (_, event)) = (&pair[0], &pair[1]);
        assert_eq!(event["prev_events"], json!([previous_id]), "one line of events");
        assert_eq!(event["depth"].as_i64(), previous["depth"].as_i64().map(|depth| depth + 1));
    }
    let bodies = message_bodies(rows.iter().map(|(_, pdu)| pdu));
    let expected = 2 * SENDERS_PER_WORKER * MESSAGES_PER_SENDER;
    let unique: std::collections::BTreeSet<&String> = bodies.iter().collect();
    assert_eq!((bodies.len(), unique.len()), (expected, expected), "every message stored exactly once");
    let stored: std::collections::BTreeSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert!(acknowledged.iter().all(|id| id.as_str().is_some_and(|id| stored.contains(id))), "every acknowledged event is stored");
    // Each sender's messages in the order it sent them.
    for sender in 0..2 * SENDERS_PER_WORKER {
        let own: Vec<&String> = bodies.iter().filter(|body| body.starts_with(&format!("{sender}/"))).collect();
        let sorted = { let mut sorted = own.clone(); sorted.sort(); sorted };
        assert_eq!(own, sorted, "sender {sender}'s messages in order");
    }

    // Both workers serve the same history to a reader.
    for worker in [&a, &b] {
        let page = worker.api_as(&owner.access_token).messages(&room_id, &format!("dir=b&limit={}", expected + 50)).await;
        let mut read = message_bodies(page.ok()["chunk"].as_array().expect("chunk"));
        read.reverse();
        assert_eq!(read, bodies, "the history as /messages reads it");
    }
}

/// Requests `worker` has answered for `endpoint` (a route template), from
/// its own `/metrics`.
async fn requests_served(worker: &TestServer, endpoint: &str) -> f64 {
    let text = worker.api().get("/metrics").await.text;
    let label = format!("endpoint=\"{endpoint}\"");
    text.lines()
        .filter(|line| line.starts_with("http_request_duration_seconds_count{") && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_behind_nginx_serve_one_conversation() {
    if !nginx::installed() {
        eprintln!("SKIPPED: nginx is not installed (scripts/services installs nginx-light)");
        return;
    }
    let (a, b) = two_workers(redis::use_shared).await;
    let upstreams: Vec<String> = [&a, &b].iter().map(|worker| worker.base_url().trim_start_matches("http://").to_owned()).collect();
    let nginx = PrivateNginx::start(&upstreams).await;
    let through_nginx = Api::new(vec![nginx.base_url()]);

    let (alice, bob) = (a.register_user("alice").await, a.register_user("bob").await);
    let (alice_api, bob_api) = (through_nginx.with_token(&alice.access_token), through_nginx.with_token(&bob.access_token));
    let room_id = alice_api.create_room(json!({ "invite": [bob.user_id] })).await;
    bob_api.join(&room_id).await.ok();
    let mut since = bob_api.sync(None, 0).await.str("next_batch");

    // Bob long-polls through nginx, Alice sends through nginx: whichever
    // workers they land on, the sync wakes within the bound, and every
    // message arrives once, in order.
    let (mut sent, mut received, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..10 {
        let waiting = tokio::spawn({
            let (bob_api, since) = (bob_api.clone(), since.clone());
            async move { bob_api.sync(Some(&since), LONG_POLL_MS).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.waiting_syncs() + b.waiting_syncs() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let body = format!("through nginx {i}");
        let started = Instant::now();
        alice_api.send_text(&room_id, &body).await.ok();
        sent.push(body);
        let mut reply = waiting.await.expect("the waiting sync");
        latencies.push(started.elapsed());
        // An early answer without the message (another change) is followed.
        while sync_timeline(reply.ok(), &room_id).is_empty() {
            since = reply.str("next_batch");
            reply = bob_api.sync(Some(&since), LONG_POLL_MS).await;
        }
        since = reply.str("next_batch");
        received.extend(message_bodies(&sync_timeline(reply.ok(), &room_id)));
    }
    report("through nginx", &latencies);
    assert_eq!(received, sent, "every message once, in order");
    assert!(latencies.iter().all(|latency| *latency < WAKE_BOUND), "{latencies:?}");

    // Round robin reached both workers.
    for worker in [&a, &b] {
        assert!(requests_served(worker, "/_matrix/client/v3/sync").await > 0.0, "worker {} served no sync", worker.base_url());
    }
}
