//! The controller's own Prometheus metrics and its `/metrics`, `/healthz` and `/readyz`
//! endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use iter8_crd::Phase;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The controller's metrics.
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    /// Reconciles, by outcome (`ok`, `error`, `stale`: skipped, the cache had an old copy).
    pub reconciles: IntCounterVec,
    /// Iterations run, by decision action.
    pub iterations: IntCounterVec,
    /// Seconds one iteration took (metrics, analytics, router, status).
    pub iteration_seconds: HistogramVec,
    /// Seconds an iteration attempt began after it was due (the last iteration, or the
    /// start, plus the interval): how well the controller keeps its schedule under load.
    pub iteration_lateness: HistogramVec,
    /// Status writes that lost a race with another writer (409 Conflict).
    pub status_conflicts: IntCounter,
    /// Route writes that still met 409 Conflict after every retry (the iteration is held).
    pub route_conflicts: IntCounter,
    /// Notifications by kind and outcome: `sent`, `failed` (after its retries, or refused
    /// before any attempt) or `dropped` (the queue was full). One per receiver; the labels
    /// never carry a URL or a name, so their number stays bounded.
    pub notifications: IntCounterVec,
    leader: IntGauge,
    experiments: IntGaugeVec,
    phases: Arc<Mutex<HashMap<String, Phase>>>,
    ready: Arc<AtomicBool>,
}

impl Telemetry {
    /// Registers the metrics in a registry of their own.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("iter8_controller_reconciles_total", "Reconciles by outcome"),
            &["outcome"],
        )?;
        let iterations = IntCounterVec::new(
            Opts::new(
                "iter8_controller_iterations_total",
                "Iterations by decision",
            ),
            &["action"],
        )?;
        let iteration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "iter8_controller_iteration_duration_seconds",
                "Time to run one iteration",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["kind"],
        )?;
        let iteration_lateness = HistogramVec::new(
            HistogramOpts::new(
                "iter8_controller_iteration_lateness_seconds",
                "Time from when an iteration was due to when an attempt at it began",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["kind"],
        )?;
        let status_conflicts = IntCounter::new(
            "iter8_controller_status_conflicts_total",
            "Status writes refused with 409 Conflict",
        )?;
        let route_conflicts = IntCounter::new(
            "iter8_controller_route_conflicts_total",
            "Route writes refused with 409 Conflict after every retry",
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "iter8_controller_notifications_total",
                "Notifications by kind and outcome (sent, failed, dropped)",
            ),
            &["kind", "outcome"],
        )?;
        let leader = IntGauge::new(
            "iter8_controller_leader",
            "1 while this replica holds the Lease and reconciles, else 0",
        )?;
        let experiments = IntGaugeVec::new(
            Opts::new("iter8_controller_experiments", "Experiments by phase"),
            &["phase"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(iterations.clone()))?;
        registry.register(Box::new(iteration_seconds.clone()))?;
        registry.register(Box::new(iteration_lateness.clone()))?;
        registry.register(Box::new(status_conflicts.clone()))?;
        registry.register(Box::new(route_conflicts.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(experiments.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            iterations,
            iteration_seconds,
            iteration_lateness,
            status_conflicts,
            route_conflicts,
            notifications,
            leader,
            experiments,
            phases: Arc::default(),
            ready: Arc::default(),
        })
    }

    /// Records an experiment's phase (`None` once it is deleted) and refreshes the gauge.
    pub fn observe_phase(&self, key: &str, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(key.to_string(), p),
            None => phases.remove(key),
        };
        let mut counts: HashMap<String, i64> = HashMap::new();
        for p in phases.values() {
            *counts.entry(p.to_string()).or_default() += 1;
        }
        for phase in [
            Phase::Pending,
            Phase::Running,
            Phase::Paused,
            Phase::Completed,
            Phase::Failed,
            Phase::Aborted,
        ] {
            let name = phase.to_string();
            self.experiments
                .with_label_values(&[name.as_str()])
                .set(counts.get(&name).copied().unwrap_or(0));
        }
    }

    /// Marks the process ready (up and able to take over) or not; a standby is ready too.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Records whether this replica leads (holds the Lease and reconciles).
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The HTTP routes: `/metrics`, `/healthz`, `/readyz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }
}

async fn metrics(State(t): State<Telemetry>) -> impl IntoResponse {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&t.registry.gather(), &mut body) {
        Ok(()) => (StatusCode::OK, body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    if t.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
