//! The controller with many concurrent Experiments against the real apiserver: every iteration
//! must begin within its interval of when it was due, however many experiments share the
//! controller.
//!
//! Each Experiment is an undecided canary on an HTTPRoute of its own, assessed by the real
//! analytics binary (a process of its own, so this process's memory is the controller's and
//! the test client's), with scripted metrics that take as long to answer as a Prometheus over
//! the network does (25 ms typical, 12.5-50 ms; see `ScriptedMetrics::set_latency`). The
//! controller runs on a Tokio runtime of its own whose threads are named, so that its CPU time
//! is read from `/proc/self/task` apart from the test's. Lateness and iteration time come from
//! the controller's own `/metrics` (`iter8_controller_iteration_lateness_seconds`,
//! `..._iteration_duration_seconds`), apiserver requests from the apiserver's `/metrics`.
//!
//! `cargo test -p iter8-integration-tests --test scale` runs the small version (50
//! experiments); the large one (1,000 experiments: p99 lateness within 1 s, controller memory
//! within 64 MiB) is ignored by default and tuned by environment:
//!
//! ```sh
//! cargo build --release -p iter8-analytics   # the analytics binary beside the test's
//! ITER8_SCALE_EXPERIMENTS=1000 ITER8_SCALE_INTERVAL_SECONDS=30 ITER8_SCALE_ITERATIONS=4 \
//!   cargo test --release -p iter8-integration-tests --test scale -- --ignored --nocapture
//! ```

mod common;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use common::*;
use futures::{StreamExt, TryStreamExt};
use iter8_controller::analytics::AnalyticsClient;
use iter8_crd::Experiment;
use iter8_integration_tests::chart::wait_http_ok;
use iter8_integration_tests::process::{Process, workspace_binary};
use iter8_integration_tests::prometheus::free_port;
use iter8_integration_tests::{ControlPlane, TestEnv};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

/// The names of the controller runtime's threads (at most 15 bytes, as Linux keeps them).
const CONTROLLER_THREADS: &str = "iter8-ctl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_experiments_each_begin_every_iteration_well_within_its_interval() -> Result<()> {
    let load = Load {
        experiments: 50,
        interval: Duration::from_secs(5),
        iterations: 4,
        query_latency: QUERY_LATENCY,
    };
    let measured = measure(&load).await?;
    println!("{}", measured.report(&load));
    measured.assert_on_time(&load, load.interval / 2)?;
    measured.assert_p99_within(Duration::from_secs(1), &load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long; run by hand for docs/performance.md (see the module doc)"]
async fn a_thousand_experiments_begin_on_time_at_p99_within_64_mib() -> Result<()> {
    let load = Load {
        experiments: env_or("ITER8_SCALE_EXPERIMENTS", 1000),
        interval: Duration::from_secs(env_or("ITER8_SCALE_INTERVAL_SECONDS", 30)),
        iterations: env_or("ITER8_SCALE_ITERATIONS", 4),
        query_latency: QUERY_LATENCY,
    };
    let measured = measure(&load).await?;
    println!("{}", measured.report(&load));
    measured.assert_complete(&load)?;
    measured.assert_p99_within(Duration::from_secs(1), &load)?;
    // The whole process, not only its growth: the controller, its runtime and the thin test
    // client (the analytics service runs apart).
    let peak = measured.rss_mib.2;
    if peak > 64.0 {
        bail!(
            "the process holding the controller peaked at {peak:.0} MiB of RSS (bound 64 MiB)\n{}",
            measured.report(&load)
        );
    }
    Ok(())
}

/// What one metric query takes, typically: a Prometheus on the cluster network answering a
/// `sum(increase(...))` over a few series.
const QUERY_LATENCY: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------------------------
// The run

/// How many experiments, how often they iterate, and for how many iterations.
struct Load {
    experiments: usize,
    interval: Duration,
    iterations: u32,
    query_latency: Duration,
}

/// What one run measured.
struct Measured {
    wall: Duration,
    completed_iterations: u32,
    lateness: Histogram,
    duration: Histogram,
    controller_text: String,
    apiserver_requests: BTreeMap<String, f64>,
    /// Seconds the apiserver spent on requests (watches excepted), and how many.
    apiserver_seconds: [f64; 2],
    analytics_answers: BTreeMap<String, f64>,
    controller_cpu: f64,
    process_cpu: f64,
    rss_mib: (f64, f64, f64),
    /// The mean size of one Experiment as JSON at the end, and of its managedFields, bytes.
    objects: (f64, f64),
    load_average: (String, String),
}

/// Starts the analytics binary and a controller, creates the experiments, waits until every
/// one has run all its iterations, and collects the numbers.
async fn measure(load: &Load) -> Result<Measured> {
    let load_before = load_average();
    let env = TestEnv::new("scale").await?;
    let (client, ns) = (env.client.clone(), env.namespace.name().to_string());
    install_crds(&client).await?;
    create_metrics(&client, &ns).await?;
    let metrics = ScriptedMetrics::default();
    metrics.set("v1", 400.0, 3.0, 0.0);
    metrics.set("v2", 400.0, 3.0, 0.0);
    metrics.set_latency(load.query_latency);
    // Fifty experiments share the backend: growth per query would mix their counts.
    metrics.grow_per_second();
    // The real analytics binary in a process of its own, so that the memory measured here
    // is the controller's (and the thin test client's), not the engine's draws.
    let port = free_port()?;
    let mut command = Command::new(workspace_binary("iter8-analytics")?);
    command.arg(format!("--listen=127.0.0.1:{port}"));
    let logs = std::env::temp_dir().join(format!("iter8-scale-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let analytics_process = Process::spawn("analytics", command, &logs)?;
    let analytics = SocketAddr::from(([127, 0, 0, 1], port));
    wait_http_ok(
        &format!("http://{analytics}/readyz"),
        Duration::from_secs(30),
        &|| analytics_process.log(),
    )
    .await?;

    let apiserver_before = apiserver_requests(&client).await?;
    let (rss_before, _) = rss_mib()?;
    let cpu_before = (cpu_seconds(Some(CONTROLLER_THREADS))?, cpu_seconds(None)?);
    let started = Instant::now();
    let controller =
        DedicatedController::start(&ns, &format!("http://{analytics}"), metrics).await?;

    let api: Api<Experiment> = Api::namespaced(client.clone(), &ns);
    futures::stream::iter(0..load.experiments)
        .map(|i| create_experiment(&client, &api, &ns, i, load))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let deadline = load.interval * (load.iterations + 2) + Duration::from_secs(60);
    // What the last poll saw, so that a timeout says how far the experiments got.
    let mut progress = String::new();
    // The controller's memory when it has done every iteration, read before this test lists
    // a thousand Experiments of its own (36 MiB of this process at 1,000 experiments, which
    // are the test client's, not the controller's).
    let mut rss_when_done = None;
    let expected = load.experiments as f64 * f64::from(load.iterations);
    let waited = wait_for("every experiment to finish", deadline, async || {
        // The controller's own count first: listing a thousand Experiments every poll would
        // weigh on the apiserver and on this process's memory, which is measured.
        let scraped = controller.scrape().await?;
        let iterated = Histogram::parse(&scraped, "iter8_controller_iteration_duration_seconds")
            .map_or(0.0, |h| h.count);
        if iterated < expected {
            progress = format!(
                "after {:.0} s: {iterated} of {expected} iterations done",
                started.elapsed().as_secs_f64()
            );
            return Ok(None);
        }
        if rss_when_done.is_none() {
            rss_when_done = Some(rss_mib()?);
        }
        let list = api.list(&ListParams::default()).await?;
        let done: Vec<u32> = list
            .items
            .iter()
            .map(|e| e.status.as_ref().map_or(0, |s| s.completed_iterations))
            .collect();
        let finished = done.iter().filter(|&&n| n >= load.iterations).count();
        let behind: Vec<String> = list
            .items
            .iter()
            .zip(&done)
            .filter(|(_, n)| **n < load.iterations)
            .take(5)
            .map(|(e, n)| {
                let status = e.status.as_ref();
                format!(
                    "{} ({n} iterations, phase {:?}, conditions {:?})",
                    e.metadata.name.as_deref().unwrap_or("?"),
                    status.map(|s| s.phase),
                    status.map(|s| &s.conditions),
                )
            })
            .collect();
        progress = format!(
            "after {:.0} s: {finished} of {} experiments finished, {} of {} iterations done; behind: {}",
            started.elapsed().as_secs_f64(),
            load.experiments,
            done.iter().sum::<u32>(),
            load.experiments as u32 * load.iterations,
            behind.join("; "),
        );
        Ok((finished == load.experiments).then(|| done.iter().sum()))
    })
    .await;
    let completed_iterations = match waited {
        Ok(n) => n,
        Err(e) => {
            let scraped = controller.scrape().await.unwrap_or_default();
            let histogram = |name| {
                Histogram::parse(&scraped, name).map_or_else(
                    |e| format!("{name}: {e}"),
                    |h| {
                        format!(
                            "{name}: {} observed, p50 {}, p99 {}, max {}",
                            h.count,
                            h.quantile(0.5),
                            h.quantile(0.99),
                            h.quantile(1.0)
                        )
                    },
                )
            };
            bail!(
                "{e}\n{progress} (load average {} before, {} now)\n{}\n{}",
                load_before,
                load_average(),
                histogram("iter8_controller_iteration_lateness_seconds"),
                histogram("iter8_controller_iteration_duration_seconds"),
            );
        }
    };
    let wall = started.elapsed();
    let (rss_after, rss_peak) = match rss_when_done {
        Some(rss) => rss,
        None => rss_mib()?,
    };
    let objects = object_sizes(&api).await?;

    let controller_text = controller.scrape().await?;
    let controller_cpu = cpu_seconds(Some(CONTROLLER_THREADS))? - cpu_before.0;
    let process_cpu = cpu_seconds(None)? - cpu_before.1;
    controller.stop()?;
    let apiserver_after = apiserver_requests(&client).await?;
    let analytics_text = reqwest::get(format!("http://{analytics}/metrics"))
        .await?
        .text()
        .await?;
    let measured = Measured {
        wall,
        completed_iterations,
        lateness: Histogram::parse(
            &controller_text,
            "iter8_controller_iteration_lateness_seconds",
        )?,
        duration: Histogram::parse(
            &controller_text,
            "iter8_controller_iteration_duration_seconds",
        )?,
        apiserver_requests: difference(&apiserver_after, &apiserver_before)
            .into_iter()
            .filter(|(kind, _)| kind.contains(' '))
            .collect(),
        apiserver_seconds: ["seconds", "timed"].map(|k| {
            apiserver_after.get(k).copied().unwrap_or(0.0)
                - apiserver_before.get(k).copied().unwrap_or(0.0)
        }),
        analytics_answers: samples(&analytics_text, "iter8_analytics_http_requests_total")
            .filter(|(labels, _)| labels.contains("endpoint=\"/v1/assessments\""))
            .map(|(labels, value)| (label(labels, "status").to_string(), value))
            .collect(),
        controller_text,
        controller_cpu,
        process_cpu,
        rss_mib: (rss_before, rss_after, rss_peak),
        objects,
        load_average: (load_before, load_average()),
    };
    env.cleanup().await?;
    Ok(measured)
}

async fn create_experiment(
    client: &Client,
    api: &Api<Experiment>,
    ns: &str,
    i: usize,
    load: &Load,
) -> Result<()> {
    let route = format!("route-{i}");
    create_http_route(client, ns, &route).await?;
    let mut exp = canary(&format!("exp-{i}"), &route, load.iterations)?;
    exp.spec.duration.interval = format!("{}ms", load.interval.as_millis());
    // The scripted data never decides, so every experiment runs all its iterations.
    exp.spec.duration.min_iterations = load.iterations;
    api.create(&PostParams::default(), &exp).await?;
    Ok(())
}

/// The mean size as JSON of the Experiments in `api`, and of their managedFields.
async fn object_sizes(api: &Api<Experiment>) -> Result<(f64, f64)> {
    let list = api.list(&ListParams::default()).await?;
    let n = list.items.len().max(1) as f64;
    let (mut whole, mut managed) = (0usize, 0usize);
    for e in &list.items {
        whole += serde_json::to_vec(e)?.len();
        managed += serde_json::to_vec(&e.metadata.managed_fields)?.len();
    }
    Ok((whole as f64 / n, managed as f64 / n))
}

impl Measured {
    fn report(&self, load: &Load) -> String {
        let lines = [
            format!(
                "{} experiments x {} iterations every {:?}: {} iterations in {:.1} s (load average {} before, {} after; {} CPUs)",
                load.experiments,
                load.iterations,
                load.interval,
                self.completed_iterations,
                self.wall.as_secs_f64(),
                self.load_average.0,
                self.load_average.1,
                std::thread::available_parallelism().map_or(0, usize::from),
            ),
            format!(
                "lateness:  {} attempts, p50 {}, p99 {}, max {}, mean {:.1} ms",
                self.lateness.count,
                self.lateness.quantile(0.5),
                self.lateness.quantile(0.99),
                self.lateness.quantile(1.0),
                self.lateness.mean() * 1e3
            ),
            format!(
                "iteration: p50 {}, p99 {}, max {}, mean {:.1} ms",
                self.duration.quantile(0.5),
                self.duration.quantile(0.99),
                self.duration.quantile(1.0),
                self.duration.mean() * 1e3
            ),
            format!(
                "reconciles: {:?}",
                samples(&self.controller_text, "iter8_controller_reconciles_total")
                    .map(|(l, v)| format!("{} {v}", label(l, "outcome")))
                    .collect::<Vec<_>>()
            ),
            format!(
                "apiserver requests: {:.0} in all, {:.0}/s, {:.1} per iteration, {:.1} ms mean apiserver time (watches excepted); by verb and resource: {:?}",
                self.requests(),
                self.requests() / self.wall.as_secs_f64(),
                self.requests() / f64::from(self.completed_iterations.max(1)),
                self.apiserver_seconds[0] / self.apiserver_seconds[1].max(1.0) * 1e3,
                self.apiserver_requests
            ),
            format!("analytics answers by status: {:?}", self.analytics_answers),
            format!(
                "CPU: controller {:.2} cores ({:.1} s), whole test process {:.2} cores",
                self.controller_cpu / self.wall.as_secs_f64(),
                self.controller_cpu,
                self.process_cpu / self.wall.as_secs_f64()
            ),
            format!(
                "RSS of the test process (controller and test client; analytics runs apart): {:.0} MiB before the controller, {:.0} MiB when it had done every iteration, {:.0} MiB peak until then",
                self.rss_mib.0, self.rss_mib.1, self.rss_mib.2
            ),
            format!(
                "an Experiment at the end: {:.1} KiB as JSON, of which {:.1} KiB managedFields",
                self.objects.0 / 1024.0,
                self.objects.1 / 1024.0
            ),
        ];
        lines.join("\n")
    }

    fn requests(&self) -> f64 {
        self.apiserver_requests.values().sum()
    }

    /// Every experiment ran every iteration, and none needed a second attempt.
    fn assert_complete(&self, load: &Load) -> Result<()> {
        let expected = load.experiments as u32 * load.iterations;
        if self.completed_iterations != expected {
            bail!(
                "{} of {expected} iterations completed",
                self.completed_iterations
            );
        }
        if self.lateness.count != f64::from(expected) {
            bail!(
                "{} attempts for {expected} iterations: some were retried\n{}",
                self.lateness.count,
                self.report(load)
            );
        }
        Ok(())
    }

    /// At least 99 % of the iterations began no later than `bound` after they were due.
    fn assert_p99_within(&self, bound: Duration, load: &Load) -> Result<()> {
        let within = self.lateness.at_most(bound.as_secs_f64())?;
        if within < 0.99 * self.lateness.count {
            bail!(
                "only {within} of {} iterations began within {bound:?} of their due time\n{}",
                self.lateness.count,
                self.report(load)
            );
        }
        Ok(())
    }

    /// Every experiment ran every iteration, none needed a second attempt, and each began
    /// no later than `bound` after it was due.
    fn assert_on_time(&self, load: &Load, bound: Duration) -> Result<()> {
        self.assert_complete(load)?;
        let within = self.lateness.at_most(bound.as_secs_f64())?;
        if within != self.lateness.count {
            bail!(
                "{} of {} iterations began more than {bound:?} late\n{}",
                self.lateness.count - within,
                self.lateness.count,
                self.report(load)
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The controller on a runtime of its own

/// A controller on its own thread and Tokio runtime, with its `/metrics` on a loopback port.
struct DedicatedController {
    metrics: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl DedicatedController {
    async fn start(namespace: &str, analytics_url: &str, metrics: ScriptedMetrics) -> Result<Self> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (namespace, analytics_url) = (namespace.to_string(), analytics_url.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("{CONTROLLER_THREADS}-main"))
            .spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(CONTROLLER_THREADS)
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    // A kube client belongs to the runtime it was made on.
                    let client = ControlPlane::shared()?.client().await?;
                    let analytics = AnalyticsClient::new(test_client_config(
                        &[&analytics_url],
                        Duration::from_secs(5),
                    )?)?;
                    let mut ctx =
                        controller_context(&client, &analytics_url, metrics, analytics, None)?;
                    // The bound on reconciles in flight, as `--max-concurrent-reconciles`.
                    Arc::get_mut(&mut ctx)
                        .context("the context is not shared yet")?
                        .settings
                        .max_concurrent_reconciles = env_or(
                        "ITER8_SCALE_CONCURRENCY",
                        iter8_controller::DEFAULT_CONCURRENCY,
                    );
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let _ = ready_tx.send(listener.local_addr()?);
                    tokio::spawn(axum::serve(listener, ctx.telemetry.router()).into_future());
                    let stopped = async move {
                        let _ = stop_rx.await;
                    };
                    iter8_controller::run(ctx, Some(&namespace), stopped).await;
                    Ok(())
                })
            })?;
        match ready_rx.await {
            Ok(metrics) => Ok(Self {
                metrics,
                stop,
                thread,
            }),
            Err(_) => Err(join(thread)
                .err()
                .unwrap_or_else(|| anyhow!("controller exited"))),
        }
    }

    async fn scrape(&self) -> Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.metrics))
            .await?
            .text()
            .await?)
    }

    fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        join(self.thread)
    }
}

fn join(thread: std::thread::JoinHandle<Result<()>>) -> Result<()> {
    thread
        .join()
        .map_err(|_| anyhow!("the controller thread panicked"))?
}

// ---------------------------------------------------------------------------------------------
// Reading numbers: Prometheus text, /proc

/// A Prometheus histogram: cumulative counts by upper bound, the count and the sum.
struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl Histogram {
    /// The histogram `name` in `text`, summed over its labels other than `le`.
    fn parse(text: &str, name: &str) -> Result<Self> {
        let mut buckets: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (labels, value) in samples(text, &format!("{name}_bucket")) {
            let le = label(labels, "le");
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().with_context(|| format!("bucket bound {le:?}"))?
            };
            buckets.entry(le.to_string()).or_insert((bound, 0.0)).1 += value;
        }
        let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Self {
            buckets,
            count: samples(text, &format!("{name}_count")).map(|s| s.1).sum(),
            sum: samples(text, &format!("{name}_sum")).map(|s| s.1).sum(),
        })
    }

    /// How many observations were at most `bound`, which must be a bucket's bound.
    fn at_most(&self, bound: f64) -> Result<f64> {
        self.buckets
            .iter()
            .find(|(le, _)| (le - bound).abs() < 1e-9)
            .map(|b| b.1)
            .ok_or_else(|| anyhow!("no bucket with bound {bound}"))
    }

    /// The bounds of the bucket holding quantile `q` (all a histogram can tell).
    fn quantile(&self, q: f64) -> String {
        let mut lower = 0.0;
        for &(le, n) in &self.buckets {
            if self.count > 0.0 && n >= q * self.count {
                return if le.is_finite() {
                    format!("{:.1}-{:.1} ms", lower * 1e3, le * 1e3)
                } else {
                    format!("> {:.0} ms", lower * 1e3)
                };
            }
            lower = le;
        }
        "n/a".into()
    }

    fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }
}

/// The samples of metric `name` in Prometheus text: (the labels between the braces, value).
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.rsplit_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The value of label `key` in a label set such as `a="x",b="y"`.
fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    let needle = format!("{key}=\"");
    labels
        .split_once(&needle)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("", |(value, _)| value)
}

/// The apiserver's request counters, by verb, resource and subresource, and two totals of
/// its request-duration histogram, watches excepted: `seconds` (the sum) and `timed` (count).
async fn apiserver_requests(client: &Client) -> Result<BTreeMap<String, f64>> {
    let request = axum::http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut by_kind = BTreeMap::new();
    for (suffix, key) in [("sum", "seconds"), ("count", "timed")] {
        let total = samples(
            &text,
            &format!("apiserver_request_duration_seconds_{suffix}"),
        )
        .filter(|(labels, _)| !matches!(label(labels, "verb"), "WATCH" | "CONNECT"))
        .map(|s| s.1)
        .sum();
        by_kind.insert(key.to_string(), total);
    }
    for (labels, value) in samples(&text, "apiserver_request_total") {
        let sub = label(labels, "subresource");
        let key = format!(
            "{} {}{}{}",
            label(labels, "verb"),
            label(labels, "resource"),
            if sub.is_empty() { "" } else { "/" },
            sub
        );
        *by_kind.entry(key).or_insert(0.0) += value;
    }
    Ok(by_kind)
}

fn difference(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`,
/// or of the whole process. Threads that already exited are not counted by name.
fn cpu_seconds(prefix: Option<&str>) -> Result<f64> {
    let ticks_per_second = 100.0; // USER_HZ, 100 on every Linux architecture we run on
    let ticks = |stat: &str| -> Result<f64> {
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let (_, rest) = stat.rsplit_once(')').context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Result<f64> {
            Ok(fields.get(n - 3).context("short stat")?.parse::<f64>()?)
        };
        Ok(field(14)? + field(15)?)
    };
    let Some(prefix) = prefix else {
        return Ok(ticks(&std::fs::read_to_string("/proc/self/stat")?)? / ticks_per_second);
    };
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // the thread exited meanwhile
        };
        if comm.trim_end().starts_with(prefix) {
            total += ticks(&stat)?;
        }
    }
    Ok(total / ticks_per_second)
}

/// This process's resident memory now and at its peak, in MiB.
fn rss_mib() -> Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = |key: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/self/status"))?;
        let number = line.split_whitespace().nth(1).context("no number")?;
        Ok(number.parse::<f64>()? / 1024.0)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
