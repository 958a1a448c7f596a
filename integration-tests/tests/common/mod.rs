//! Fixtures shared by the controller's integration tests: the real analytics server and an
//! in-process controller, scripted metrics, router objects and polling helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use iter8_api::Observation;
use iter8_controller::analytics::AnalyticsClient;
use iter8_controller::router::KubeRouter;
use iter8_controller::telemetry::Telemetry;
use iter8_controller::{Context, Settings, StageGate};
use iter8_crd::{Experiment, Metric, Phase};
use iter8_integration_tests::{TestEnv, crds};
use iter8_metrics::{MetricsBackend, MetricsError, Query};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Observations by version label and metric name; a test can change them while it runs.
#[derive(Clone, Default)]
pub struct ScriptedMetrics {
    data: Arc<Mutex<HashMap<String, BTreeMap<String, Observation>>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl ScriptedMetrics {
    pub fn set(&self, version: &str, requests: f64, errors: f64, conversions: f64) {
        let mut data = self.data.lock().expect("not poisoned");
        data.insert(
            version.to_string(),
            BTreeMap::from([
                ("requests".to_string(), Observation::Counter(requests)),
                ("errors".to_string(), Observation::Counter(errors)),
                ("conversions".to_string(), Observation::Counter(conversions)),
            ]),
        );
    }
}

impl ScriptedMetrics {
    /// Makes the backend answer as an unreachable Prometheus would.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

impl MetricsBackend for ScriptedMetrics {
    async fn observe(&self, query: &Query<'_>) -> Result<Observation, MetricsError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(MetricsError::Unavailable {
                metric: query.name.to_string(),
                reason: "connection refused".into(),
            });
        }
        let version = query.labels.get("version").cloned().unwrap_or_default();
        let data = self.data.lock().expect("not poisoned");
        data.get(&version)
            .and_then(|m| m.get(query.name))
            .cloned()
            .ok_or_else(|| MetricsError::NoData {
                metric: query.name.to_string(),
                reason: format!("no series for version {version}"),
            })
    }
}

/// The real analytics server, in this process, on a free loopback port.
pub async fn start_analytics() -> Result<SocketAddr> {
    start_analytics_with(iter8_analytics::config::Config::default()).await
}

/// The real analytics server with `config` (token, TLS...), on a free loopback port.
pub async fn start_analytics_with(
    mut config: iter8_analytics::config::Config,
) -> Result<SocketAddr> {
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let app = iter8_analytics::app::App::new(&config)?;
    let server = iter8_analytics::server::Server::bind(&config, app).await?;
    let addr = server.local_addr()?;
    tokio::spawn(server.run(std::future::pending()));
    Ok(addr)
}

/// A controller watching only the test's namespace, running until the handle is aborted
/// (which is as abrupt as a crash: no code of the controller runs after it).
pub async fn start_controller(
    client: &Client,
    namespace: &str,
    analytics: SocketAddr,
    metrics: ScriptedMetrics,
) -> Result<(JoinHandle<()>, Telemetry)> {
    start_controller_with(
        client,
        namespace,
        &format!("http://{analytics}"),
        metrics,
        Duration::from_secs(5),
        None,
    )
    .await
}

/// A controller with a given default analytics URL and analytics timeout.
pub async fn start_controller_with(
    client: &Client,
    namespace: &str,
    analytics_url: &str,
    metrics: ScriptedMetrics,
    analytics_timeout: Duration,
    gate: Option<Arc<StageGate>>,
) -> Result<(JoinHandle<()>, Telemetry)> {
    let analytics = AnalyticsClient::new(analytics_timeout, 1, Duration::from_millis(100), None)?;
    start_controller_using(client, namespace, analytics_url, metrics, analytics, gate).await
}

/// A controller calling the analytics service through `analytics` (token, TLS...).
pub async fn start_controller_using(
    client: &Client,
    namespace: &str,
    analytics_url: &str,
    metrics: ScriptedMetrics,
    analytics: AnalyticsClient,
    gate: Option<Arc<StageGate>>,
) -> Result<(JoinHandle<()>, Telemetry)> {
    let telemetry = Telemetry::new()?;
    let ctx = Arc::new(Context {
        client: client.clone(),
        router: KubeRouter::new(client.clone()),
        analytics,
        metrics,
        settings: Settings {
            analytics_url: analytics_url.to_string(),
            retry_after: Duration::from_millis(500),
        },
        telemetry: telemetry.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "iter8-controller".into(),
                instance: Some("integration-test".into()),
            },
        ),
        gate,
    });
    let namespace = namespace.to_string();
    let handle = tokio::spawn(async move {
        iter8_controller::run(ctx, Some(&namespace), std::future::pending()).await;
    });
    Ok((handle, telemetry))
}

pub async fn install_crds(client: &Client) -> Result<()> {
    crds::install(client, &crds::iter8_crds(), None).await?;
    crds::install(client, &crds::http_route_crd(), None).await?;
    crds::install(
        client,
        &crds::istio_crds(),
        Some(&["virtualservices.networking.istio.io"]),
    )
    .await
}

/// Metric resources for the three counters (the scripted backend ignores their queries).
pub async fn create_metrics(client: &Client, ns: &str) -> Result<()> {
    let api: Api<Metric> = Api::namespaced(client.clone(), ns);
    for name in ["requests", "errors", "conversions"] {
        let metric: Metric = serde_json::from_value(json!({
            "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
            "metadata": {"name": name},
            "spec": {"type": "counter",
                     "prometheus": {"query": format!("sum(increase({name}_total{{ {{{{labels}}}} }}[{{{{elapsed}}}}s]))")}}
        }))?;
        api.create(&PostParams::default(), &metric).await?;
    }
    Ok(())
}

pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ))
}

pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "VirtualService",
    ))
}

pub async fn create_http_route(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &http_route_resource());
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "reviews-v1", "port": 9080, "weight": 100}]
        }]}
    }))?;
    api.create(&PostParams::default(), &route).await?;
    Ok(())
}

pub async fn route_weights(client: &Client, ns: &str, name: &str) -> Result<Vec<(String, u64)>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &http_route_resource());
    let route = api.get(name).await?;
    Ok(route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["weight"].as_u64().unwrap_or(1),
            )
        })
        .collect())
}

pub fn counter_metrics() -> Value {
    json!([
        {"name": "requests", "metric": {"name": "requests"}},
        {"name": "errors", "metric": {"name": "errors"}},
        {"name": "conversions", "metric": {"name": "conversions"}}
    ])
}

pub fn ratios() -> Value {
    json!([
        {"name": "error-rate", "numerator": "errors", "denominator": "requests"},
        {"name": "conversion-rate", "numerator": "conversions", "denominator": "requests"}
    ])
}

/// A canary of reviews-v2 against reviews-v1 on an HTTPRoute, with a 1 % error-rate SLO.
pub fn canary(name: &str, route: &str, max_iterations: u32) -> Result<Experiment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "kind": "canary",
            "versions": [
                {"name": "stable", "backend": {"name": "reviews-v1", "port": 9080}, "labels": {"version": "v1"}},
                {"name": "next", "backend": {"name": "reviews-v2", "port": 9080}, "labels": {"version": "v2"}}
            ],
            "router": {"httpRoute": {"name": route}},
            "metrics": counter_metrics(),
            "ratios": ratios(),
            "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}]},
            "strategy": {"maxCandidateWeightIncrement": 20},
            "duration": {"interval": "1s", "minIterations": 2, "maxIterations": max_iterations}
        }
    }))?)
}

pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn wait_for_phase(api: &Api<Experiment>, name: &str, phase: Phase) -> Result<Experiment> {
    wait_for(
        &format!("{name} to reach {phase}"),
        Duration::from_secs(60),
        async || {
            let exp = api.get(name).await?;
            let now = exp.status.as_ref().map(|s| s.phase);
            Ok((now == Some(phase)).then_some(exp))
        },
    )
    .await
}

pub async fn wait_for_iterations(
    api: &Api<Experiment>,
    name: &str,
    at_least: u32,
) -> Result<Experiment> {
    wait_for(
        &format!("{name} to complete {at_least} iterations"),
        Duration::from_secs(60),
        async || {
            let exp = api.get(name).await?;
            let done = exp.status.as_ref().map_or(0, |s| s.completed_iterations);
            Ok((done >= at_least).then_some(exp))
        },
    )
    .await
}

pub async fn merge_spec(api: &Api<Experiment>, name: &str, patch: Value) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": patch})),
    )
    .await
    .with_context(|| format!("patching {name}"))?;
    Ok(())
}

pub async fn events_for(client: &Client, ns: &str, name: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

pub struct Harness {
    pub env: TestEnv,
    pub metrics: ScriptedMetrics,
    pub analytics: SocketAddr,
    pub controller: JoinHandle<()>,
    pub telemetry: Telemetry,
}

impl Harness {
    pub async fn new(test: &str) -> Result<Self> {
        let env = TestEnv::new(test).await?;
        install_crds(&env.client).await?;
        create_metrics(&env.client, env.namespace.name()).await?;
        let metrics = ScriptedMetrics::default();
        let analytics = start_analytics().await?;
        let (controller, telemetry) = start_controller(
            &env.client,
            env.namespace.name(),
            analytics,
            metrics.clone(),
        )
        .await?;
        Ok(Self {
            env,
            metrics,
            analytics,
            controller,
            telemetry,
        })
    }

    pub fn ns(&self) -> &str {
        self.env.namespace.name()
    }

    pub fn experiments(&self) -> Api<Experiment> {
        Api::namespaced(self.env.client.clone(), self.ns())
    }

    pub async fn finish(self) -> Result<()> {
        self.controller.abort();
        self.env.cleanup().await
    }
}

/// The weights of the reviews-v1 and reviews-v2 backends of HTTPRoute `reviews`.
pub async fn reviews_split(client: &Client, ns: &str) -> Result<[u64; 2]> {
    let weights = route_weights(client, ns, "reviews").await?;
    let of = |name: &str| {
        weights
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, w)| *w)
    };
    Ok([of("reviews-v1"), of("reviews-v2")])
}

/// The reason of condition `type_`, if the experiment has it.
pub fn condition_reason(exp: &Experiment, type_: &str) -> Option<String> {
    exp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
}

impl Harness {
    /// Creates HTTPRoute `reviews` and a canary `name` on it whose data is too thin to
    /// decide either way, so it keeps iterating (up to 200 iterations).
    pub async fn undecided_canary(&self, name: &str) -> Result<Api<Experiment>> {
        create_http_route(&self.env.client, self.ns(), "reviews").await?;
        self.metrics.set("v1", 400.0, 3.0, 0.0);
        self.metrics.set("v2", 400.0, 3.0, 0.0);
        let api = self.experiments();
        api.create(&PostParams::default(), &canary(name, "reviews", 200)?)
            .await?;
        Ok(api)
    }
}
