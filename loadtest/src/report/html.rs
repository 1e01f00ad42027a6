//! The HTML page: figures, percentile tables and plots of one or more runs.

use std::fmt::Write as _;

use super::{
    Report, markdown,
    svg::{Series, escape, line_chart},
};

/// A page for `reports`, with the comparison table on top when given.
pub fn page(reports: &[Report], comparison_markdown: Option<&str>) -> String {
    let mut out = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest report</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>");
    out.push_str("<h1>loadtest report</h1>");
    if let Some(markdown) = comparison_markdown {
        let _ = write!(out, "<h2>Side by side</h2><pre>{}</pre>", escape(markdown));
    }
    for report in reports {
        let _ = write!(out, "<h2>{} — {}</h2><p>{} for {:.0} s</p>", escape(&report.label), escape(&report.scenario), escape(&report.urls.join(", ")), report.duration_s);
        out.push_str(&table(&markdown::percentiles_table(report.deliveries.iter().chain(&report.endpoints))));
        out.push_str("<table><tr><th>figure</th><th>value</th></tr>");
        for (name, value) in &report.figures {
            let _ = write!(out, "<tr><td>{}</td><td>{value:.2}</td></tr>", escape(name));
        }
        out.push_str("</table>");
        let per_second = |pick: fn(&crate::metrics::Second) -> u64| report.per_second.iter().enumerate().map(|(t, s)| (t as f64, pick(s) as f64)).collect();
        out.push_str(&line_chart("Throughput", "per second", &[
            Series { name: "requests/s".into(), points: per_second(|s| s.requests) },
            Series { name: "deliveries/s".into(), points: per_second(|s| s.deliveries) },
            Series { name: "errors/s".into(), points: per_second(|s| s.errors) },
        ]));
        let group_series = |pick: fn(&crate::process_stats::Sample) -> f64| report.processes.iter().map(|g| Series { name: g.name.clone(), points: g.samples.iter().map(|s| (s.t_s, pick(s))).collect() }).collect::<Vec<_>>();
        out.push_str(&line_chart("CPU (100 % = one core)", "percent", &group_series(|s| s.cpu_percent)));
        out.push_str(&line_chart("Memory (PSS)", "MiB", &group_series(|s| s.pss_mib)));
    }
    out.push_str("</body></html>");
    out
}

/// A markdown table as an HTML table.
fn table(markdown: &str) -> String {
    let mut out = String::from("<table>");
    for (i, line) in markdown.lines().filter(|l| !l.starts_with("|---")).enumerate() {
        let cell = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for value in line.trim_matches('|').split('|') {
            let _ = write!(out, "<{cell}>{}</{cell}>", escape(value.trim()));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}
