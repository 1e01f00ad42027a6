//! Prometheus metrics at `/metrics`: requests labelled by route template,
//! room writes, pool gauges and sync wake-ups, and the endpoint hidden from
//! peers the config does not allow. Metrics are per process, so these tests
//! run one worker in every test configuration.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestServer,
    api::{Api, enc, sync_timeline},
    message_bodies,
};
use serde_json::json;

/// The route template of a message send, as the `endpoint` label shows it.
const SEND_ROUTE: &str = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}";
/// Deadline for things that should happen at once.
const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn requests_events_and_pools_are_measured() {
    let server = TestServer::start_one_worker().await;
    let alice = server.register_user("alice").await;
    let token = server.new_session("alice", &alice.password).await;
    let api = server.api_as(&token);
    let room_id = api.create_room(json!({ "name": "Metrics" })).await;
    api.send_text(&room_id, "hello").await.ok();
    let unknown_path = format!("/_matrix/client/v3/nonexistent/{}", enc(&room_id));
    api.get(&unknown_path).await.assert_error(404, "M_UNRECOGNIZED");

    let metrics = scrape(&server.api()).await;

    let send = [("endpoint", SEND_ROUTE), ("method", "PUT"), ("status", "2xx")];
    assert_eq!(metrics.value("http_request_duration_seconds_count", &send), Some(1.0), "one send:\n{}", metrics.text);
    let login = [("endpoint", "/_matrix/client/v3/login"), ("method", "POST"), ("status", "2xx")];
    assert_eq!(metrics.value("http_request_duration_seconds_count", &login), Some(1.0), "one login:\n{}", metrics.text);
    let unmatched = [("endpoint", "unmatched"), ("method", "GET"), ("status", "4xx")];
    assert_eq!(metrics.value("http_request_duration_seconds_count", &unmatched), Some(1.0), "the unknown path:\n{}", metrics.text);
    assert!(
        !metrics.text.contains(&room_id) && !metrics.text.contains(&enc(&room_id)),
        "no label carries a room id:\n{}",
        metrics.text
    );
    // The scrape itself is the one request in flight.
    assert_eq!(metrics.value("http_requests_in_flight", &[]), Some(1.0));

    // createRoom stores several events in one write, the send one more.
    let persisted = metrics.value("events_persisted_total", &[]).unwrap_or_default();
    assert!(persisted >= 2.0, "events_persisted_total {persisted}:\n{}", metrics.text);
    let writes = metrics.value("event_persist_duration_seconds_count", &[]).unwrap_or_default();
    assert!(writes >= 2.0, "event_persist_duration_seconds_count {writes}:\n{}", metrics.text);

    let max = server.config().database.max_connections;
    assert_eq!(metrics.value("db_pool_max_connections", &[("shard", "0")]), Some(f64::from(max)));
    let idle = metrics.value("db_pool_connections", &[("shard", "0"), ("state", "idle")]);
    let in_use = metrics.value("db_pool_connections", &[("shard", "0"), ("state", "in_use")]);
    let open = idle.zip(in_use).map(|(idle, in_use)| idle + in_use);
    assert!(open.is_some_and(|open| open >= 1.0 && open <= f64::from(max)), "pool gauges {idle:?} {in_use:?}:\n{}", metrics.text);
}

#[tokio::test]
async fn a_sync_woken_by_a_message_is_counted() {
    let server = TestServer::start_one_worker().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let room_id = api.create_room(json!({})).await;
    let since = api.sync(None, 0).await.str("next_batch");

    let waiting_sync = tokio::spawn({
        let api = api.clone();
        async move { api.sync(Some(&since), 10_000).await }
    });
    let waiting = wait_for_metrics(&server.api(), |metrics| metrics.value("sync_waiting", &[]) == Some(1.0)).await;
    // The waiting sync and the scrape.
    assert_eq!(waiting.value("http_requests_in_flight", &[]), Some(2.0));
    let wakeups_before = waiting.value("sync_wakeups_total", &[]).unwrap_or_default();

    api.send_text(&room_id, "wake up").await.ok();
    let reply = waiting_sync.await.expect("the waiting sync");
    assert_eq!(message_bodies(&sync_timeline(reply.ok(), &room_id)), ["wake up"]);

    let after = scrape(&server.api()).await;
    let wakeups = after.value("sync_wakeups_total", &[]).unwrap_or_default();
    assert!(wakeups > wakeups_before, "sync_wakeups_total {wakeups_before} → {wakeups}:\n{}", after.text);
    assert_eq!(after.value("sync_waiting", &[]), Some(0.0));
}

#[tokio::test]
async fn metrics_are_hidden_from_peers_not_allowed() {
    let server = TestServer::start_with(|config| config.metrics.allowed_ips = Vec::new()).await;
    server.api().get("/metrics").await.assert_error(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn metrics_are_hidden_from_requests_relayed_by_a_proxy() {
    let server = TestServer::start_one_worker().await;
    // A reverse proxy on the same host connects from loopback too.
    let relayed = reqwest::Client::new()
        .get(format!("{}/metrics", server.base_url()))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(relayed.status(), reqwest::StatusCode::NOT_FOUND);
    let body: serde_json::Value = relayed.json().await.expect("a Matrix error body");
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    scrape(&server.api()).await;
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let server = TestServer::start_with(|config| config.metrics.enabled = false).await;
    server.api().get("/metrics").await.assert_error(404, "M_UNRECOGNIZED");
}

/// A scrape: the OpenMetrics text of `GET /metrics`.
struct Metrics {
    text: String,
}

/// Scrapes as a Prometheus on the same host would (the test client
/// connects from 127.0.0.1, which the default config allows).
async fn scrape(api: &Api) -> Metrics {
    let reply = api.get("/metrics").await;
    reply.ok();
    assert!(reply.text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF: {reply}");
    Metrics { text: reply.text }
}

/// Scrapes until `done` accepts a scrape.
async fn wait_for_metrics(api: &Api, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + SOON;
    loop {
        let metrics = scrape(api).await;
        if done(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "the metrics did not get there within {SOON:?}:\n{}", metrics.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Metrics {
    /// The value of the sample `name` with exactly `labels` (in any order).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(String, String)> = labels.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
        wanted.sort();
        self.text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample_name, mut sample_labels) = parse_series(series)?;
            sample_labels.sort();
            (sample_name == name && sample_labels == wanted).then(|| value.parse().ok()).flatten()
        })
    }
}

/// `name{key="value",…}` (or a bare `name`) as its name and labels. Label
/// values may hold braces (route templates) and escaped quotes.
fn parse_series(series: &str) -> Option<(&str, Vec<(String, String)>)> {
    let Some((name, rest)) = series.split_once('{') else { return Some((series, Vec::new())) };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after_key) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    escaped => escaped,
                }),
                (index, '"') => break index,
                (_, other) => value.push(other),
            }
        };
        labels.push((key.to_owned(), value));
        rest = after_key[end + 1..].strip_prefix(',').unwrap_or(&after_key[end + 1..]);
    }
    Some((name, labels))
}
