//! TI-Messenger metrics: the federation list and the retention job.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

pub struct TimMetrics {
    pub federation_list: FederationListMetrics,
    pub retention: RetentionMetrics,
}

impl TimMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        Self { federation_list: FederationListMetrics::register(registry), retention: RetentionMetrics::register(registry) }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Which rule acted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Alert on `time() - tim_federation_list_refreshed_timestamp_seconds`
/// approaching 72 h: remote invites stop then.
#[derive(Clone)]
pub struct FederationListMetrics {
    version: Gauge,
    refreshed: Gauge,
    refreshes: Family<ResultLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
}

impl FederationListMetrics {
    fn register(registry: &mut Registry) -> Self {
        let version = Gauge::default();
        registry.register("tim_federation_list_version", "Version of the federation list in use", version.clone());
        let refreshed = Gauge::default();
        registry.register("tim_federation_list_refreshed_timestamp_seconds", "When the federation list in use was last confirmed current", refreshed.clone());
        let refreshes = Family::default();
        registry.register("tim_federation_list_refreshes", "Refreshes of the federation list, by result (ok, failed)", refreshes.clone());
        let refused = Family::default();
        registry.register(
            "tim_federation_list_refused_invites",
            "Invites of remote users refused by the federation list rules, by reason (not_listed, stale_list, no_list, insured_to_insured)",
            refused.clone(),
        );
        Self { version, refreshed, refreshes, refused }
    }

    pub fn loaded(&self, version: i64, refreshed_ms: i64) {
        self.version.set(version);
        self.refreshed.set(refreshed_ms / 1000);
    }

    pub fn refreshed(&self, ok: bool) {
        self.refreshes.get_or_create(&ResultLabels { result: if ok { "ok" } else { "failed" } }).inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// What the retention job removed, and how long its runs take.
#[derive(Clone)]
pub struct RetentionMetrics {
    rooms_purged: Family<ReasonLabels, Counter>,
    events_deleted: Counter,
    members_removed: Counter,
    run_duration: Histogram,
}

impl RetentionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let rooms_purged = Family::default();
        registry.register("tim_retention_rooms_purged", "Rooms whose content the retention job deleted, by rule (inactive, orphaned, insured_only)", rooms_purged.clone());
        let events_deleted = Counter::default();
        registry.register("tim_retention_events_deleted", "Room events the retention job deleted", events_deleted.clone());
        let members_removed = Counter::default();
        registry.register("tim_retention_members_removed", "Local users the retention job made leave a room", members_removed.clone());
        let run_duration = Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]);
        registry.register_with_unit("tim_retention_run_duration", "Time of one retention run over one database", Unit::Seconds, run_duration.clone());
        Self { rooms_purged, events_deleted, members_removed, run_duration }
    }

    pub fn purged(&self, reason: &'static str, events: u64) {
        self.rooms_purged.get_or_create(&ReasonLabels { reason }).inc();
        self.events_deleted.inc_by(events);
    }

    pub fn removed_members(&self, count: u64) {
        self.members_removed.inc_by(count);
    }

    pub fn ran(&self, seconds: f64) {
        self.run_duration.observe(seconds);
    }
}
