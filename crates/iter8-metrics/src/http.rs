//! The generic HTTP/JSON backend: URL, header and body templates, and JSON paths to the
//! numbers, so Datadog, New Relic or any REST source can serve a metric.

use iter8_api::{BucketBound, Observation};
use iter8_crd::{HttpMethod, HttpProvider, MetricType};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use crate::client::{ClientPool, authorization};
use crate::jsonpath::{JsonPath, PathError, abbreviate, as_number};
use crate::prometheus::error_chain;
use crate::quality::{self, invalid, no_data, unavailable};
use crate::template::{Carrier, render};
use crate::{MetricsError, Query, Settings};

/// Queries an HTTP API that answers JSON.
#[derive(Clone)]
pub struct HttpBackend {
    settings: Settings,
    clients: ClientPool,
}

impl HttpBackend {
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
        let iter8_crd::Provider::Http(provider) = &query.spec.provider else {
            return Err(invalid(name, "the metric has no http provider"));
        };
        let path = |field: &str, p: Option<&str>| -> Result<JsonPath, MetricsError> {
            let p =
                p.ok_or_else(|| invalid(name, format!("http.{field} is required for this type")))?;
            JsonPath::parse(p).map_err(|e| invalid(name, e.to_string()))
        };
        // Parse every path before asking, so a typo is reported as such.
        let paths = match query.spec.kind {
            MetricType::Counter | MetricType::Histogram => {
                vec![path("jsonPath", provider.json_path.as_deref())?]
            }
            MetricType::Mean => vec![
                path("sumJsonPath", provider.sum_json_path.as_deref())?,
                path("countJsonPath", provider.count_json_path.as_deref())?,
            ],
        };
        let doc = self.fetch(query, provider).await?;
        match (query.spec.kind, paths.as_slice()) {
            (MetricType::Counter, [p]) => quality::counter(name, number(name, p, &doc)?),
            (MetricType::Mean, [s, c]) => {
                quality::mean(name, number(name, s, &doc)?, number(name, c, &doc)?)
            }
            (MetricType::Histogram, [p]) => {
                let list = p.select(&doc).map_err(|e| path_error(name, e))?;
                quality::histogram(name, buckets(name, list)?, None)
            }
            _ => Err(invalid(name, "internal: unexpected JSON paths")),
        }
    }

    async fn fetch(
        &self,
        query: &Query<'_>,
        provider: &HttpProvider,
    ) -> Result<Value, MetricsError> {
        let name = query.name;
        let ctx = crate::context(query);
        let bad =
            |what: &str, e: crate::template::TemplateError| invalid(name, format!("{what}: {e}"));
        let url = url(query, provider)?;
        let client = self.clients.client(query)?;
        let mut req = match provider.method {
            HttpMethod::Get => client.get(url),
            HttpMethod::Post => client.post(url),
        };
        req = req
            .timeout(crate::timeout(query, &self.settings))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(auth) = authorization(query)? {
            req = req.header(AUTHORIZATION, auth);
        }
        let mut has_content_type = false;
        for (key, template) in &provider.headers {
            let header = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                invalid(name, format!("http.headers: `{key}` is not a header name"))
            })?;
            has_content_type |= header == CONTENT_TYPE;
            let value =
                render(template, &ctx, Carrier::Header).map_err(|e| bad("http.headers", e))?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                invalid(
                    name,
                    format!("http.headers: the value of `{key}` is not allowed"),
                )
            })?;
            value.set_sensitive(true);
            req = req.header(header, value);
        }
        if let Some(body) = &provider.body {
            let body = render(body, &ctx, Carrier::Json).map_err(|e| bad("http.body", e))?;
            if !has_content_type {
                req = req.header(CONTENT_TYPE, "application/json");
            }
            req = req.body(body);
        }
        let response = req
            .send()
            .await
            .map_err(|e| unavailable(name, error_chain(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| unavailable(name, error_chain(&e)))?;
        if !status.is_success() {
            let snippet: String = text.chars().take(200).collect();
            let reason = format!("HTTP {status}: {snippet}");
            return Err(match status.as_u16() {
                400 | 404 | 405 | 414 | 422 => invalid(name, reason),
                _ => unavailable(name, reason),
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| invalid(name, format!("the response is not JSON: {e}")))
    }
}

fn path_error(metric: &str, e: PathError) -> MetricsError {
    match e {
        PathError::Missing(p) => no_data(metric, format!("nothing at `{p}` in the response")),
        other => invalid(metric, other.to_string()),
    }
}

/// The URL `query` is sent to: `http.url` rendered for the version (the one rendering both
/// the request and the controller's allow-list check use).
pub fn url(query: &Query<'_>, provider: &HttpProvider) -> Result<reqwest::Url, MetricsError> {
    let name = query.name;
    let url = render(&provider.url, &crate::context(query), Carrier::Url)
        .map_err(|e| invalid(name, format!("http.url: {e}")))?;
    reqwest::Url::parse(&url)
        .map_err(|e| invalid(name, format!("http.url does not render to a URL: {e}")))
}

fn number(metric: &str, path: &JsonPath, doc: &Value) -> Result<f64, MetricsError> {
    match path.select(doc) {
        Ok(Value::Null) => Err(no_data(metric, format!("null at `{}`", path.as_str()))),
        Ok(_) => path.number(doc).map_err(|e| path_error(metric, e)),
        Err(e) => Err(path_error(metric, e)),
    }
}

/// Buckets from a JSON list whose items are `{"le": .., "count": ..}` or Prometheus vector
/// items `{"metric": {"le": ..}, "value": [ts, ".."]}`.
fn buckets(metric: &str, list: &Value) -> Result<Vec<(BucketBound, f64)>, MetricsError> {
    let items = list.as_array().ok_or_else(|| {
        invalid(
            metric,
            format!("expected a list of buckets, got {}", abbreviate(list)),
        )
    })?;
    if items.is_empty() {
        return Err(no_data(metric, "the bucket list is empty"));
    }
    items
        .iter()
        .map(|item| {
            let le = item.get("le").or_else(|| item.pointer("/metric/le"));
            let count = item.get("count").or_else(|| item.pointer("/value/1"));
            let (Some(le), Some(count)) = (le, count) else {
                return Err(invalid(
                    metric,
                    format!("a bucket needs `le` and `count`: {}", abbreviate(item)),
                ));
            };
            let le = match le {
                Value::String(s) => quality::parse_le(metric, s)?,
                Value::Number(n) => quality::parse_le(metric, &n.to_string())?,
                other => {
                    return Err(invalid(
                        metric,
                        format!("bad bucket bound {}", abbreviate(other)),
                    ));
                }
            };
            let count = as_number(count).ok_or_else(|| {
                invalid(metric, format!("bad bucket count {}", abbreviate(count)))
            })?;
            Ok((le, count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn buckets_read_both_plain_and_prometheus_shaped_lists() {
        let plain = json!([{"le": 10, "count": 3}, {"le": "+Inf", "count": "5"}]);
        let b = buckets("m", &plain).expect("plain buckets");
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].1, 5.0);
        let prom = json!([{"metric": {"le": "0.5"}, "value": [1.0, "2"]}]);
        let b = buckets("m", &prom).expect("prometheus buckets");
        assert_eq!(b[0].0, BucketBound::Finite(0.5));
    }

    #[test]
    fn an_empty_bucket_list_is_no_data_and_a_non_list_is_invalid() {
        assert!(matches!(
            buckets("m", &json!([])),
            Err(MetricsError::NoData { .. })
        ));
        assert!(matches!(
            buckets("m", &json!({})),
            Err(MetricsError::Invalid { .. })
        ));
        assert!(matches!(
            buckets("m", &json!([{"le": 1}])),
            Err(MetricsError::Invalid { .. })
        ));
    }

    #[test]
    fn null_and_missing_values_are_no_data() {
        let doc = json!({"series": [], "v": null});
        let missing = JsonPath::parse("$.series[0]").expect("parses");
        let null = JsonPath::parse("$.v").expect("parses");
        assert!(matches!(
            number("m", &missing, &doc),
            Err(MetricsError::NoData { .. })
        ));
        assert!(matches!(
            number("m", &null, &doc),
            Err(MetricsError::NoData { .. })
        ));
    }
}
