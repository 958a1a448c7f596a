//! A sample HTTP service for trying iter8: every request gets a latency drawn from a
//! log-normal distribution, fails with a configured probability (HTTP 500) and "converts" with
//! another (header `x-conversion: 1`). It exposes its own Prometheus metrics at `/metrics`,
//! all labelled with its `version`:
//!
//! * `iter8_sample_requests_total` - requests served, errors included;
//! * `iter8_sample_errors_total` - requests answered with 500;
//! * `iter8_sample_conversions_total` - successful requests that converted;
//! * `iter8_sample_request_duration_milliseconds` - a classic histogram of the latency the app
//!   added to each request (`_bucket`, `_sum`, `_count`).
//!
//! Draws come from a seeded PCG generator, so a seed gives the same sequence of outcomes on
//! every platform. Every series exists from start-up with value 0.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, Opts, Registry, TextEncoder};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_pcg::Pcg64Mcg;

/// The default latency histogram bounds, in milliseconds.
pub const DEFAULT_BUCKETS_MS: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// How the app behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The value of the `version` label on every metric.
    pub version: String,
    /// Median added latency in milliseconds (0 for none).
    pub latency_ms: f64,
    /// Log-normal shape: the standard deviation of ln(latency); 0 makes the latency fixed.
    pub latency_sigma: f64,
    /// Probability that a request fails with 500.
    pub error_rate: f64,
    /// Probability that a successful request converts.
    pub conversion_rate: f64,
    /// Seed of the random generator.
    pub seed: u64,
    /// Upper bounds of the latency histogram's buckets, in milliseconds, increasing.
    pub buckets_ms: Vec<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: "v1".into(),
            latency_ms: 20.0,
            latency_sigma: 0.5,
            error_rate: 0.0,
            conversion_rate: 0.0,
            seed: 0,
            buckets_ms: DEFAULT_BUCKETS_MS.to_vec(),
        }
    }
}

/// A configuration the app cannot run with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A probability outside [0, 1].
    #[error("{name} must be between 0 and 1, got {value}")]
    Probability {
        /// The flag.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A negative or non-finite latency parameter.
    #[error("{name} must be finite and non-negative, got {value}")]
    Latency {
        /// The flag.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// Bucket bounds that are empty, not finite or not increasing.
    #[error("bucket bounds must be finite and strictly increasing: {0:?}")]
    Buckets(Vec<f64>),
    /// The metrics registry refused a metric.
    #[error("cannot register metrics: {0}")]
    Metrics(String),
}

impl Config {
    /// Checks that every parameter is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("error rate", self.error_rate),
            ("conversion rate", self.conversion_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Probability { name, value });
            }
        }
        for (name, value) in [
            ("latency (ms)", self.latency_ms),
            ("latency sigma", self.latency_sigma),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(ConfigError::Latency { name, value });
            }
        }
        let b = &self.buckets_ms;
        if b.is_empty() || b.iter().any(|v| !v.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError::Buckets(b.clone()));
        }
        Ok(())
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Latency added, in milliseconds.
    pub latency_ms: f64,
    /// Whether the request fails with 500.
    pub error: bool,
    /// Whether the request converts (never for a failed one).
    pub conversion: bool,
}

/// The app's state: configuration, random generator and metrics.
pub struct App {
    config: Config,
    rng: Mutex<Pcg64Mcg>,
    latency: Option<LogNormal<f64>>,
    registry: Registry,
    requests: IntCounter,
    errors: IntCounter,
    conversions: IntCounter,
    duration: Histogram,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("config", &self.config).finish()
    }
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    version: &str,
) -> Result<IntCounter, ConfigError> {
    let c = IntCounter::with_opts(Opts::new(name, help).const_label("version", version))
        .map_err(|e| ConfigError::Metrics(e.to_string()))?;
    registry
        .register(Box::new(c.clone()))
        .map_err(|e| ConfigError::Metrics(e.to_string()))?;
    Ok(c)
}

impl App {
    /// An app with this configuration.
    pub fn new(config: Config) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let latency = if config.latency_ms > 0.0 && config.latency_sigma > 0.0 {
            Some(
                LogNormal::new(config.latency_ms.ln(), config.latency_sigma).map_err(|_| {
                    ConfigError::Latency {
                        name: "latency sigma",
                        value: config.latency_sigma,
                    }
                })?,
            )
        } else {
            None
        };
        let registry = Registry::new();
        let v = config.version.as_str();
        let requests = counter(
            &registry,
            "iter8_sample_requests_total",
            "Requests served, errors included.",
            v,
        )?;
        let errors = counter(
            &registry,
            "iter8_sample_errors_total",
            "Requests answered with HTTP 500.",
            v,
        )?;
        let conversions = counter(
            &registry,
            "iter8_sample_conversions_total",
            "Successful requests that converted.",
            v,
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "iter8_sample_request_duration_milliseconds",
                "Latency added to each request, in milliseconds.",
            )
            .const_label("version", v)
            .buckets(config.buckets_ms.clone()),
        )
        .map_err(|e| ConfigError::Metrics(e.to_string()))?;
        registry
            .register(Box::new(duration.clone()))
            .map_err(|e| ConfigError::Metrics(e.to_string()))?;
        Ok(Arc::new(Self {
            rng: Mutex::new(Pcg64Mcg::seed_from_u64(config.seed)),
            config,
            latency,
            registry,
            requests,
            errors,
            conversions,
            duration,
        }))
    }

    /// The app's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Draws the next request's outcome (three draws per request, always, in a fixed order).
    pub fn draw(&self) -> Outcome {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let error = rng.random::<f64>() < self.config.error_rate;
        let converts = rng.random::<f64>() < self.config.conversion_rate;
        let sampled = self.latency.map(|d| d.sample(&mut *rng));
        Outcome {
            latency_ms: sampled.unwrap_or(self.config.latency_ms),
            error,
            conversion: converts && !error,
        }
    }

    /// Counts a served request in the metrics.
    pub fn record(&self, outcome: &Outcome) {
        self.requests.inc();
        if outcome.error {
            self.errors.inc();
        }
        if outcome.conversion {
            self.conversions.inc();
        }
        self.duration.observe(outcome.latency_ms);
    }

    /// The metrics in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails for metric families the registry never produces.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// The app's routes: `/metrics`, `/healthz`, and every other path serves a request.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(serve_request)
        .with_state(app)
}

/// Serves the app on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics_text(),
    )
        .into_response()
}

async fn serve_request(State(app): State<Arc<App>>) -> Response {
    let outcome = app.draw();
    if outcome.latency_ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(outcome.latency_ms / 1000.0)).await;
    }
    app.record(&outcome);
    let version = HeaderValue::from_str(&app.config.version)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    let (status, body) = if outcome.error {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"version": app.config.version, "error": "injected error"}),
        )
    } else {
        (
            StatusCode::OK,
            serde_json::json!({
                "version": app.config.version,
                "conversion": outcome.conversion,
                "latencyMs": outcome.latency_ms,
            }),
        )
    };
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-version", version);
    if outcome.conversion {
        headers.insert("x-conversion", HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt as _;

    fn app(config: Config) -> Arc<App> {
        App::new(config).expect("valid config")
    }

    fn quiet(version: &str) -> Config {
        Config {
            version: version.into(),
            latency_ms: 0.0,
            latency_sigma: 0.0,
            ..Config::default()
        }
    }

    async fn get(app: &Arc<App>, path: &str) -> Response {
        router(app.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn body_text(r: Response) -> String {
        let bytes = to_bytes(r.into_body(), 1 << 20).await.expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn the_same_seed_gives_the_same_outcomes() {
        let cfg = Config {
            error_rate: 0.3,
            conversion_rate: 0.4,
            seed: 42,
            ..Config::default()
        };
        let a = app(cfg.clone());
        let b = app(cfg);
        let xs: Vec<Outcome> = (0..100).map(|_| a.draw()).collect();
        let ys: Vec<Outcome> = (0..100).map(|_| b.draw()).collect();
        assert_eq!(xs, ys);
        let c = app(Config {
            seed: 43,
            error_rate: 0.3,
            ..Config::default()
        });
        let zs: Vec<Outcome> = (0..100).map(|_| c.draw()).collect();
        assert_ne!(xs, zs);
    }

    #[test]
    fn rates_of_zero_and_one_are_exact() {
        let never = app(Config {
            error_rate: 0.0,
            conversion_rate: 0.0,
            ..quiet("v1")
        });
        let always = app(Config {
            error_rate: 1.0,
            conversion_rate: 1.0,
            ..quiet("v1")
        });
        for _ in 0..200 {
            let n = never.draw();
            assert!(!n.error && !n.conversion);
            let a = always.draw();
            // A failed request never converts.
            assert!(a.error && !a.conversion);
        }
        let converts = app(Config {
            conversion_rate: 1.0,
            ..quiet("v1")
        });
        assert!((0..50).all(|_| converts.draw().conversion));
    }

    #[test]
    fn error_and_conversion_rates_are_close_to_the_configured_ones() {
        let a = app(Config {
            error_rate: 0.1,
            conversion_rate: 0.5,
            seed: 7,
            ..quiet("v1")
        });
        let n = 20_000;
        let draws: Vec<Outcome> = (0..n).map(|_| a.draw()).collect();
        let errors = draws.iter().filter(|o| o.error).count() as f64 / n as f64;
        let conv = draws.iter().filter(|o| o.conversion).count() as f64 / n as f64;
        assert!((errors - 0.1).abs() < 0.01, "error rate {errors}");
        // Conversions only among the 90 % successes.
        assert!((conv - 0.45).abs() < 0.015, "conversion rate {conv}");
    }

    #[test]
    fn latency_is_log_normal_around_the_median() {
        let a = app(Config {
            latency_ms: 50.0,
            latency_sigma: 0.5,
            seed: 3,
            ..Config::default()
        });
        let mut xs: Vec<f64> = (0..20_001).map(|_| a.draw().latency_ms).collect();
        xs.sort_by(f64::total_cmp);
        let median = xs[xs.len() / 2];
        assert!((median - 50.0).abs() < 2.0, "median {median}");
        assert!(xs.iter().all(|&x| x > 0.0));
        let fixed = app(Config {
            latency_ms: 12.5,
            latency_sigma: 0.0,
            ..Config::default()
        });
        assert!((0..10).all(|_| fixed.draw().latency_ms == 12.5));
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for bad in [
            Config {
                error_rate: 1.5,
                ..Config::default()
            },
            Config {
                conversion_rate: -0.1,
                ..Config::default()
            },
            Config {
                latency_ms: f64::NAN,
                ..Config::default()
            },
            Config {
                latency_sigma: -1.0,
                ..Config::default()
            },
            Config {
                buckets_ms: vec![],
                ..Config::default()
            },
            Config {
                buckets_ms: vec![10.0, 5.0],
                ..Config::default()
            },
            Config {
                buckets_ms: vec![10.0, f64::INFINITY],
                ..Config::default()
            },
        ] {
            assert!(App::new(bad.clone()).is_err(), "{bad:?} should be refused");
        }
    }

    #[tokio::test]
    async fn errors_answer_500_and_conversions_set_the_header() {
        let failing = app(Config {
            error_rate: 1.0,
            ..quiet("v2")
        });
        let r = get(&failing, "/anything").await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            r.headers().get("x-version").map(|v| v.as_bytes()),
            Some(&b"v2"[..])
        );
        let converting = app(Config {
            conversion_rate: 1.0,
            ..quiet("v2")
        });
        let r = get(&converting, "/").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers().get("x-conversion").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body: serde_json::Value = serde_json::from_str(&body_text(r).await).expect("json");
        assert_eq!(body["conversion"], serde_json::Value::Bool(true));
        assert_eq!(body["version"], "v2");
        let plain = app(quiet("v2"));
        let r = get(&plain, "/").await;
        assert!(r.headers().get("x-conversion").is_none());
    }

    #[tokio::test]
    async fn metrics_count_what_was_served_with_the_version_label() {
        let a = app(Config {
            error_rate: 0.3,
            conversion_rate: 0.5,
            latency_ms: 2.0,
            latency_sigma: 0.8,
            seed: 11,
            buckets_ms: vec![1.0, 2.0, 4.0],
            ..Config::default()
        });
        let (mut ok, mut failed, mut converted) = (0, 0, 0);
        for _ in 0..40 {
            let r = get(&a, "/").await;
            match r.status() {
                StatusCode::OK => ok += 1,
                _ => failed += 1,
            }
            converted += usize::from(r.headers().contains_key("x-conversion"));
        }
        let text = body_text(get(&a, "/metrics").await).await;
        let v = "{version=\"v1\"}";
        assert_eq!(
            sample(&text, &format!("iter8_sample_requests_total{v}")),
            Some(40.0)
        );
        assert_eq!(
            sample(&text, &format!("iter8_sample_errors_total{v}")),
            Some(failed as f64)
        );
        assert_eq!(
            sample(&text, &format!("iter8_sample_conversions_total{v}")),
            Some(converted as f64)
        );
        assert_eq!(ok + failed, 40);
        assert_eq!(
            sample(
                &text,
                "iter8_sample_request_duration_milliseconds_count{version=\"v1\"}"
            ),
            Some(40.0)
        );
        assert_eq!(
            sample(
                &text,
                "iter8_sample_request_duration_milliseconds_bucket{version=\"v1\",le=\"+Inf\"}"
            ),
            Some(40.0)
        );
        assert!(text.contains(
            "iter8_sample_request_duration_milliseconds_bucket{version=\"v1\",le=\"4\"}"
        ));
    }

    #[tokio::test]
    async fn every_series_is_exposed_at_zero_before_any_request() {
        let a = app(quiet("v1"));
        let text = body_text(get(&a, "/metrics").await).await;
        for name in ["requests", "errors", "conversions"] {
            assert_eq!(
                sample(
                    &text,
                    &format!("iter8_sample_{name}_total{{version=\"v1\"}}")
                ),
                Some(0.0),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_hostile_version_label_is_escaped_in_the_exposition() {
        let a = app(quiet("v1\"} or vector(1) #"));
        let text = body_text(get(&a, "/metrics").await).await;
        assert!(text.contains("iter8_sample_requests_total{version=\"v1\\\"} or vector(1) #\"} 0"));
    }
}
