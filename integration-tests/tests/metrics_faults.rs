//! Metrics faults through the whole controller, with the real Prometheus backend: a real
//! Prometheus (Debian's /usr/bin/prometheus) scrapes real sample apps (in this process, on
//! loopback ports) that receive traffic the way the HTTPRoute's weights say. Each test breaks
//! the metrics one way (Prometheus killed, no series for the candidate, 0/0 and NaN, a counter
//! reset) and checks what the user sees, that the split is held or moves only on real data,
//! that no iteration runs twice, and that nothing is promoted on missing data.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use iter8_api::Action;
use iter8_crd::{Experiment, Metric, Phase};
use iter8_integration_tests::TestEnv;
use iter8_integration_tests::prometheus::Prometheus;
use iter8_metrics::{Backends, Settings};
use iter8_sample_app::{App, Config};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::*;

/// A sample app on a fixed loopback port that can be restarted, which sets its counters back
/// to zero as a restarted pod would.
struct RestartableApp {
    addr: SocketAddr,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RestartableApp {
    async fn start(config: Config) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut app = Self {
            addr: listener.local_addr()?,
            config,
            stop: None,
            task: None,
        };
        app.serve(listener)?;
        Ok(app)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) -> Result<()> {
        let app = App::new(self.config.clone()).context("sample app config")?;
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(iter8_sample_app::serve(
            listener,
            app,
            async {
                let _ = stopped.await;
            },
        )));
        Ok(())
    }

    /// Stops the app (closing its connections) and starts a fresh one on the same port.
    async fn restart(&mut self) -> Result<Duration> {
        let began = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .context("the sample app did not stop")???;
        }
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener)?;
        Ok(began.elapsed())
    }
}

/// Every 200 ms, 40 requests spread over the apps by HTTPRoute `reviews`' current weights
/// (the data plane the route would drive; fractions carry over, so a 2 % share gets its
/// requests too). Requests to the app at `lost` go nowhere, as if its Service were broken.
/// Returns the task and the count of requests the apps answered.
fn follow_route(
    client: Client,
    ns: String,
    apps: [SocketAddr; 2],
    lost: Option<usize>,
) -> (JoinHandle<()>, Arc<AtomicU64>) {
    const PER_TICK: f64 = 40.0;
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let task = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut credit = [0.0f64; 2];
        let mut sent = 0u64;
        loop {
            tick.tick().await;
            let Ok(split) = reviews_split(&client, &ns).await else {
                continue;
            };
            let total: u64 = split.iter().sum();
            let mut urls = Vec::new();
            for (i, addr) in apps.iter().enumerate() {
                if total == 0 {
                    break;
                }
                #[allow(clippy::cast_precision_loss)]
                let share = PER_TICK * split[i] as f64 / total as f64;
                credit[i] += share;
                while credit[i] >= 1.0 {
                    credit[i] -= 1.0;
                    sent += 1;
                    if lost != Some(i) {
                        urls.push(format!("http://{addr}/work/{sent}"));
                    }
                }
            }
            let ok = futures::stream::iter(urls)
                .map(|url| {
                    let http = http.clone();
                    async move { http.get(url).send().await.is_ok() }
                })
                .buffer_unordered(8)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await;
            count.fetch_add(ok as u64, Ordering::Relaxed);
        }
    });
    (task, answered)
}

/// Metric resources over the sample apps' series, on the real Prometheus at `address`.
async fn create_prometheus_metrics(client: &Client, ns: &str, address: &str) -> Result<()> {
    let api: Api<Metric> = Api::namespaced(client.clone(), ns);
    let increase = |series: &str| {
        format!("sum(increase(iter8_sample_{series}{{ {{{{labels}}}} }}[{{{{elapsed}}}}s]))")
    };
    let metrics = [
        json!({"name": "requests", "spec": {"type": "counter", "prometheus": {"address": address, "query": increase("requests_total")}}}),
        json!({"name": "errors", "spec": {"type": "counter", "prometheus": {"address": address, "query": increase("errors_total")}}}),
        json!({"name": "conversions", "spec": {"type": "counter", "prometheus": {"address": address, "query": increase("conversions_total")}}}),
        // The error ratio as Prometheus computes it: NaN (0/0) for a version without requests.
        json!({"name": "error-ratio", "spec": {"type": "counter", "prometheus": {"address": address,
            "query": format!("{} / {}", increase("errors_total"), increase("requests_total"))}}}),
        json!({"name": "latency", "spec": {"type": "mean", "prometheus": {"address": address,
            "sumQuery": increase("request_duration_milliseconds_sum"),
            "countQuery": increase("request_duration_milliseconds_count")}}}),
    ];
    for m in metrics {
        let metric: Metric = serde_json::from_value(json!({
            "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
            "metadata": {"name": m["name"]}, "spec": m["spec"]
        }))?;
        api.create(&PostParams::default(), &metric).await?;
    }
    Ok(())
}

/// How a test sets up the data plane.
#[derive(Clone, Copy, Default)]
struct Setup {
    /// Prometheus does not scrape the candidate's app.
    candidate_unscraped: bool,
    /// The candidate's share of the traffic goes nowhere.
    candidate_unreachable: bool,
}

/// Two good sample apps (v1, v2), Prometheus scraping them, traffic following the route,
/// and a controller with the real metrics backends.
struct Rig {
    env: TestEnv,
    prometheus: Prometheus,
    apps: [RestartableApp; 2],
    assessed: AssessmentLog,
    controller: JoinHandle<()>,
    load: JoinHandle<()>,
    answered: Arc<AtomicU64>,
}

impl Rig {
    async fn new(test: &str, setup: Setup) -> Result<Self> {
        let env = TestEnv::new(test).await?;
        let ns = env.namespace.name().to_owned();
        install_crds(&env.client).await?;
        create_http_route(&env.client, &ns, "reviews").await?;
        let mut apps = Vec::new();
        for (version, seed) in [("v1", 1), ("v2", 2)] {
            apps.push(
                RestartableApp::start(Config {
                    version: version.into(),
                    latency_ms: 1.0,
                    latency_sigma: 0.2,
                    error_rate: 0.0,
                    conversion_rate: 0.0,
                    seed,
                    ..Config::default()
                })
                .await?,
            );
        }
        let scraped: Vec<SocketAddr> = if setup.candidate_unscraped {
            vec![apps[0].addr]
        } else {
            apps.iter().map(|a| a.addr).collect()
        };
        let prometheus = Prometheus::start(&scraped)?;
        prometheus
            .wait_scraped(
                &reqwest::Client::new(),
                scraped.len(),
                Duration::from_secs(60),
            )
            .await?;
        create_prometheus_metrics(&env.client, &ns, prometheus.url()).await?;
        let assessed = AssessmentLog::start(start_analytics().await?).await?;
        let backends = Backends::new(Settings {
            default_prometheus_address: Some(prometheus.url().to_owned()),
            default_timeout: Duration::from_secs(2),
        })?;
        let analytics_url = format!("http://{}", assessed.addr);
        let analytics = iter8_controller::analytics::AnalyticsClient::new(test_client_config(
            &[&analytics_url],
            Duration::from_secs(5),
        )?)?;
        let mut ctx = controller_context(&env.client, &analytics_url, backends, analytics, None)?;
        // The Metrics name the real Prometheus's address, which the operator allowed
        // (`--metric-backend-allowed-urls`): the allowed path, end to end.
        Arc::get_mut(&mut ctx)
            .context("a fresh context has one owner")?
            .settings
            .metric_backends = iter8_controller::analytics::Endpoints::only([prometheus.url()])?;
        let controller = {
            let ns = ns.clone();
            tokio::spawn(async move {
                iter8_controller::run(ctx, Some(&ns), std::future::pending()).await;
            })
        };
        let (load, answered) = follow_route(
            env.client.clone(),
            ns,
            [apps[0].addr, apps[1].addr],
            setup.candidate_unreachable.then_some(1),
        );
        let apps: [RestartableApp; 2] = apps.try_into().map_err(|_| anyhow::anyhow!("two apps"))?;
        Ok(Self {
            env,
            prometheus,
            apps,
            assessed,
            controller,
            load,
            answered,
        })
    }

    fn ns(&self) -> &str {
        self.env.namespace.name()
    }

    fn experiments(&self) -> Api<Experiment> {
        Api::namespaced(self.env.client.clone(), self.ns())
    }

    /// A canary of v2 against v1 (1 % error-rate SLO) on 2 s iterations.
    async fn create_canary(&self, name: &str, max_iterations: u32, failures: u32) -> Result<()> {
        let mut exp = canary(name, "reviews", max_iterations)?;
        exp.spec.duration.interval = "2s".into();
        exp.spec.failure_policy.max_consecutive_failures = failures;
        self.experiments()
            .create(&PostParams::default(), &exp)
            .await?;
        Ok(())
    }

    /// Waits until the route gives the candidate some traffic.
    async fn wait_for_candidate_traffic(&self) -> Result<()> {
        wait_for(
            "the candidate to get traffic",
            Duration::from_secs(60),
            async || Ok((reviews_split(&self.env.client, self.ns()).await?[1] > 0).then_some(())),
        )
        .await
    }

    async fn finish(mut self) -> Result<()> {
        self.load.abort();
        self.controller.abort();
        self.prometheus.stop();
        self.env.cleanup().await
    }
}

/// The counter `metric` of version `index` in every assessment request, in order (`None`
/// where the request carried no observation of it).
fn counters_sent(assessed: &AssessmentLog, index: usize, metric: &str) -> Vec<Option<f64>> {
    assessed
        .requests()
        .iter()
        .map(|r| r["versions"][index]["metrics"][metric]["counter"].as_f64())
        .collect()
}

/// Waits for `name` to complete and checks how an experiment without the candidate's data
/// ends: `inconclusive`, all traffic back on the baseline, and the candidate never given
/// more than the share its first iteration gave it.
async fn ended_inconclusive_on_the_baseline(
    rig: &Rig,
    name: &str,
    what: &str,
) -> Result<Experiment> {
    let done = wait_for_phase(&rig.experiments(), name, Phase::Completed).await?;
    let status = done.status.clone().expect("status");
    let shares: Vec<u32> = status.history.iter().map(|r| r.weights[1]).collect();
    eprintln!(
        "{what}: ended {:?} after {} iterations, candidate shares {shares:?}",
        status.decision.as_ref().map(|d| d.action),
        status.completed_iterations,
    );
    assert_eq!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Inconclusive)
    );
    assert!(
        shares.iter().all(|&w| w <= shares[0]),
        "the candidate's share grew without data: {shares:?}"
    );
    assert_eq!(reviews_split(&rig.env.client, rig.ns()).await?, [100, 0]);
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_killed_mid_experiment_holds_then_rolls_back() -> Result<()> {
    let mut rig = Rig::new("metrics-prometheus-down", Setup::default()).await?;
    let began = Instant::now();
    rig.create_canary("blackout", 30, 5).await?;
    let api = rig.experiments();
    // Once traffic has moved, so that holding it and rolling it back are both visible.
    rig.wait_for_candidate_traffic().await?;
    rig.prometheus.stop();
    let reported = wait_for(
        "MetricsAvailable=False, reason BackendUnavailable",
        Duration::from_secs(30),
        async || {
            let exp = api.get("blackout").await?;
            Ok((condition_reason(&exp, "MetricsAvailable").as_deref()
                == Some("BackendUnavailable"))
            .then_some(exp))
        },
    )
    .await?;
    let message = reported.status.as_ref().and_then(|s| s.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("metrics backend unavailable")),
        "{message:?}"
    );
    // From the report on, the route keeps the split recorded in status (no iteration, same
    // split) until the policy rolls back. (The engine may have moved the candidate's share
    // back to 0 between the kill and the report; the hold is the same.)
    let recorded = reported.status.as_ref().expect("status");
    let recorded_split = recorded_split(&reported);
    let (held, failed) =
        held_until_phase(&rig.env.client, rig.ns(), "blackout", Phase::Failed).await?;
    assert!(
        held.to_vec() == recorded_split || held == [100, 0] && recorded.consecutive_failures >= 4,
        "held {held:?}, recorded {recorded_split:?}"
    );
    let status = failed.status.clone().expect("status");
    assert_ended_by_failure_policy(&failed, &reported);
    assert_eq!(reviews_split(&rig.env.client, rig.ns()).await?, [100, 0]);
    let warned = warning_reasons(&rig.env.client, rig.ns(), "blackout").await?;
    assert!(
        warned.contains(&"BackendUnavailable".to_owned()),
        "{warned:?}"
    );
    assert!(warned.contains(&"FailurePolicy".to_owned()), "{warned:?}");
    assert_each_iteration_once(
        &rig.env.client,
        rig.ns(),
        &failed,
        &rig.assessed.iterations(),
    )
    .await?;
    eprintln!(
        "prometheus down: held {held:?} after {} iterations, rolled back after {:?}",
        status.completed_iterations,
        began.elapsed()
    );
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_without_series_is_never_promoted() -> Result<()> {
    let setup = Setup {
        candidate_unscraped: true,
        ..Setup::default()
    };
    let rig = Rig::new("metrics-no-series", setup).await?;
    rig.create_canary("unseen", 4, 1000).await?;
    let api = rig.experiments();
    let reported = wait_for(
        "MetricsAvailable=False, reason NoData",
        Duration::from_secs(30),
        async || {
            let exp = api.get("unseen").await?;
            Ok(
                (condition_reason(&exp, "MetricsAvailable").as_deref() == Some("NoData"))
                    .then_some(exp),
            )
        },
    )
    .await?;
    let message = reported
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "MetricsAvailable"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("next/requests"), "{message}");
    let done = ended_inconclusive_on_the_baseline(&rig, "unseen", "no series").await?;
    // Missing data went to the analytics service as missing, never as a zero.
    let sent = counters_sent(&rig.assessed, 1, "requests");
    assert!(
        !sent.is_empty() && sent.iter().all(Option::is_none),
        "{sent:?}"
    );
    let warned = warning_reasons(&rig.env.client, rig.ns(), "unseen").await?;
    assert!(warned.contains(&"NoData".to_owned()), "{warned:?}");
    assert_each_iteration_once(&rig.env.client, rig.ns(), &done, &rig.assessed.iterations())
        .await?;
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_and_zero_over_zero_count_as_missing_and_never_promote() -> Result<()> {
    let setup = Setup {
        candidate_unreachable: true,
        ..Setup::default()
    };
    let rig = Rig::new("metrics-nan", setup).await?;
    let mut exp = canary("silent", "reviews", 5)?;
    exp.spec.duration.interval = "2s".into();
    // The Prometheus-side ratio and a mean latency, both 0/0 for a candidate without
    // requests; the engine's error rate (errors / requests) is 0/0 too.
    let mut metrics = counter_metrics();
    if let Some(list) = metrics.as_array_mut() {
        list.push(json!({"name": "error-ratio", "metric": {"name": "error-ratio"}}));
        list.push(json!({"name": "latency", "metric": {"name": "latency"}}));
    }
    exp.spec.metrics = serde_json::from_value(metrics)?;
    rig.experiments()
        .create(&PostParams::default(), &exp)
        .await?;
    let api = rig.experiments();
    let reported = wait_for(
        "MetricsAvailable=False naming NaN",
        Duration::from_secs(60),
        async || {
            let exp = api.get("silent").await?;
            let condition = exp
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "MetricsAvailable"))
                .cloned();
            Ok(condition.filter(|c| c.reason == "NoData" && c.message.contains("NaN")))
        },
    )
    .await?;
    assert!(
        reported.message.contains("next/error-ratio"),
        "{}",
        reported.message
    );
    assert!(
        reported.message.contains("next/latency"),
        "{}",
        reported.message
    );
    let done = ended_inconclusive_on_the_baseline(&rig, "silent", "0/0 and NaN").await?;
    // NaN never reached the analytics service as a number.
    for request in rig.assessed.requests() {
        let sent = &request["versions"][1]["metrics"];
        assert!(sent.get("error-ratio").is_none(), "{sent}");
        assert!(sent.get("latency").is_none(), "{sent}");
    }
    assert_each_iteration_once(&rig.env.client, rig.ns(), &done, &rig.assessed.iterations())
        .await?;
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_reset_mid_experiment_neither_loses_data_nor_stops_a_promotion() -> Result<()> {
    let mut rig = Rig::new("metrics-counter-reset", Setup::default()).await?;
    let began = Instant::now();
    rig.create_canary("reborn", 30, 3).await?;
    let api = rig.experiments();
    // Once the candidate has traffic, its process restarts: its counters start again at 0.
    rig.wait_for_candidate_traffic().await?;
    wait_for(
        "the candidate's requests to be counted",
        Duration::from_secs(30),
        async || {
            let sent = counters_sent(&rig.assessed, 1, "requests");
            Ok(sent.last().copied().flatten().filter(|&c| c >= 20.0))
        },
    )
    .await?;
    let before = counters_sent(&rig.assessed, 1, "requests").len();
    let down_for = rig.apps[1].restart().await?;
    let done = wait_for("reborn to complete", Duration::from_secs(120), async || {
        let exp = api.get("reborn").await?;
        Ok(exp
            .status
            .as_ref()
            .is_some_and(|s| s.phase.is_terminal())
            .then_some(exp))
    })
    .await?;
    let status = done.status.clone().expect("status");
    let sent: Vec<f64> = counters_sent(&rig.assessed, 1, "requests")
        .into_iter()
        .flatten()
        .collect();
    eprintln!(
        "counter reset: restarted in {down_for:?} after {before} assessments; ended {:?} after {} iterations in {:?}; candidate requests sent {sent:?}; {} requests answered",
        status.decision.as_ref().map(|d| d.action),
        status.completed_iterations,
        began.elapsed(),
        rig.answered.load(Ordering::Relaxed),
    );
    assert!(
        counters_sent(&rig.assessed, 1, "requests").len() > before,
        "assessed after the reset"
    );
    // Prometheus saw the reset ...
    let resets = rig
        .prometheus
        .query(
            &reqwest::Client::new(),
            "sum(resets(iter8_sample_requests_total{version=\"v2\"}[10m]))",
        )
        .await?;
    assert_eq!(resets["data"]["result"][0]["value"][1], "1", "{resets}");
    // ... and increase() bridged it: the cumulative count never fell back.
    for pair in sent.windows(2) {
        assert!(
            pair[1] >= 0.9 * pair[0],
            "the candidate's count fell: {sent:?}"
        );
    }
    assert_eq!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Promote)
    );
    assert_eq!(reviews_split(&rig.env.client, rig.ns()).await?, [0, 100]);
    // Nothing for the user to see: no iteration was held or short of data.
    let warned = warning_reasons(&rig.env.client, rig.ns(), "reborn").await?;
    assert!(warned.is_empty(), "{warned:?}");
    assert_each_iteration_once(&rig.env.client, rig.ns(), &done, &rig.assessed.iterations())
        .await?;
    rig.finish().await
}
