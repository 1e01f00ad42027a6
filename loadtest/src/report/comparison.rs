//! Several runs of one scenario side by side, with each figure's ratio to
//! the first run (the baseline).

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;

use super::{Report, html, markdown};

/// The figures compared (when a run has them).
const KEY_FIGURES: &[&str] = &[
    "messages_per_second",
    "logins_per_second",
    "requests_per_second",
    "error_rate",
    "server_kib_per_idle_sync",
    "server_mean_cpu_percent",
    "server_max_pss_mib",
    "postgres_mean_cpu_percent",
];

/// The comparison table in markdown: key figures and the p50/p99 of every
/// delivery and endpoint, one column per run, ratios to the first.
pub fn markdown(reports: &[Report]) -> String {
    let Some(baseline) = reports.first() else { return String::new() };
    let mut out = format!("Scenario `{}`; ratio = run / {}.\n\n| figure |", baseline.scenario, baseline.label);
    for report in reports {
        let _ = write!(out, " {} |", report.label);
    }
    for report in &reports[1..] {
        let _ = write!(out, " {} / {} |", report.label, baseline.label);
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(2 * reports.len() - 1));
    out.push('\n');

    let mut rows: Vec<(String, Vec<Option<f64>>)> = KEY_FIGURES.iter().map(|name| (name.to_string(), reports.iter().map(|r| r.figures.get(*name).copied()).collect())).collect();
    let latency_names: Vec<String> = reports.iter().flat_map(|r| r.deliveries.iter().chain(&r.endpoints).map(|p| p.name.clone())).fold(Vec::new(), |mut names, name| {
        if !names.contains(&name) {
            names.push(name);
        }
        names
    });
    for name in &latency_names {
        for (quantile, pick) in [("p50 ms", (|p: &crate::metrics::Percentiles| p.p50_ms) as fn(&_) -> f64), ("p99 ms", |p| p.p99_ms)] {
            let values = reports.iter().map(|r| r.deliveries.iter().chain(&r.endpoints).find(|p| &p.name == name).map(pick)).collect();
            rows.push((format!("{name} {quantile}"), values));
        }
    }
    for (name, values) in rows.into_iter().filter(|(_, values)| values.iter().any(Option::is_some)) {
        let _ = write!(out, "| {name} |");
        for value in &values {
            let _ = write!(out, " {} |", value.map_or("–".to_owned(), |v| format!("{v:.2}")));
        }
        for value in &values[1..] {
            let ratio = match (value, values[0]) {
                (Some(v), Some(b)) if b != 0.0 => format!("{:.2}×", v / b),
                _ => "–".to_owned(),
            };
            let _ = write!(out, " {ratio} |");
        }
        out.push('\n');
    }
    out
}

/// Writes `compare.json`, `compare.html` and `compare.md` into `dir`.
pub fn write(reports: &[Report], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let table = markdown(reports);
    std::fs::write(dir.join("compare.json"), serde_json::to_vec_pretty(reports)?)?;
    std::fs::write(dir.join("compare.html"), html::page(reports, Some(&table)))?;
    let mut md = format!("# Side by side\n\n{table}\n");
    for report in reports {
        md.push_str(&markdown::report(report));
        md.push('\n');
    }
    std::fs::write(dir.join("compare.md"), md)?;
    Ok(())
}
