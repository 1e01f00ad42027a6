//! HTTP metrics: a middleware that times every request by its route, and
//! the `GET /metrics` endpoint that serves all metrics to allowed peers.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Extension, Router,
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::GaugeGuard;
use crate::{config::MetricsConfig, http::ApiError, server::Homeserver};

/// The `endpoint` label of requests no route matched: their raw paths are
/// whatever a client (or scanner) sent, so they share one series.
const UNMATCHED: &str = "unmatched";

/// What Prometheus expects for the OpenMetrics text format.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `http_request_duration_seconds`: the route template (never the
/// path with its ids), the method and the status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    method: &'static str,
    status: &'static str,
}

type DurationFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Request latency by endpoint and the requests being served right now.
#[derive(Clone)]
pub struct RequestMetrics {
    duration: DurationFamily,
    in_flight: Gauge,
}

impl RequestMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let duration = DurationFamily::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time until a request's response head, by route template, method and status class",
            Unit::Seconds,
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "Requests being handled (long-polling syncs included)", in_flight.clone());
        Self { duration, in_flight }
    }
}

/// From 5 ms to 60 s: the longest `/sync` long-poll a client gets by
/// default ends in the last bucket.
fn request_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

/// The middleware (`axum::middleware::from_fn_with_state`) that counts a
/// request in flight and times it until its response head. Added with
/// `Router::layer`, it runs after routing, so the matched route template
/// is known. A request whose client hangs up before the answer leaves the
/// in-flight count but is not timed: it has no status.
pub async fn track(State(metrics): State<RequestMetrics>, request: Request, next: Next) -> Response {
    let endpoint = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
    let method = method_label(request.method());
    let _in_flight = GaugeGuard::enter(&metrics.in_flight);
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels { endpoint, method, status: status_class(response.status()) };
    metrics.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; any other token a client invents is
/// `other`, so it cannot add series.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [Method; 9] =
        [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS, Method::PATCH, Method::TRACE, Method::CONNECT];
    STANDARD.iter().find(|standard| *standard == method).map_or("other", Method::as_str)
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Adds `GET /metrics` when the config enables it. Without the route the
/// router's fallback answers, as for any unknown path.
pub fn routes(router: Router<Homeserver>, config: &MetricsConfig) -> Router<Homeserver> {
    if config.enabled { router.route("/metrics", get(scrape)) } else { router }
}

/// Headers a reverse proxy adds when it relays a request.
const RELAY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Every metric as OpenMetrics text, for peers in `metrics.allowed_ips`;
/// others get the 404 of an unknown endpoint, which tells them nothing.
async fn scrape(State(server): State<Homeserver>, peer: Option<Extension<ConnectInfo<SocketAddr>>>, headers: HeaderMap) -> Result<Response, ApiError> {
    // No peer address (a router served without connect info) is no proof
    // of being allowed.
    let peer_allowed = peer.is_some_and(|Extension(ConnectInfo(peer))| server.config.metrics.allowed_ips.iter().any(|range| range.contains(peer.ip())));
    // A proxy on the same host connects from loopback on behalf of anyone
    // on the internet; what it relays is not the allowed peer speaking.
    // Anyone can add these headers, but they can only deny, never allow.
    let relayed = RELAY_HEADERS.iter().any(|name| headers.contains_key(*name));
    if !peer_allowed || relayed {
        return Err(ApiError::unrecognized());
    }
    let text = server.metrics.render().map_err(|err| ApiError::Internal(anyhow::anyhow!("encoding metrics: {err}")))?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_have_bounded_values() {
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_class(StatusCode::BAD_GATEWAY), "5xx");
    }
}
