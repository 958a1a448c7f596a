//! Fixtures shared by the controller's integration tests: the real analytics server and an
//! in-process controller, scripted metrics, router objects and polling helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::future::BoxFuture;
use iter8_api::Observation;
use iter8_api::{AssessmentRequest, AssessmentResponse};
use iter8_controller::analytics::AnalyticsError;
use iter8_controller::analytics::{AnalyticsClient, ClientConfig, Endpoints};
use iter8_controller::assessor::Assessor;
use iter8_controller::caches::Caches;
use iter8_controller::notifier::{Notifier, NotifierConfig};
use iter8_controller::router::{KubeRouter, RouteSplit, RouteTarget, RouterError, Routes};
use iter8_controller::telemetry::Telemetry;
use iter8_controller::{Context, Settings};
use iter8_crd::VersionSpec;
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
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Observations by version label and metric name; a test can change them while it runs.
/// Like a real metrics backend's counters, they grow: `set` gives what one iteration adds,
/// and the n-th query of a metric answers n times that (the controller queries each metric
/// once per iteration), so the analytics service never sees stale data.
#[derive(Clone, Default)]
pub struct ScriptedMetrics {
    data: Arc<Mutex<HashMap<String, BTreeMap<String, Observation>>>>,
    queries: Arc<Mutex<HashMap<(String, String), u32>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    /// Typical time one query takes (none by default), and a counter for its jitter.
    latency: Arc<Mutex<Option<Duration>>>,
    answered: Arc<std::sync::atomic::AtomicU64>,
    /// Counters grow with the experiment's age rather than per query (`grow_per_second`).
    per_second: Arc<std::sync::atomic::AtomicBool>,
    /// Queries being answered now, and the most ever answered at once.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    most_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedMetrics {
    /// What each iteration adds for `version`.
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
    /// Makes every query take about `typical` (from half to twice it, spread evenly and
    /// deterministically), as a Prometheus answering over the network does.
    pub fn set_latency(&self, typical: Duration) {
        *self.latency.lock().expect("not poisoned") = Some(typical);
    }

    /// The latency of the next query: `typical` times a factor in [0.5, 2), from a
    /// SplitMix64 sequence over the queries answered so far.
    fn next_latency(&self) -> Option<Duration> {
        let typical = (*self.latency.lock().expect("not poisoned"))?;
        let n = self
            .answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        Some(typical.mul_f64(0.5 + 1.5 * unit))
    }

    /// What each iteration adds to metric `latency` of `version`: `count` requests with a mean
    /// latency of `mean_ms` (a mean metric, as a Prometheus `_sum`/`_count` pair gives it).
    pub fn set_mean_latency(&self, version: &str, count: f64, mean_ms: f64) {
        let mut data = self.data.lock().expect("not poisoned");
        data.entry(version.to_string()).or_default().insert(
            "latency".to_string(),
            Observation::Mean(iter8_api::MeanObservation {
                sum: count * mean_ms,
                count,
                sum_of_squares: None,
            }),
        );
    }

    /// Makes counters grow with the experiment's age: what `set` gives is added per second
    /// since the experiment started, not per query. The per-query count is shared by every
    /// experiment on this backend, so with many experiments iterating at once one collection
    /// would read `requests` and `errors` at different multiples (an error rate the script
    /// never set, and a rollback); every query of one collection has the same `start` and
    /// `now`, so here they agree.
    pub fn grow_per_second(&self) {
        self.per_second
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the backend answer as an unreachable Prometheus would.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// The most queries this backend was answering at one time.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Counts a query in flight while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a ScriptedMetrics) -> Self {
        let now = metrics
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        metrics
            .most_in_flight
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        Self(&metrics.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl MetricsBackend for ScriptedMetrics {
    async fn observe(&self, query: &Query<'_>) -> Result<Observation, MetricsError> {
        let _in_flight = InFlight::enter(self);
        if let Some(latency) = self.next_latency() {
            tokio::time::sleep(latency).await;
        }
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(MetricsError::Unavailable {
                metric: query.name.to_string(),
                reason: "connection refused".into(),
            });
        }
        let version = query.labels.get("version").cloned().unwrap_or_default();
        let data = self.data.lock().expect("not poisoned");
        let per_iteration = data.get(&version).and_then(|m| m.get(query.name));
        let per_second = self.per_second.load(std::sync::atomic::Ordering::SeqCst);
        let times = per_iteration.map(|_| {
            if per_second {
                let age = query.now.duration_since(query.start).unwrap_or_default();
                return 1.0 + age.as_secs() as f64;
            }
            let mut queries = self.queries.lock().expect("not poisoned");
            let n = queries
                .entry((version.clone(), query.name.to_string()))
                .or_default();
            *n += 1;
            f64::from(*n)
        });
        per_iteration
            .zip(times)
            .map(|(o, times)| match o {
                Observation::Counter(c) => Observation::Counter(c * times),
                Observation::Mean(m) => Observation::Mean(iter8_api::MeanObservation {
                    sum: m.sum * times,
                    count: m.count * times,
                    sum_of_squares: m.sum_of_squares.map(|s| s * times),
                }),
                other => other.clone(),
            })
            .ok_or_else(|| MetricsError::NoData {
                metric: query.name.to_string(),
                reason: format!("no series for version {version}"),
            })
    }
}

/// What a test of several controller replicas starts from: a namespace with the CRDs, the
/// Metrics and HTTPRoute `reviews`; scripted metrics for `v1` and `v2` that never decide; and
/// the real analytics server behind a recording proxy.
pub async fn replicas_fixture(test: &str) -> Result<(TestEnv, ScriptedMetrics, AssessmentLog)> {
    let env = TestEnv::new(test).await?;
    install_crds(&env.client).await?;
    let ns = env.namespace.name().to_string();
    create_metrics(&env.client, &ns).await?;
    create_http_route(&env.client, &ns, "reviews").await?;
    let metrics = ScriptedMetrics::default();
    metrics.set("v1", 400.0, 3.0, 0.0);
    metrics.set("v2", 400.0, 3.0, 0.0);
    let assessed = AssessmentLog::start(start_analytics().await?).await?;
    Ok((env, metrics, assessed))
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

/// The real analytics server behind a recording proxy: every assessment request, in order,
/// so tests can prove that no iteration was assessed twice and see what data it was given.
#[derive(Clone)]
pub struct AssessmentLog {
    /// The proxy's address: give it to the controller as the analytics service.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<Vec<Value>>>,
}

impl AssessmentLog {
    /// A proxy on a free loopback port forwarding to the analytics server at `real`.
    pub async fn start(real: SocketAddr) -> Result<Self> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (log, answered) = (requests.clone(), answers.clone());
        let http = reqwest::Client::new();
        let forward = move |body: axum::body::Bytes| {
            let (http, log, answered) = (http.clone(), log.clone(), answered.clone());
            async move {
                if let Ok(request) = serde_json::from_slice::<Value>(&body) {
                    log.lock().expect("not poisoned").push(request);
                }
                let answer = http
                    .post(format!("http://{real}/v1/assessments"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(a) => {
                        let status = axum::http::StatusCode::from_u16(a.status().as_u16())
                            .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                        let body = a.bytes().await.unwrap_or_default();
                        if let Ok(answer) = serde_json::from_slice::<Value>(&body) {
                            answered.lock().expect("not poisoned").push(answer);
                        }
                        (status, [("content-type", "application/json")], body)
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_GATEWAY,
                        [("content-type", "application/json")],
                        axum::body::Bytes::new(),
                    ),
                }
            }
        };
        let app = axum::Router::new().route("/v1/assessments", axum::routing::post(forward));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            addr,
            requests,
            answers,
        })
    }

    /// The analytics service's answers so far (successful or not), in the order given.
    pub fn answers(&self) -> Vec<Value> {
        self.answers.lock().expect("not poisoned").clone()
    }

    /// The iterations assessed so far, in the order asked.
    pub fn iterations(&self) -> Vec<u32> {
        self.requests()
            .iter()
            .filter_map(|r| r["iteration"].as_u64())
            .filter_map(|i| u32::try_from(i).ok())
            .collect()
    }

    /// The assessment requests so far, in the order asked.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

/// Proof that no iteration ran twice and none was skipped: the history lists consecutive
/// iterations ending at `completedIterations`, one `Iteration` Event per iteration, and the
/// analytics service assessed each iteration once, in order (`assessed` may include the
/// assessment of one iteration that is still in progress).
pub async fn assert_each_iteration_once(
    client: &Client,
    ns: &str,
    exp: &Experiment,
    assessed: &[u32],
) -> Result<()> {
    assert_recorded_and_assessed_once(exp, assessed)?;
    assert_one_iteration_event_each(client, ns, exp).await
}

/// The history lists consecutive iterations ending at `completedIterations`, and `assessed`
/// is `1..=completedIterations` (plus possibly the next one, in progress).
pub fn assert_recorded_and_assessed_once(exp: &Experiment, assessed: &[u32]) -> Result<()> {
    let name = exp.metadata.name.as_deref().unwrap_or_default();
    let status = exp.status.as_ref().context("status")?;
    let completed = status.completed_iterations;
    let history: Vec<u32> = status.history.iter().map(|r| r.iteration).collect();
    let first = completed + 1 - u32::try_from(history.len())?;
    assert_eq!(
        history,
        (first..=completed).collect::<Vec<_>>(),
        "{name}: the history lists each iteration once"
    );
    let mut expected: Vec<u32> = (1..=completed).collect();
    if assessed.len() > expected.len() {
        expected.push(completed + 1);
    }
    assert_eq!(
        assessed, expected,
        "{name}: the analytics service assessed each iteration once"
    );
    Ok(())
}

/// One `Iteration` Event per completed iteration (an event can be lost when a controller
/// dies between its status write and the event, so crash tests do not use this).
pub async fn assert_one_iteration_event_each(
    client: &Client,
    ns: &str,
    exp: &Experiment,
) -> Result<()> {
    let name = exp.metadata.name.as_deref().unwrap_or_default();
    let completed = exp.status.as_ref().context("status")?.completed_iterations;
    // Events are published after the status write they report: wait for the last ones. The
    // recorder folds repeats of a reason into one Event with a series count.
    let mut announced = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while announced != completed && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        announced = event_count(client, ns, name, "Iteration").await?;
    }
    assert_eq!(
        announced, completed,
        "{name}: one Iteration event per iteration"
    );
    Ok(())
}

/// The reasons of the Warning Events `name` got.
pub async fn warning_reasons(client: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    Ok(events_for(client, ns, name)
        .await?
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect())
}

/// Waits until `name` got a Warning Event with `reason` (Events are published after the
/// status write they report), and returns every Warning reason it got.
pub async fn wait_for_warning(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Result<Vec<String>> {
    wait_for(
        &format!("a {reason} Warning Event for {name}"),
        Duration::from_secs(10),
        async || {
            let warned = warning_reasons(client, ns, name).await?;
            Ok(warned.iter().any(|w| w == reason).then_some(warned))
        },
    )
    .await
}

/// The failure policy ended the experiment: nothing promoted, `Completed=True` with reason
/// `FailurePolicy`, and no iteration completed since `reported` (the failure's report).
pub fn assert_ended_by_failure_policy(failed: &Experiment, reported: &Experiment) {
    let name = failed.metadata.name.as_deref().unwrap_or_default();
    let status = failed.status.as_ref().expect("status");
    assert_eq!(
        Some(status.completed_iterations),
        reported.status.as_ref().map(|s| s.completed_iterations),
        "{name}: no iteration completes while failing"
    );
    assert_ne!(
        status.decision.as_ref().map(|d| d.action),
        Some(iter8_api::Action::Promote),
        "{name}"
    );
    assert_eq!(
        condition_reason(failed, "Completed").as_deref(),
        Some("FailurePolicy"),
        "{name}"
    );
}

/// How many times `name` got an Event with `reason`, counting each series' repeats.
pub async fn event_count(client: &Client, ns: &str, name: &str, reason: &str) -> Result<u32> {
    Ok(events_for(client, ns, name)
        .await?
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            e.series
                .as_ref()
                .map_or(1, |s| u32::try_from(s.count).unwrap_or(0))
        })
        .sum())
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

/// A controller with a given default analytics URL, analytics timeout and metrics backend.
pub async fn start_controller_with<M: MetricsBackend + 'static>(
    client: &Client,
    namespace: &str,
    analytics_url: &str,
    metrics: M,
    analytics_timeout: Duration,
    gate: Option<Arc<StageGate>>,
) -> Result<(JoinHandle<()>, Telemetry)> {
    let analytics = AnalyticsClient::new(test_client_config(&[analytics_url], analytics_timeout)?)?;
    start_controller_using(client, namespace, analytics_url, metrics, analytics, gate).await
}

/// The analytics client settings of the tests: calls only `endpoints`, each attempt within
/// `timeout`, one retry after 100 ms, no token.
pub fn test_client_config(endpoints: &[&str], timeout: Duration) -> Result<ClientConfig> {
    let mut config = ClientConfig::new(Endpoints::only(endpoints.iter().copied())?);
    config.timeout = timeout;
    config.retries = 1;
    config.backoff = Duration::from_millis(100);
    Ok(config)
}

/// A controller calling the analytics service through `analytics` (token, TLS...).
pub async fn start_controller_using<M: MetricsBackend + 'static>(
    client: &Client,
    namespace: &str,
    analytics_url: &str,
    metrics: M,
    analytics: AnalyticsClient,
    gate: Option<Arc<StageGate>>,
) -> Result<(JoinHandle<()>, Telemetry)> {
    let ctx = controller_context(client, analytics_url, metrics, analytics, gate)?;
    let telemetry = ctx.telemetry.clone();
    let namespace = namespace.to_string();
    let handle = tokio::spawn(async move {
        iter8_controller::run(ctx, Some(&namespace), std::future::pending()).await;
    });
    Ok((handle, telemetry))
}

/// What an in-process controller runs with: test settings (a 500 ms retry delay) and fresh
/// telemetry; with a `gate`, its router and analytics hold at the gate's stage.
pub fn controller_context<M: MetricsBackend>(
    client: &Client,
    analytics_url: &str,
    metrics: M,
    analytics: AnalyticsClient,
    gate: Option<Arc<StageGate>>,
) -> Result<Arc<Context<M>>> {
    controller_context_notifying(
        client,
        analytics_url,
        metrics,
        analytics,
        gate,
        NotifierConfig::default(),
    )
}

/// [`controller_context`] with the notifier's settings (default receivers, allow-list).
pub fn controller_context_notifying<M: MetricsBackend>(
    client: &Client,
    analytics_url: &str,
    metrics: M,
    analytics: AnalyticsClient,
    gate: Option<Arc<StageGate>>,
    notifications: NotifierConfig,
) -> Result<Arc<Context<M>>> {
    let telemetry = Telemetry::new()?;
    let caches = Caches::default();
    let router = KubeRouter::with_caches(client.clone(), caches.clone());
    let (router, analytics): (Arc<dyn Routes>, Arc<dyn Assessor>) = match gate {
        Some(gate) => (
            Arc::new(Gated {
                inner: router,
                gate: gate.clone(),
            }),
            Arc::new(Gated {
                inner: analytics,
                gate,
            }),
        ),
        None => (Arc::new(router), Arc::new(analytics)),
    };
    Ok(Arc::new(Context {
        client: client.clone(),
        router,
        analytics,
        metrics,
        settings: Settings {
            analytics_url: analytics_url.to_string(),
            retry_after: Duration::from_millis(500),
            shared_metric_namespaces: Vec::new(),
            gate_webhooks: Default::default(),
            max_concurrent_reconciles: iter8_controller::DEFAULT_CONCURRENCY,
            // Only Metrics that name no address (the backends' default) may be queried.
            metric_backends: Endpoints::default(),
        },
        telemetry: telemetry.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "iter8-controller".into(),
                instance: Some("integration-test".into()),
            },
        ),
        superseded: Default::default(),
        notifier: Notifier::new(client.clone(), telemetry, notifications)?,
        caches,
    }))
}

// ---------------------------------------------------------------------------------------------
// Crashing at a stage of an iteration

/// The points of an iteration a [`StageGate`] can hold it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Metrics collected; nothing written yet (held before the analytics call).
    MetricsCollected,
    /// The analytics answered; nothing written yet.
    AnalyticsAnswered,
    /// The decision is recorded as pending; the router is not changed yet (held before the
    /// route write).
    DecisionRecorded,
    /// The router carries the new split; the iteration is not recorded as completed yet.
    TrafficApplied,
}

/// Every reconcile that reaches `stage` (from iteration `from_iteration` on) stops there for
/// good, after notifying `reached`. Aborting the controller then is a crash at exactly that
/// point. The controller's router and analytics are wrapped ([`Gated`]): the seams the
/// production code has anyway, so no test hook lives in it.
#[derive(Debug)]
pub struct StageGate {
    stage: Stage,
    from_iteration: u32,
    /// Notified when a reconcile is held.
    pub reached: tokio::sync::Notify,
    /// The iteration last sent for assessment: the one the next route write belongs to.
    assessing: AtomicU32,
}

impl StageGate {
    pub fn new(stage: Stage, from_iteration: u32) -> Self {
        Self {
            stage,
            from_iteration,
            reached: tokio::sync::Notify::new(),
            assessing: AtomicU32::new(0),
        }
    }

    async fn pass(&self, stage: Stage) {
        if self.stage == stage && self.assessing.load(Ordering::SeqCst) >= self.from_iteration {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// A router or analytics client that holds at its gate's stage.
struct Gated<T> {
    inner: T,
    gate: Arc<StageGate>,
}

impl Assessor for Gated<AnalyticsClient> {
    fn assess<'a>(
        &'a self,
        url: &'a str,
        request: &'a AssessmentRequest,
    ) -> BoxFuture<'a, Result<AssessmentResponse, AnalyticsError>> {
        Box::pin(async move {
            self.gate
                .assessing
                .store(request.iteration, Ordering::SeqCst);
            self.gate.pass(Stage::MetricsCollected).await;
            let answer = self.inner.assess(url, request).await;
            self.gate.pass(Stage::AnalyticsAnswered).await;
            answer
        })
    }
}

impl Routes for Gated<KubeRouter> {
    fn current<'a>(
        &'a self,
        target: &'a RouteTarget,
        namespace: &'a str,
        versions: &'a [VersionSpec],
    ) -> BoxFuture<'a, Result<RouteSplit, RouterError>> {
        Box::pin(self.inner.current(target, namespace, versions))
    }

    fn apply<'a>(
        &'a self,
        target: &'a RouteTarget,
        namespace: &'a str,
        versions: &'a [VersionSpec],
        weights: &'a [u32],
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(async move {
            self.gate.pass(Stage::DecisionRecorded).await;
            let applied = self.inner.apply(target, namespace, versions, weights).await;
            self.gate.pass(Stage::TrafficApplied).await;
            applied
        })
    }
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
    check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    iter8_integration_tests::wait_until(what, timeout, check).await
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

/// Waits for `name` to reach `phase` (as a failure policy ends it), checking on every poll
/// until then that HTTPRoute `reviews` keeps the split it had at the call and that no
/// iteration completes: the split is held while failing. A change of split is only accepted
/// as the policy's own, written just before the phase. Returns the held split and the
/// experiment in `phase`.
pub async fn held_until_phase(
    client: &Client,
    ns: &str,
    name: &str,
    phase: Phase,
) -> Result<([u64; 2], Experiment)> {
    let api: Api<Experiment> = Api::namespaced(client.clone(), ns);
    let held = reviews_split(client, ns).await?;
    let at = api.get(name).await?;
    let completed = at.status.as_ref().map_or(0, |s| s.completed_iterations);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let split = reviews_split(client, ns).await?;
        let exp = api.get(name).await?;
        let status = exp.status.clone().unwrap_or_default();
        if status.phase == phase {
            return Ok((held, exp));
        }
        assert_eq!(
            status.completed_iterations, completed,
            "{name}: no iteration completes while failing"
        );
        if split != held {
            // Only the policy's own change, whose status write follows at once.
            let ended = wait_for(
                &format!(
                    "{name}: {phase} right after the split changed from {held:?} to {split:?}"
                ),
                Duration::from_secs(2),
                async || {
                    let exp = api.get(name).await?;
                    Ok((exp.status.as_ref().map(|s| s.phase) == Some(phase)).then_some(exp))
                },
            )
            .await?;
            return Ok((held, ended));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} did not reach {phase} while held at {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    /// The analytics service the controller uses (the recording proxy of `assessed`).
    pub analytics: SocketAddr,
    /// Every assessment the controller asked `analytics` for.
    pub assessed: AssessmentLog,
    pub controller: JoinHandle<()>,
    pub telemetry: Telemetry,
}

impl Harness {
    pub async fn new(test: &str) -> Result<Self> {
        Self::with_analytics_timeout(test, Duration::from_secs(5)).await
    }

    /// A harness whose controller gives each analytics call `timeout`.
    pub async fn with_analytics_timeout(test: &str, timeout: Duration) -> Result<Self> {
        Self::allowing(test, timeout, &[]).await
    }

    /// A harness whose controller gives each analytics call `timeout` and lets experiments
    /// name the analytics services at `also` besides its own.
    pub async fn allowing(test: &str, timeout: Duration, also: &[SocketAddr]) -> Result<Self> {
        Self::build(test, timeout, also, Vec::new()).await
    }

    /// A harness whose controller lets gates call webhooks under `urls`
    /// (`--gate-webhook-allowed-urls`).
    pub async fn with_gate_webhooks(test: &str, urls: Vec<String>) -> Result<Self> {
        Self::build(test, Duration::from_secs(5), &[], urls).await
    }

    async fn build(
        test: &str,
        timeout: Duration,
        also: &[SocketAddr],
        gate_webhooks: Vec<String>,
    ) -> Result<Self> {
        let env = TestEnv::new(test).await?;
        install_crds(&env.client).await?;
        create_metrics(&env.client, env.namespace.name()).await?;
        let metrics = ScriptedMetrics::default();
        let assessed = AssessmentLog::start(start_analytics().await?).await?;
        let own = format!("http://{}", assessed.addr);
        let others: Vec<String> = also.iter().map(|a| format!("http://{a}")).collect();
        let endpoints: Vec<&str> = std::iter::once(own.as_str())
            .chain(others.iter().map(String::as_str))
            .collect();
        let analytics = AnalyticsClient::new(test_client_config(&endpoints, timeout)?)?;
        let mut ctx = controller_context(&env.client, &own, metrics.clone(), analytics, None)?;
        Arc::get_mut(&mut ctx)
            .context("a fresh context has one owner")?
            .settings
            .gate_webhooks = Endpoints::only(gate_webhooks.iter().map(String::as_str))?;
        let telemetry = ctx.telemetry.clone();
        let namespace = env.namespace.name().to_string();
        let controller = tokio::spawn(async move {
            iter8_controller::run(ctx, Some(&namespace), std::future::pending()).await;
        });
        Ok(Self {
            env,
            metrics,
            analytics: assessed.addr,
            assessed,
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

/// The split recorded in the experiment's status, as the route carries it.
pub fn recorded_split(exp: &Experiment) -> Vec<u64> {
    exp.status
        .as_ref()
        .map(|s| s.weights.iter().map(|w| u64::from(w.weight)).collect())
        .unwrap_or_default()
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
