//! Per-version metric observations for the analytics engine, from the backend a `Metric`
//! resource names. The controller asks through [`MetricsBackend`]; tests substitute their own.
//!
//! [`Backends`] is the real implementation: it dispatches to [`PrometheusBackend`] or
//! [`HttpBackend`] by the metric's provider. Query templates are rendered by [`template`], and
//! every answer passes the checks in [`quality`], so missing, stale, NaN or reset data becomes
//! [`MetricsError::NoData`] rather than an observation.
#![forbid(unsafe_code)]

mod client;
pub mod http;
pub mod jsonpath;
pub mod prometheus;
pub mod quality;
pub mod template;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use http::HttpBackend;
pub use prometheus::PrometheusBackend;

use iter8_api::Observation;
use iter8_crd::{MetricSpec, Provider};

/// One metric of one version over the experiment's window.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The metric's name in the experiment (for messages).
    pub name: &'a str,
    /// How to get it.
    pub spec: &'a MetricSpec,
    /// The labels that select the version's series.
    pub labels: &'a BTreeMap<String, String>,
    /// The experiment's namespace.
    pub namespace: &'a str,
    /// When the experiment started: observations are cumulative from here.
    pub start: SystemTime,
    /// The end of the window.
    pub now: SystemTime,
    /// Credentials resolved from the metric's Secret, if it names one.
    pub credentials: Option<&'a Credentials>,
}

/// Credentials for a metrics backend, read from a Secret by the caller.
#[derive(Clone, Default)]
pub struct Credentials {
    /// A bearer token.
    pub token: Option<String>,
    /// Basic-auth user name.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// A PEM certificate authority to trust.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs, even at debug level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// Why a metric could not be observed. None of these is ever read as a pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// The backend answered, but with no usable data for this version.
    #[error("no data for metric {metric}: {reason}")]
    NoData {
        /// The metric's name.
        metric: String,
        /// What was missing (no series, NaN, stale samples, a counter reset).
        reason: String,
    },
    /// The backend could not be reached or failed.
    #[error("metrics backend unavailable for metric {metric}: {reason}")]
    Unavailable {
        /// The metric's name.
        metric: String,
        /// The transport or server error.
        reason: String,
    },
    /// The metric's definition cannot be used (bad template, wrong shape of answer).
    #[error("metric {metric} is misconfigured: {reason}")]
    Invalid {
        /// The metric's name.
        metric: String,
        /// What is wrong.
        reason: String,
    },
}

/// A source of cumulative per-version observations.
pub trait MetricsBackend: Send + Sync {
    /// Observes one metric of one version, cumulative since the experiment started.
    fn observe(
        &self,
        query: &Query<'_>,
    ) -> impl Future<Output = Result<Observation, MetricsError>> + Send;
}

/// Settings shared by the backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The Prometheus base URL for metrics that name none.
    pub default_prometheus_address: Option<String>,
    /// How long a query may take when the metric sets no `timeoutSeconds`.
    pub default_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_prometheus_address: None,
            default_timeout: Duration::from_secs(10),
        }
    }
}

/// A backend could not be set up (for example, TLS could not be initialised).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot set up the metrics backends: {0}")]
pub struct SetupError(pub String);

/// The real metrics backends, chosen per metric by its provider.
#[derive(Clone)]
pub struct Backends {
    prometheus: PrometheusBackend,
    http: HttpBackend,
}

impl Backends {
    /// Backends with these settings.
    pub fn new(settings: Settings) -> Result<Self, SetupError> {
        Ok(Self {
            prometheus: PrometheusBackend::new(settings.clone())?,
            http: HttpBackend::new(settings)?,
        })
    }
}

impl MetricsBackend for Backends {
    async fn observe(&self, query: &Query<'_>) -> Result<Observation, MetricsError> {
        match &query.spec.provider {
            Provider::Prometheus(_) => self.prometheus.observe(query).await,
            Provider::Http(_) => self.http.observe(query).await,
        }
    }
}

impl MetricsBackend for PrometheusBackend {
    async fn observe(&self, query: &Query<'_>) -> Result<Observation, MetricsError> {
        PrometheusBackend::observe(self, query).await
    }
}

impl MetricsBackend for HttpBackend {
    async fn observe(&self, query: &Query<'_>) -> Result<Observation, MetricsError> {
        HttpBackend::observe(self, query).await
    }
}

/// Where a Metric's request for `query` goes, as the Metric itself says: `prometheus.address`,
/// or `http.url` rendered for the version, with the field it comes from; `None` for a
/// Prometheus metric that names no address (it uses the controller's default). Callers check
/// it against an allow-list before they read the Metric's Secret or send anything.
pub fn destination(query: &Query<'_>) -> Result<Option<(&'static str, String)>, MetricsError> {
    match &query.spec.provider {
        Provider::Prometheus(p) => Ok(p
            .address
            .clone()
            .map(|address| ("spec.prometheus.address", address))),
        Provider::Http(p) => http::url(query, p).map(|url| Some(("spec.http.url", url.into()))),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The template context of a query.
pub(crate) fn context<'a>(query: &Query<'a>) -> template::Context<'a> {
    template::Context {
        labels: query.labels,
        namespace: query.namespace,
        start: unix_secs(query.start),
        now: unix_secs(query.now),
        secrets: query.credentials,
    }
}

/// The query's timeout: the metric's `timeoutSeconds`, else the default.
pub(crate) fn timeout(query: &Query<'_>, settings: &Settings) -> Duration {
    query
        .spec
        .timeout_seconds
        .map_or(settings.default_timeout, |s| {
            Duration::from_secs(u64::from(s))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> MetricSpec {
        serde_json::from_value(value).expect("valid metric")
    }

    fn destination_of(spec: &MetricSpec) -> Result<Option<(&'static str, String)>, MetricsError> {
        let labels = BTreeMap::from([("host".to_owned(), "team-a.example".to_owned())]);
        destination(&Query {
            name: "m",
            spec,
            labels: &labels,
            namespace: "team",
            start: UNIX_EPOCH,
            now: UNIX_EPOCH + Duration::from_secs(60),
            credentials: None,
        })
    }

    #[test]
    fn the_destination_is_the_field_the_metric_sets_rendered_for_the_version() {
        let default = spec(serde_json::json!({"type": "counter", "prometheus": {"query": "x"}}));
        assert_eq!(destination_of(&default), Ok(None));
        let own = spec(serde_json::json!({"type": "counter",
            "prometheus": {"address": "http://prom:9090", "query": "x"}}));
        assert_eq!(
            destination_of(&own),
            Ok(Some(("spec.prometheus.address", "http://prom:9090".into())))
        );
        let http = spec(serde_json::json!({"type": "counter",
            "http": {"url": "https://{{label \"host\"}}/q?ns={{namespace}}&t={{now}}", "jsonPath": "$.v"}}));
        assert_eq!(
            destination_of(&http),
            Ok(Some((
                "spec.http.url",
                "https://team-a.example/q?ns=team&t=60".into()
            )))
        );
    }
}
