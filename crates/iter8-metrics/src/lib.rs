//! Per-version metric observations for the analytics engine, from the backend a `Metric`
//! resource names. The controller asks through [`MetricsBackend`]; tests substitute their own.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use iter8_api::Observation;
use iter8_crd::MetricSpec;

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
