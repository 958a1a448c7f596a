//! The `Metric` resource: how to get one metric of one version from a metrics backend.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How to query one metric for one version. Query templates may use `{{labels}}` (the version's
/// label matchers, escaped), `{{label "name"}}` (one label value, escaped), `{{namespace}}`,
/// `{{elapsed}}` (seconds since the experiment started), `{{start}}` (its Unix time) and `{{now}}`
/// (the Unix time of the end of the window); any other variable is an error. Values are escaped
/// as PromQL string contents, then percent-encoded in URLs and JSON-escaped in bodies, so no
/// label value can change a query. Use `increase(...[{{elapsed}}s])` for counters.
// Every printer column repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "iter8.tools",
    version = "v3alpha1",
    kind = "Metric",
    namespaced,
    category = "iter8",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Units", type_ = "string", json_path = ".spec.units"),
    printcolumn(
        name = "Description",
        type_ = "string",
        json_path = ".spec.description"
    )
)]
#[x_kube(
    validation = Rule::new("self.type != 'mean' || (has(self.prometheus) ? (has(self.prometheus.sumQuery) && has(self.prometheus.countQuery)) : (has(self.http.sumJsonPath) && has(self.http.countJsonPath)))")
        .message("a mean metric needs a sum and a count: prometheus.sumQuery and prometheus.countQuery, or http.sumJsonPath and http.countJsonPath"),
    validation = Rule::new("self.type == 'mean' || (has(self.prometheus) ? has(self.prometheus.query) : has(self.http.jsonPath))")
        .message("counter and histogram metrics need prometheus.query or http.jsonPath"),
)]
#[schemars(transform = crate::rules::exactly_one_of)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// What the metric measures, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The shape of the data: counter, mean (sum and count) or histogram.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Units of the values, e.g. `ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// Where the data comes from: exactly one of `prometheus` and `http`, written as its key
    /// beside the other fields.
    #[serde(flatten)]
    pub provider: Provider,
    /// Credentials for the backend, read from a Secret in the metric's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// How long one query may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<u32>,
}

/// The metrics backends a Metric can query. A new provider is one more variant here and one
/// module in `iter8-metrics`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// Query a Prometheus-compatible backend.
    Prometheus(PrometheusProvider),
    /// Query any HTTP API that answers JSON.
    Http(HttpProvider),
}

/// The shapes of metric data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricType {
    /// A cumulative count of events.
    Counter,
    /// A sum and a count whose ratio is a mean.
    Mean,
    /// Cumulative `le` buckets of a classic histogram.
    Histogram,
}

/// A Prometheus (or Thanos, Mimir, VictoriaMetrics) query.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusProvider {
    /// Base URL of the backend; the controller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// For counters: a scalar query. For histograms: a query returning one series per `le`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// For means: the sum of the values. For histograms (optional): the sum of all values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_query: Option<String>,
    /// For means: the number of values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_query: Option<String>,
}

/// A query to an HTTP API that answers JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProvider {
    /// URL template.
    #[schemars(length(min = 1))]
    pub url: String,
    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra headers (templates allowed; here also `{{token}}`, `{{username}}` and `{{password}}`
    /// from the metric's Secret, for API-key headers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body template, for POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// JSON path to the value (counter) or to the bucket list (histogram), e.g. `$.data.value`.
    /// Supported: `$`, `.name`, `['name']`, `[N]`, `[-1]`. Values may be numbers or numeric
    /// strings; buckets are `{"le": .., "count": ..}` or Prometheus vector items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// For means: JSON path to the sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_json_path: Option<String>,
    /// For means: JSON path to the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_json_path: Option<String>,
}

/// HTTP methods a provider may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HttpMethod {
    /// GET.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// POST.
    #[serde(rename = "POST")]
    Post,
}

/// Credentials from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// How the credentials are sent.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// The Secret holding them: key `token` for bearer, `username` and `password` for basic,
    /// and optionally `ca.crt` for a custom certificate authority.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// Ways to authenticate to a metrics backend.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthType {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// HTTP basic authentication.
    Basic,
}
