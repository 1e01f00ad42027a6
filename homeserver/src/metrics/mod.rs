//! Prometheus metrics of one worker, served as OpenMetrics text at
//! `GET /metrics` ([`http::routes`]).
//!
//! The registry belongs to the [`Homeserver`](crate::Homeserver), not to a
//! global: the integration tests run many servers in one process, and each
//! must count only its own traffic. Every label has a bounded set of values
//! (route templates, standard methods, status classes, shard indexes), so
//! the number of series does not grow with users, rooms or hostile input.

mod db_pool;
pub mod http;
pub mod tim;

use std::{fmt, time::Instant};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use self::{db_pool::DbPoolCollector, http::RequestMetrics, tim::TimMetrics};
use crate::storage::Db;

/// Every metric this worker exports.
pub struct Metrics {
    registry: Registry,
    pub http: RequestMetrics,
    pub sync: SyncMetrics,
    pub events: EventMetrics,
    pub rate_limits: RateLimitMetrics,
    /// The federation list and the retention job.
    pub tim: TimMetrics,
    /// 1 while the notifier's relay has a working Redis connection (always
    /// 0 without Redis): alert on 0 where Redis is configured.
    pub redis_connected: Gauge,
}

impl Metrics {
    /// Registers the metrics; the pools of `db` are sampled at each scrape.
    pub fn new(db: &Db) -> Self {
        let mut registry = Registry::default();
        let http = RequestMetrics::register(&mut registry);
        let sync = SyncMetrics::register(&mut registry);
        let events = EventMetrics::register(&mut registry);
        let rate_limits = RateLimitMetrics::register(&mut registry);
        let tim = TimMetrics::register(&mut registry);
        let redis_connected = Gauge::default();
        registry.register(
            "redis_connected",
            "Whether this worker's notifications travel through Redis (1) or it polls the database for other workers' writes (0)",
            redis_connected.clone(),
        );
        registry.register_collector(Box::new(DbPoolCollector::new(db.clone())));
        Self { registry, http, sync, events, rate_limits, tim, redis_connected }
    }

    /// Every metric in the OpenMetrics text format, `# EOF` included.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The long-poll of `/sync`: how many wait and how often a write wakes one.
pub struct SyncMetrics {
    waiting: Gauge,
    wakeups: Counter,
}

impl SyncMetrics {
    fn register(registry: &mut Registry) -> Self {
        let waiting = Gauge::default();
        registry.register("sync_waiting", "Syncs long-polling on this worker for a notification", waiting.clone());
        let wakeups = Counter::default();
        // Exposed as `sync_wakeups_total`: the encoder adds the counter suffix.
        registry.register("sync_wakeups", "Long-polling syncs woken by a notification (rather than their timeout)", wakeups.clone());
        Self { waiting, wakeups }
    }

    /// Counts a sync as waiting until the returned guard ends or is dropped
    /// (the client hung up and the request future with it).
    #[must_use = "the sync counts as waiting only while the guard lives"]
    pub fn start_waiting(&self) -> WaitingSync<'_> {
        WaitingSync { _waiting: GaugeGuard::enter(&self.waiting), wakeups: &self.wakeups }
    }
}

/// A sync counted in `sync_waiting`.
pub struct WaitingSync<'m> {
    _waiting: GaugeGuard<'m>,
    wakeups: &'m Counter,
}

impl WaitingSync<'_> {
    /// The wait is over: `woken` by a notification, or not (the timeout).
    pub fn end(self, woken: bool) {
        if woken {
            self.wakeups.inc();
        }
    }
}

/// Room writes: how long a room stays locked for one, and how many events
/// they store.
pub struct EventMetrics {
    persist_duration: Histogram,
    persisted: Counter,
}

impl EventMetrics {
    fn register(registry: &mut Registry) -> Self {
        // From 1 ms (an uncontended single send) to 10 s (a long lock queue).
        let persist_duration = Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register_with_unit(
            "event_persist_duration",
            "Time from opening a room's write transaction (waiting for its lock included) to its commit",
            Unit::Seconds,
            persist_duration.clone(),
        );
        let persisted = Counter::default();
        registry.register("events_persisted", "Room events committed by this worker", persisted.clone());
        Self { persist_duration, persisted }
    }

    /// Records a committed room write that was opened at `opened` and
    /// stored `events` new events. A write that stored none (a retried
    /// transaction id) persisted nothing and is not a sample.
    pub fn committed(&self, opened: Instant, events: u64) {
        if events > 0 {
            self.persist_duration.observe(opened.elapsed().as_secs_f64());
            self.persisted.inc_by(events);
        }
    }
}

/// Requests refused with 429, by limit (`rate_limit::Class` names).
#[derive(Clone)]
pub struct RateLimitMetrics {
    rejected: Family<RateLimitLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    class: &'static str,
}

impl RateLimitMetrics {
    fn register(registry: &mut Registry) -> Self {
        let rejected = Family::default();
        registry.register("rate_limited_requests", "Requests refused with 429 M_LIMIT_EXCEEDED, by limit", rejected.clone());
        Self { rejected }
    }

    pub fn rejected(&self, class: &'static str) {
        self.rejected.get_or_create(&RateLimitLabels { class }).inc();
    }
}

/// Holds a gauge one higher while alive. Dropping is what counts down, so
/// a request future dropped half-way (the client hung up) still does.
struct GaugeGuard<'g>(&'g Gauge);

impl<'g> GaugeGuard<'g> {
    fn enter(gauge: &'g Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
