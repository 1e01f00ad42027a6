//! What a run measures on the client side: latency histograms per endpoint
//! and per kind of end-to-end delivery, errors, and counts per second.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// What happened in one second of the run.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Second {
    pub requests: u64,
    pub errors: u64,
    pub deliveries: u64,
}

/// Shared by every client task of a run.
pub struct Metrics {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    endpoints: BTreeMap<&'static str, Measured>,
    deliveries: BTreeMap<&'static str, Measured>,
    seconds: Vec<Second>,
    totals: Second,
}

struct Measured {
    latency_us: Histogram<u64>,
    errors: u64,
}

impl Default for Measured {
    fn default() -> Self {
        // 1 µs to 1 hour at 3 significant digits: a few tens of KiB each.
        let latency_us = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self { latency_us, errors: 0 }
    }
}

impl Measured {
    fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, 3_600_000_000);
        let _ = self.latency_us.record(micros);
    }

    fn summary(&self, name: &str) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &self.latency_us;
        Percentiles {
            name: name.to_owned(),
            count: h.len(),
            errors: self.errors,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self { started: Instant::now(), state: Mutex::default() }
    }
}

impl Metrics {
    fn with_second(&self, update: impl FnOnce(&mut State, usize)) {
        let second = self.started.elapsed().as_secs() as usize;
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.seconds.len() <= second {
            state.seconds.resize(second + 1, Second::default());
        }
        update(&mut state, second);
    }

    /// A finished request: its latency if it succeeded, an error if not.
    pub fn request(&self, endpoint: &'static str, elapsed: Duration, ok: bool) {
        self.with_second(|state, second| {
            let measured = state.endpoints.entry(endpoint).or_default();
            if ok {
                measured.record(elapsed);
            } else {
                measured.errors += 1;
                state.seconds[second].errors += 1;
                state.totals.errors += 1;
            }
            state.seconds[second].requests += 1;
            state.totals.requests += 1;
        });
    }

    /// Something one client sent reached another client after `latency`.
    pub fn delivery(&self, kind: &'static str, latency: Duration) {
        self.with_second(|state, second| {
            state.deliveries.entry(kind).or_default().record(latency);
            state.seconds[second].deliveries += 1;
            state.totals.deliveries += 1;
        });
    }

    /// Requests, errors and deliveries so far.
    pub fn totals(&self) -> Second {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).totals
    }

    /// Per-endpoint and per-delivery percentiles, and the per-second counts.
    pub fn summary(&self) -> (Vec<Percentiles>, Vec<Percentiles>, Vec<Second>) {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let endpoints = state.endpoints.iter().map(|(name, m)| m.summary(name)).collect();
        let deliveries = state.deliveries.iter().map(|(name, m)| m.summary(name)).collect();
        (endpoints, deliveries, state.seconds.clone())
    }
}
