//! The Prometheus backend (also Thanos, Mimir, VictoriaMetrics): instant queries at the end of
//! the window, mapped to counters, means and histogram buckets.

use std::time::{Duration, UNIX_EPOCH};

use iter8_api::{BucketBound, Observation};
use iter8_crd::{MetricType, PrometheusProvider};
use prometheus_http_query::response::Data;
use reqwest::header::AUTHORIZATION;

use crate::client::{ClientPool, authorization};
use crate::quality::{self, invalid, no_data, unavailable};
use crate::template::{Carrier, render};
use crate::{MetricsError, Query, Settings};

/// Queries a Prometheus-compatible HTTP API.
#[derive(Clone)]
pub struct PrometheusBackend {
    settings: Settings,
    clients: ClientPool,
}

/// One sample of an instant-query answer: its labels, timestamp and value.
type Series = (std::collections::HashMap<String, String>, f64);

impl PrometheusBackend {
    /// A backend with these settings.
    pub fn new(settings: Settings) -> Result<Self, crate::SetupError> {
        Ok(Self {
            settings,
            clients: ClientPool::new().map_err(|e| crate::SetupError(e.to_string()))?,
        })
    }

    /// Observes one metric of one version.
    pub async fn observe(&self, query: &Query<'_>) -> Result<Observation, MetricsError> {
        let name = query.name;
        let iter8_crd::Provider::Prometheus(provider) = &query.spec.provider else {
            return Err(invalid(name, "the metric has no prometheus provider"));
        };
        match query.spec.kind {
            MetricType::Counter => {
                let q = required(name, "query", provider.query.as_deref())?;
                let value = self.scalar(query, provider, q).await?;
                quality::counter(name, value)
            }
            MetricType::Mean => {
                let sum_q = required(name, "sumQuery", provider.sum_query.as_deref())?;
                let count_q = required(name, "countQuery", provider.count_query.as_deref())?;
                let (sum, count) = tokio::join!(
                    self.scalar(query, provider, sum_q),
                    self.scalar(query, provider, count_q)
                );
                quality::mean(name, sum?, count?)
            }
            MetricType::Histogram => {
                let q = required(name, "query", provider.query.as_deref())?;
                let sum_q = provider.sum_query.as_deref();
                let (buckets, sum) = tokio::join!(self.run(query, provider, q), async {
                    match sum_q {
                        Some(s) => self.scalar(query, provider, s).await.map(Some),
                        None => Ok(None),
                    }
                });
                let buckets = self.buckets(query, buckets?)?;
                quality::histogram(name, buckets, sum?)
            }
        }
    }

    /// Runs a query that must answer one number for the version.
    async fn scalar(
        &self,
        query: &Query<'_>,
        provider: &PrometheusProvider,
        template: &str,
    ) -> Result<f64, MetricsError> {
        let name = query.name;
        let series = self.run(query, provider, template).await?;
        match series.as_slice() {
            [] => Err(no_data(
                name,
                "the query returned no series for this version",
            )),
            [(_, value)] => Ok(*value),
            many => Err(invalid(
                name,
                format!(
                    "the query returned {} series where one was expected: aggregate it with sum()",
                    many.len()
                ),
            )),
        }
    }

    /// Histogram buckets from one series per `le`.
    fn buckets(
        &self,
        query: &Query<'_>,
        series: Vec<Series>,
    ) -> Result<Vec<(BucketBound, f64)>, MetricsError> {
        let name = query.name;
        if series.is_empty() {
            return Err(no_data(
                name,
                "the query returned no bucket series for this version",
            ));
        }
        series
            .into_iter()
            .map(|(labels, value)| {
                let le = labels.get("le").ok_or_else(|| {
                    invalid(
                        name,
                        "a histogram query must return one series per `le` label: use `sum by (le) (...)`",
                    )
                })?;
                Ok((quality::parse_le(name, le)?, value))
            })
            .collect()
    }

    /// Renders and runs one instant query at the end of the window.
    async fn run(
        &self,
        query: &Query<'_>,
        provider: &PrometheusProvider,
        template: &str,
    ) -> Result<Vec<Series>, MetricsError> {
        let name = query.name;
        let address = provider
            .address
            .as_deref()
            .or(self.settings.default_prometheus_address.as_deref())
            .ok_or_else(|| {
                invalid(
                    name,
                    "no Prometheus address: set prometheus.address or the controller's default",
                )
            })?;
        let ctx = crate::context(query);
        let promql =
            render(template, &ctx, Carrier::PromQl).map_err(|e| invalid(name, e.to_string()))?;
        let timeout = crate::timeout(query, &self.settings);
        let client = prometheus_http_query::Client::from(self.clients.client(query)?, address)
            .map_err(|e| invalid(name, format!("bad Prometheus address `{address}`: {e}")))?;
        let now = query
            .now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let mut builder = client
            .query(&promql)
            .query("time", format!("{now:.3}"))
            .timeout(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        if let Some(auth) = authorization(query)? {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let answer = tokio::time::timeout(timeout, builder.post())
            .await
            .map_err(|_| {
                unavailable(
                    name,
                    format!("no answer within {} s", timeout.as_secs_f64()),
                )
            })?
            .map_err(|e| map_error(name, &e))?;
        match answer.into_inner().0 {
            // An instant query's samples carry the evaluation time, not the time they were
            // scraped: nothing here can tell a stale value from a fresh one.
            Data::Scalar(s) => Ok(vec![(Default::default(), s.value())]),
            Data::Vector(v) => Ok(v
                .into_iter()
                .map(|iv| {
                    let (labels, s) = iv.into_inner();
                    (labels, s.value())
                })
                .collect()),
            Data::Matrix(_) => Err(invalid(
                name,
                "the query returned a range vector: it must be an instant vector or scalar",
            )),
        }
    }
}

fn required<'a>(
    metric: &str,
    field: &str,
    value: Option<&'a str>,
) -> Result<&'a str, MetricsError> {
    value.ok_or_else(|| {
        invalid(
            metric,
            format!("prometheus.{field} is required for this type"),
        )
    })
}

/// A transport or server failure is `Unavailable`; a query Prometheus rejects is `Invalid`.
fn map_error(metric: &str, e: &prometheus_http_query::Error) -> MetricsError {
    use prometheus_http_query::Error;
    match e {
        Error::Prometheus(p) if p.is_bad_data() || p.is_execution() => {
            invalid(metric, format!("Prometheus rejected the query: {p}"))
        }
        Error::ParseUrl(p) => invalid(metric, format!("bad Prometheus address: {p}")),
        other => unavailable(metric, error_chain(other)),
    }
}

/// An error and its sources, as one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
