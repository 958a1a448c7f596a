//! The metrics backend against a real Prometheus (Debian's /usr/bin/prometheus) scraping real
//! sample apps over HTTP: observations equal what the apps served, label values cannot inject
//! PromQL, and missing data or a stopped Prometheus never pass as observations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iter8_api::{BucketBound, Observation};
use iter8_crd::Metric;
use iter8_integration_tests::prometheus::{Prometheus, drive, prometheus_binary, start_app};
use iter8_metrics::{Backends, MetricsBackend, MetricsError, Query, Settings};
use iter8_sample_app::Config;
use serde::Deserialize;

const SCRAPE: Duration = Duration::from_secs(1);
const HOSTILE_REAL: &str = "v3\"} or vector(1) #";

/// What one app says it served, read from its own `/metrics`.
#[derive(Debug, Default)]
struct Served {
    requests: f64,
    errors: f64,
    conversions: f64,
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

fn last_number(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a sample value")
}

async fn served(http: &reqwest::Client, addr: SocketAddr) -> Served {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let mut s = Served::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let v = last_number(line);
        let name = line.split('{').next().unwrap_or_default();
        match name {
            "iter8_sample_requests_total" => s.requests = v,
            "iter8_sample_errors_total" => s.errors = v,
            "iter8_sample_conversions_total" => s.conversions = v,
            "iter8_sample_request_duration_milliseconds_sum" => s.sum = v,
            "iter8_sample_request_duration_milliseconds_count" => s.count = v,
            "iter8_sample_request_duration_milliseconds_bucket" => {
                let le = line
                    .rsplit_once("le=\"")
                    .and_then(|(_, rest)| rest.split('"').next())
                    .and_then(|le| le.parse::<f64>().ok())
                    .expect("an le label");
                s.buckets.push((le, v));
            }
            _ => {}
        }
    }
    s
}

fn library() -> BTreeMap<String, Metric> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/iter8/files/metrics/sample-app.yaml");
    let text = std::fs::read_to_string(&path).expect("sample-app metric library");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let m = Metric::deserialize(doc).expect("a Metric");
            (m.metadata.name.clone().expect("named"), m)
        })
        .collect()
}

fn labels(version: &str) -> BTreeMap<String, String> {
    [("version".to_owned(), version.to_owned())].into()
}

struct Observer<'a> {
    backends: &'a Backends,
    library: &'a BTreeMap<String, Metric>,
    start: SystemTime,
}

impl Observer<'_> {
    async fn observe(
        &self,
        metric: &str,
        version: &str,
        now: SystemTime,
    ) -> Result<Observation, MetricsError> {
        let spec = &self.library[metric].spec;
        let labels = labels(version);
        self.backends
            .observe(&Query {
                name: metric,
                spec,
                labels: &labels,
                namespace: "default",
                start: self.start,
                now,
                credentials: None,
            })
            .await
    }
}

/// The time of the newest scrape of a version's series, so `increase()` is evaluated exactly
/// at a sample: it then extrapolates nothing and its answer is exact.
async fn last_scrape(prom: &Prometheus, http: &reqwest::Client, version: &str) -> SystemTime {
    let selector = iter8_metrics::template::label_matchers(&labels(version)).expect("labels");
    let answer = prom
        .query(
            http,
            &format!("timestamp(iter8_sample_requests_total{{{selector}}})"),
        )
        .await
        .expect("query");
    let ts: f64 = answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no scrape of {version}: {answer}"));
    UNIX_EPOCH + Duration::from_secs_f64(ts)
}

fn assert_counter(obs: Result<Observation, MetricsError>, expected: f64, what: &str) {
    assert_eq!(obs, Ok(Observation::Counter(expected)), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_backend_matches_what_the_sample_apps_served() {
    prometheus_binary().expect("prometheus installed");
    let buckets_ms = vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0];
    let apps = [
        ("v1", 300, 3.0, 0.8, 0.05, 0.2, 1),
        ("v2", 200, 6.0, 1.0, 0.25, 0.1, 2),
        (HOSTILE_REAL, 60, 1.0, 0.5, 0.5, 0.0, 3),
    ];
    let mut addrs = Vec::new();
    for (version, _, latency_ms, latency_sigma, error_rate, conversion_rate, seed) in apps {
        addrs.push(
            start_app(Config {
                version: version.to_owned(),
                latency_ms,
                latency_sigma,
                error_rate,
                conversion_rate,
                seed,
                buckets_ms: buckets_ms.clone(),
            })
            .await
            .expect("sample app"),
        );
    }
    let mut prom = Prometheus::start(&addrs).expect("prometheus starts");
    let http = reqwest::Client::new();

    // Ready, and every app scraped at least twice before the experiment starts.
    prom.wait_scraped(&http, 3, Duration::from_secs(60))
        .await
        .expect("prometheus scrapes the apps");

    // The experiment starts; a few zero samples come before any load.
    let start = SystemTime::now();
    tokio::time::sleep(3 * SCRAPE).await;
    for ((_, n, ..), addr) in apps.iter().zip(&addrs) {
        drive(&http, *addr, *n).await.expect("load");
    }
    // Two scrape intervals after the load stops, Prometheus holds the final values.
    tokio::time::sleep(2 * SCRAPE + Duration::from_millis(500)).await;

    let backends = Backends::new(Settings {
        default_prometheus_address: Some(prom.url().to_owned()),
        ..Settings::default()
    })
    .expect("backends");
    let library = library();
    let observer = Observer {
        backends: &backends,
        library: &library,
        start,
    };

    for ((version, n, ..), addr) in apps.iter().zip(&addrs) {
        let truth = served(&http, *addr).await;
        assert_eq!(truth.requests, *n as f64, "{version} served every request");
        let at = last_scrape(&prom, &http, version).await;

        let requests = observer
            .observe("sample-app-request-count", version, at)
            .await;
        assert_counter(requests, truth.requests, &format!("{version} requests"));
        let errors = observer
            .observe("sample-app-error-count", version, at)
            .await;
        assert_counter(errors, truth.errors, &format!("{version} errors"));
        let conversions = observer
            .observe("sample-app-conversion-count", version, at)
            .await;
        assert_counter(
            conversions,
            truth.conversions,
            &format!("{version} conversions"),
        );

        match observer
            .observe("sample-app-mean-latency", version, at)
            .await
        {
            Ok(Observation::Mean(m)) => {
                assert_eq!(m.count, truth.count, "{version} latency count");
                assert!(
                    (m.sum - truth.sum).abs() <= 1e-9 * truth.sum,
                    "{version} latency sum {} != {}",
                    m.sum,
                    truth.sum
                );
            }
            other => panic!("{version} mean latency: {other:?}"),
        }

        match observer.observe("sample-app-latency", version, at).await {
            Ok(Observation::Histogram(h)) => {
                let got: Vec<(f64, f64)> =
                    h.buckets.iter().map(|b| (b.le.value(), b.count)).collect();
                let mut want = truth.buckets.clone();
                want.sort_by(|a, b| a.0.total_cmp(&b.0));
                assert_eq!(got, want, "{version} latency buckets");
                assert!(matches!(
                    h.buckets.last().map(|b| b.le),
                    Some(BucketBound::Infinite(_))
                ));
                let sum = h.sum.expect("histogram sum from sumQuery");
                assert!((sum - truth.sum).abs() <= 1e-9 * truth.sum);
            }
            other => panic!("{version} latency histogram: {other:?}"),
        }

        // At an arbitrary end of window, increase() extrapolates up to one scrape interval.
        match observer
            .observe("sample-app-request-count", version, SystemTime::now())
            .await
        {
            Ok(Observation::Counter(c)) => assert!(
                c >= truth.requests && c <= truth.requests * 1.3,
                "{version}: {c} requests vs {} served",
                truth.requests
            ),
            other => panic!("{version} requests now: {other:?}"),
        }
        eprintln!(
            "{version:?}: requests {} errors {} conversions {} count {} sum {:.3} buckets {:?}",
            truth.requests, truth.errors, truth.conversions, truth.count, truth.sum, truth.buckets
        );
    }

    let now = SystemTime::now();

    // The suggested injection finds nothing: it is a label value like any other.
    let injected = observer
        .observe("sample-app-request-count", "v1\"} or vector(1) #", now)
        .await;
    assert!(
        matches!(injected, Err(MetricsError::NoData { .. })),
        "{injected:?}"
    );
    // A payload that is valid PromQL when pasted unescaped, and answers 42 there...
    let payload =
        "nope\"}[1s])) or vector(42) or sum(increase(iter8_sample_requests_total{version=\"nope";
    let raw = prom
        .query(
            &http,
            &format!("sum(increase(iter8_sample_requests_total{{version=\"{payload}\"}}[60s]))"),
        )
        .await
        .expect("query");
    assert_eq!(raw["data"]["result"][0]["value"][1], "42", "{raw}");
    // ... is escaped by the backend and matches nothing.
    let escaped = observer
        .observe("sample-app-request-count", payload, now)
        .await;
    assert!(
        matches!(escaped, Err(MetricsError::NoData { .. })),
        "{escaped:?}"
    );

    // A version without series is NoData, for every type.
    for metric in [
        "sample-app-request-count",
        "sample-app-mean-latency",
        "sample-app-latency",
    ] {
        let missing = observer.observe(metric, "v9", now).await;
        assert!(
            matches!(missing, Err(MetricsError::NoData { .. })),
            "{metric}: {missing:?}"
        );
    }

    // A stopped Prometheus is Unavailable, never an observation.
    prom.stop();
    let stopped = observer
        .observe("sample-app-request-count", "v1", now)
        .await;
    assert!(
        matches!(stopped, Err(MetricsError::Unavailable { .. })),
        "{stopped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_query_answers_carry_the_evaluation_time_not_the_scrape_time() {
    // Why the backend judges no staleness (docs/reliability.md): minutes after the last scrape,
    // the answer's timestamp is still the time asked for, and the value the last one.
    prometheus_binary().expect("prometheus installed");
    let app = start_app(Config {
        version: "v1".to_owned(),
        latency_ms: 1.0,
        latency_sigma: 0.1,
        error_rate: 0.0,
        conversion_rate: 0.0,
        seed: 1,
        buckets_ms: vec![1.0, 10.0],
    })
    .await
    .expect("sample app");
    let prom = Prometheus::start(&[app]).expect("prometheus starts");
    let http = reqwest::Client::new();
    prom.wait_scraped(&http, 1, Duration::from_secs(60))
        .await
        .expect("prometheus scrapes the app");
    drive(&http, app, 20).await.expect("load");
    tokio::time::sleep(2 * SCRAPE + Duration::from_millis(500)).await;
    let scraped = last_scrape(&prom, &http, "v1").await;
    // Evaluated four minutes after the newest sample (inside Prometheus' 5-minute lookback).
    let later = scraped + Duration::from_secs(240);
    let at = later
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let answer: serde_json::Value = http
        .get(format!("{}/api/v1/query", prom.url()))
        .query(&[
            (
                "query",
                "sum(iter8_sample_requests_total{version=\"v1\"})".to_owned(),
            ),
            ("time", format!("{at:.3}")),
        ])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let sample = &answer["data"]["result"][0]["value"];
    let stamped = sample[0].as_f64().expect("a timestamp");
    assert!(
        (stamped - at).abs() < 1e-3,
        "stamped {stamped}, evaluated at {at}: {answer}"
    );
    assert_eq!(sample[1], "20", "{answer}");
}
