//! Line charts as inline SVG: no script, no external files, so the HTML
//! report opens anywhere and can be attached to an issue.

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const MARGIN: f64 = 48.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// A chart of `series` over time (x in seconds).
pub fn line_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let x = |v: f64| MARGIN + v / x_max * (WIDTH - 2.0 * MARGIN);
    let y = |v: f64| HEIGHT - MARGIN + -(v / y_max) * (HEIGHT - 2.0 * MARGIN);

    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#);
    let _ = write!(svg, r#"<text x="{MARGIN}" y="16" font-size="13" font-weight="bold">{}</text>"#, escape(title));
    let (x0, x1, y0, y1) = (x(0.0), x(x_max), y(0.0), y(y_max));
    let _ = write!(svg, r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#444"/>"##);
    for step in 0..=4 {
        let value = y_max * f64::from(step) / 4.0;
        let _ = write!(svg, r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{x0}" y1="{1}" x2="{x1}" y2="{1}" stroke="#eee"/>"##, x0 - 4.0, y(value), format_number(value));
    }
    let _ = write!(svg, r#"<text x="{x1}" y="{}" text-anchor="end">{x_max:.0} s</text>"#, y0 + 16.0);
    let _ = write!(svg, r#"<text x="8" y="{}" transform="rotate(-90 8 {0})">{}</text>"#, HEIGHT / 2.0, escape(y_label));
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = s.points.iter().map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py))).collect();
        let _ = write!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, points.join(" "));
        let _ = write!(svg, r#"<text x="{}" y="{}" fill="{color}">{}</text>"#, x1 - 160.0, 16.0 + 13.0 * i as f64, escape(&s.name));
    }
    svg.push_str("</svg>");
    svg
}

fn format_number(value: f64) -> String {
    if value >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") }
}

/// Text for SVG and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
