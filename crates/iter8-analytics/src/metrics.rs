//! The service's own Prometheus metrics: requests, latencies and in-flight work.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The label of requests that matched no route; keeps scanners from inflating cardinality.
pub const UNMATCHED: &str = "unmatched";

/// Latency buckets in seconds: the engine takes about a millisecond, a slow request seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A failure to set up the metrics (only possible through a programming error).
#[derive(Debug, thiserror::Error)]
#[error("metrics setup failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The registry and the metrics recorded into it; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    engine: HistogramVec,
    auth_rejections: IntCounterVec,
}

impl Metrics {
    /// A fresh registry holding the service's metrics (one per server, so tests don't mix).
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "iter8_analytics_http_requests_total",
                "HTTP requests answered, by endpoint, method and status code.",
            ),
            &["endpoint", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "iter8_analytics_http_request_duration_seconds",
                "Time to answer an HTTP request, by endpoint and status code.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint", "status"],
        )?;
        let in_flight = IntGauge::new(
            "iter8_analytics_http_requests_in_flight",
            "HTTP requests being answered now.",
        )?;
        let engine = HistogramVec::new(
            HistogramOpts::new(
                "iter8_analytics_engine_duration_seconds",
                "CPU-bound time of one assessment in the engine, by outcome.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let auth_rejections = IntCounterVec::new(
            Opts::new(
                "iter8_analytics_auth_rejections_total",
                "Requests refused with 401 for a missing or invalid bearer token, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(engine.clone()))?;
        registry.register(Box::new(auth_rejections.clone()))?;
        Ok(Self {
            registry,
            requests,
            duration,
            in_flight,
            engine,
            auth_rejections,
        })
    }

    /// Counts a request refused for its bearer token.
    pub fn count_auth_rejection(&self, rejection: crate::error::Rejection) {
        self.auth_rejections
            .with_label_values(&[rejection.label()])
            .inc();
    }

    /// Records how long the engine took and whether it accepted the request.
    pub fn observe_engine(&self, outcome: &str, elapsed: Duration) {
        self.engine
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        // The text encoder writes only UTF-8 (names, labels and numbers).
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

/// Middleware counting every request, including those refused by the layers beneath it.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let start = Instant::now();
    // A guard, so a request whose client hangs up (and whose future is dropped) leaves.
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics
        .requests
        .with_label_values(&[endpoint.as_str(), method, status.as_str()])
        .inc();
    metrics
        .duration
        .with_label_values(&[endpoint.as_str(), status.as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard methods by name, anything else (any client can invent
/// methods, before authentication) as `other`, so the series stay bounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
