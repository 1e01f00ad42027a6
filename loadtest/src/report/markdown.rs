//! Markdown summary tables.

use std::fmt::Write as _;

use super::Report;
use crate::metrics::Percentiles;

/// A run's summary: its figures and the percentile table.
pub fn report(report: &Report) -> String {
    let mut out = format!("## {} — {} ({:.0} s)\n\n", report.label, report.scenario, report.duration_s);
    out.push_str("| figure | value |\n|---|---:|\n");
    for (name, value) in &report.figures {
        let _ = writeln!(out, "| {name} | {value:.2} |");
    }
    out.push('\n');
    out.push_str(&percentiles_table(report.deliveries.iter().chain(&report.endpoints)));
    out
}

/// `| name | count | errors | p50 | p90 | p99 | max |` in milliseconds.
pub fn percentiles_table<'a>(rows: impl Iterator<Item = &'a Percentiles>) -> String {
    let mut out = String::from("| endpoint / delivery | count | errors | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for p in rows {
        let _ = writeln!(out, "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |", p.name, p.count, p.errors, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms);
    }
    out
}
