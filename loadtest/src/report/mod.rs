//! The report of a run: one JSON file with everything measured, a
//! self-contained HTML page with plots, a markdown summary table; and the
//! side-by-side comparison of several runs.

pub mod comparison;
mod html;
mod markdown;
mod svg;

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    metrics::{Metrics, Percentiles, Second},
    process_stats::GroupStats,
    scenarios::{RunOptions, Scenario},
};

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub scenario: String,
    pub urls: Vec<String>,
    pub started_at_unix: u64,
    pub duration_s: f64,
    pub options: serde_json::Value,
    /// Per endpoint; long-poll `/sync` latencies include the wait.
    pub endpoints: Vec<Percentiles>,
    /// End-to-end: sent by one client, seen in another's `/sync`.
    pub deliveries: Vec<Percentiles>,
    pub per_second: Vec<Second>,
    pub processes: Vec<GroupStats>,
    /// Totals and scenario-specific results (`messages_per_second`,
    /// `server_kib_per_idle_sync`, …).
    pub figures: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(options: &RunOptions, scenario: Scenario, started_at_unix: u64, duration_s: f64, metrics: &Metrics, processes: Vec<GroupStats>, mut figures: BTreeMap<String, f64>) -> Self {
        let (endpoints, deliveries, per_second) = metrics.summary();
        let totals = metrics.totals();
        figures.insert("requests".into(), totals.requests as f64);
        figures.insert("requests_per_second".into(), totals.requests as f64 / duration_s.max(1e-9));
        figures.insert("error_rate".into(), totals.errors as f64 / (totals.requests.max(1)) as f64);
        for group in &processes {
            figures.insert(format!("{}_mean_cpu_percent", group.name), group.mean_cpu_percent);
            figures.insert(format!("{}_max_pss_mib", group.name), group.max_pss_mib);
        }
        Self {
            label: options.label.clone(),
            scenario: serde_json::to_value(scenario).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            urls: options.urls.clone(),
            started_at_unix,
            duration_s,
            options: serde_json::to_value(options).unwrap_or_default(),
            endpoints,
            deliveries,
            per_second,
            processes,
            figures,
        }
    }

    /// Writes `report.json`, `report.html` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.html"), html::page(std::slice::from_ref(self), None))?;
        std::fs::write(dir.join("report.md"), markdown::report(self))?;
        Ok(())
    }
}

/// The markdown summary of one run.
pub fn markdown_summary(report: &Report) -> String {
    markdown::report(report)
}
