//! Reading an experiment file for local mode: YAML decoding with the line and the field of
//! any error, then the checks local mode needs (URLs, built-in metrics, the analytics API's
//! own validation), each reported at the field's line in the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use iter8_api::{Observation, RatioMetric};
use iter8_crd::{ExperimentSpec, LoadSpec};
use serde::Deserialize;

use crate::stats::{
    BUILT_IN_METRICS, CONVERSION_RATE, CONVERSIONS, DEFAULT_BUCKETS_MS, ERROR_RATE, ERRORS,
    REQUESTS, VersionStats,
};

/// The `apiVersion` an experiment file must have.
pub const API_VERSION: &str = "iter8.tools/v3alpha1";

/// An experiment file local mode cannot run, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a well-formed experiment, or a field is not what local mode accepts.
    #[error("{file}:{}: {field}: {message}", line.map_or_else(|| "?".to_string(), |l| l.to_string()))]
    Invalid {
        /// The file.
        file: String,
        /// The 1-based line of the field, when known.
        line: Option<usize>,
        /// The field's path, e.g. `spec.versions[1].url`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The parts of an experiment file local mode reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExperimentFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    spec: ExperimentSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
}

/// An experiment ready to run locally.
#[derive(Debug, Clone)]
pub struct LocalExperiment {
    /// The experiment's name (`metadata.name`, or the file's stem).
    pub name: String,
    /// The spec, with the built-in ratios `error-rate` and `conversion-rate` added unless the
    /// file defines ratios of those names.
    pub spec: ExperimentSpec,
    /// Each version's URL, in version order.
    pub urls: Vec<hyper::Uri>,
    /// The load generator's settings.
    pub load: LoadSpec,
    /// The time between iterations.
    pub interval: Duration,
    /// The per-request timeout.
    pub timeout: Duration,
    /// The latency bucket bounds, in milliseconds.
    pub buckets_ms: Vec<f64>,
}

/// Reads and checks an experiment file.
pub fn load_file(path: &Path) -> Result<LocalExperiment, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        file: file.clone(),
        source,
    })?;
    let fallback = path
        .file_stem()
        .map_or_else(|| "experiment".into(), |s| s.to_string_lossy().into_owned());
    parse(&file, &text, &fallback)
}

/// Parses and checks the text of an experiment file; `file` names it in errors and
/// `fallback_name` is used when it has no `metadata.name`.
pub fn parse(file: &str, text: &str, fallback_name: &str) -> Result<LocalExperiment, SpecError> {
    let invalid = |field: &str, message: String| SpecError::Invalid {
        file: file.to_string(),
        line: locate(text, field),
        field: field.to_string(),
        message,
    };
    let de = serde_yaml::Deserializer::from_str(text);
    let doc: ExperimentFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| locate(text, &field));
        let message = strip_location(&inner.to_string(), &field);
        SpecError::Invalid {
            file: file.to_string(),
            line,
            field: if field == "." {
                "(document)".into()
            } else {
                field
            },
            message,
        }
    })?;
    if doc.api_version != API_VERSION {
        return Err(invalid(
            "apiVersion",
            format!("must be {API_VERSION}, got {:?}", doc.api_version),
        ));
    }
    if doc.kind != "Experiment" {
        return Err(invalid(
            "kind",
            format!("must be Experiment, got {:?}", doc.kind),
        ));
    }
    let mut spec = doc.spec;
    if !spec.metrics.is_empty() {
        return Err(invalid(
            "spec.metrics",
            format!(
                "local mode measures its own traffic and reads no Metric resources; criteria can \
                 use the built-in metrics {}",
                BUILT_IN_METRICS.join(", ")
            ),
        ));
    }
    let mut urls = Vec::with_capacity(spec.versions.len());
    for (i, v) in spec.versions.iter().enumerate() {
        let field = format!("spec.versions[{i}].url");
        let Some(url) = &v.url else {
            return Err(invalid(
                &field,
                format!(
                    "version {:?} has no url; local mode sends its load to each version's url",
                    v.name
                ),
            ));
        };
        urls.push(parse_url(url).map_err(|m| invalid(&field, m))?);
    }
    add_built_in_ratios(&mut spec.ratios);
    let load = spec.load.clone().unwrap_or_default();
    let interval = parse_duration(&spec.duration.interval).ok_or_else(|| {
        invalid(
            "spec.duration.interval",
            format!(
                "{:?} is not a duration such as 10s, 1m or 500ms",
                spec.duration.interval
            ),
        )
    })?;
    if interval.is_zero() {
        return Err(invalid("spec.duration.interval", "must be positive".into()));
    }
    let timeout = parse_duration(&load.timeout)
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            invalid(
                "spec.load.timeout",
                format!("{:?} is not a positive duration such as 2s", load.timeout),
            )
        })?;
    check_load(&load).map_err(|(field, m)| invalid(field, m))?;
    let buckets_ms = load
        .latency_buckets_ms
        .clone()
        .unwrap_or_else(|| DEFAULT_BUCKETS_MS.to_vec());
    // The analytics API's own checks, on a request with every built-in metric at zero: its
    // field names map back onto the file.
    let zero = VersionStats::new(&buckets_ms).observations();
    let observations: Vec<BTreeMap<String, Observation>> =
        spec.versions.iter().map(|_| zero.clone()).collect();
    let request = iter8_crd::Ledger::start(&spec).request(&spec, observations);
    if let Err(e) = request
        .validate()
        .and_then(|()| request.check_metrics_known())
    {
        let field = spec_field(&e.field);
        let mut message = e.reason;
        if message.starts_with("no version has data for metric") {
            message.push_str(&format!(
                "; local mode provides {}",
                BUILT_IN_METRICS.join(", ")
            ));
        }
        return Err(invalid(&field, message));
    }
    Ok(LocalExperiment {
        name: doc
            .metadata
            .name
            .unwrap_or_else(|| fallback_name.to_string()),
        spec,
        urls,
        load,
        interval,
        timeout,
        buckets_ms,
    })
}

/// Adds `error-rate` and `conversion-rate` unless ratios of those names exist.
fn add_built_in_ratios(ratios: &mut Vec<RatioMetric>) {
    for (name, numerator) in [(ERROR_RATE, ERRORS), (CONVERSION_RATE, CONVERSIONS)] {
        if !ratios.iter().any(|r| r.name == name) {
            ratios.push(RatioMetric {
                name: name.into(),
                numerator: numerator.into(),
                denominator: REQUESTS.into(),
            });
        }
    }
}

fn check_load(load: &LoadSpec) -> Result<(), (&'static str, String)> {
    if load.concurrency == 0 {
        return Err(("spec.load.concurrency", "must be at least 1".into()));
    }
    if let Some(rate) = load.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err((
            "spec.load.rate",
            format!("must be a positive number of requests per second, got {rate}"),
        ));
    }
    if load.requests_per_iteration == Some(0) {
        return Err((
            "spec.load.requestsPerIteration",
            "must be at least 1".into(),
        ));
    }
    if hyper::Method::from_bytes(load.method.as_bytes()).is_err() {
        return Err((
            "spec.load.method",
            format!("{:?} is not an HTTP method", load.method),
        ));
    }
    for (name, value) in &load.headers {
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || hyper::header::HeaderValue::from_str(value).is_err()
        {
            return Err((
                "spec.load.headers",
                format!("{name:?}: {value:?} is not a valid HTTP header"),
            ));
        }
    }
    if let Some(b) = &load.latency_buckets_ms
        && (b.is_empty()
            || b.iter().any(|v| !v.is_finite() || *v <= 0.0)
            || b.windows(2).any(|w| w[0] >= w[1]))
    {
        return Err((
            "spec.load.latencyBucketsMs",
            format!("bounds must be positive, finite and strictly increasing, got {b:?}"),
        ));
    }
    if let Some(c) = &load.conversion
        && c.header.is_none()
        && c.json_field.is_none()
    {
        return Err((
            "spec.load.conversion",
            "name a header or a jsonField that marks a conversion".into(),
        ));
    }
    Ok(())
}

/// Checks a version URL: plain `http://host:port/path` (local mode speaks HTTP/1.1).
fn parse_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{url:?}: local mode sends plain HTTP; scheme {other:?} is not supported"
            ));
        }
        None => return Err(format!("{url:?} has no scheme; write http://{url}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(uri)
}

/// Maps a field of the analytics request onto the experiment file.
fn spec_field(request_field: &str) -> String {
    match request_field {
        "minIterations" => "spec.duration.minIterations".into(),
        "maxIterations" => "spec.duration.maxIterations".into(),
        "versions[].weight" => "spec.strategy.split".into(),
        f if f.starts_with("versions[") && f.contains("].metrics") => {
            // Zero observations are generated, so this is about a ratio or a criterion's
            // metric; point at the version.
            f.split_once(".metrics")
                .map_or_else(|| format!("spec.{f}"), |(v, _)| format!("spec.{v}"))
        }
        f => format!("spec.{f}"),
    }
}

pub use iter8_crd::parse_duration;

/// serde_yaml prefixes the path and appends " at line L column C"; both are reported
/// separately.
fn strip_location(message: &str, field: &str) -> String {
    let message = message
        .strip_prefix(field)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message);
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The 1-based line of a field path such as `spec.versions[1].url` in block-style YAML; the
/// line of the deepest part of the path that exists (the version, when it lacks a `url`).
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let content = |j: usize| {
        let t = lines[j].trim_start();
        !(t.is_empty() || t.starts_with('#') || t == "---")
    };
    let indent = |j: usize| lines[j].len() - lines[j].trim_start().len();
    let is_item = |j: usize| lines[j].trim_start().starts_with('-');
    // Where a key starts: after the indentation and any `- ` of a sequence item.
    let key_column = |j: usize| {
        let mut rest = lines[j].trim_start();
        let mut column = indent(j);
        while let Some(r) = rest.strip_prefix('-') {
            let trimmed = r.trim_start();
            column += rest.len() - trimmed.len();
            rest = trimmed;
        }
        (column, rest)
    };
    // The block under a key (children deeper than its column; sequence items may sit at the
    // key's column) or under a sequence item (until the next item or a shallower line).
    let block_end = |from: usize, column: usize, item: bool| {
        (from..lines.len())
            .find(|&j| {
                content(j) && (indent(j) < column || (indent(j) == column && (item || !is_item(j))))
            })
            .unwrap_or(lines.len())
    };
    let (mut start, mut end) = (0, lines.len());
    let mut found = None;
    for segment in path_segments(path) {
        let Some(first) = (start..end).find(|&j| content(j)) else {
            break;
        };
        match segment {
            Segment::Key(key) => {
                let child = key_column(first).0;
                let hit = (start..end).find(|&j| {
                    let (column, rest) = key_column(j);
                    content(j)
                        && column == child
                        && rest
                            .strip_prefix(key.as_str())
                            .is_some_and(|r| r.trim_start().starts_with(':'))
                });
                let Some(hit) = hit else { break };
                let column = key_column(hit).0;
                start = hit + 1;
                end = block_end(start, column, false);
                found = Some(hit + 1);
            }
            Segment::Index(i) => {
                let dash = indent(first);
                let item = (start..end)
                    .filter(|&j| content(j) && is_item(j) && indent(j) == dash)
                    .nth(i);
                let Some(item) = item else { break };
                start = item;
                end = block_end(item + 1, dash, true);
                found = Some(item + 1);
            }
        }
    }
    found
}

enum Segment {
    Key(String),
    Index(usize),
}

fn path_segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(Segment::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(r) = rest.strip_prefix('[') {
                let close = r.find(']').unwrap_or(r.len());
                if let Ok(i) = r[..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = r.get(close + 1..).unwrap_or("");
            }
        } else {
            out.push(Segment::Key(rest.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: iter8.tools/v3alpha1
kind: Experiment
metadata:
  name: checkout
spec:
  kind: canary
  versions:
  - name: v1
    url: http://127.0.0.1:8081/
  - name: v2
    url: http://127.0.0.1:8082/
  criteria:
    objectives:
    - metric: error-rate
      upperLimit: 0.01
    - metric: latency
      quantile: 0.95
      upperLimit: 100
  duration:
    interval: 2s
    maxIterations: 5
";

    fn error(text: &str) -> String {
        match parse("exp.yaml", text, "exp") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_file_gets_the_built_in_ratios_and_its_settings() {
        let exp = parse("exp.yaml", GOOD, "exp").expect("valid");
        assert_eq!(exp.name, "checkout");
        let names: Vec<&str> = exp.spec.ratios.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["error-rate", "conversion-rate"]);
        assert_eq!(exp.interval, Duration::from_secs(2));
        assert_eq!(exp.timeout, Duration::from_secs(5));
        assert_eq!(exp.urls[1].port_u16(), Some(8082));
    }

    #[test]
    fn a_ratio_the_file_defines_is_not_replaced() {
        let text = GOOD.replace(
            "  criteria:",
            "  ratios:\n  - name: error-rate\n    numerator: errors\n    denominator: requests\n  criteria:",
        );
        let exp = parse("exp.yaml", &text, "exp").expect("valid");
        assert_eq!(exp.spec.ratios.len(), 2);
    }

    #[test]
    fn a_version_without_url_is_reported_at_its_line() {
        let text = GOOD.replace("    url: http://127.0.0.1:8082/\n", "");
        assert_eq!(
            error(&text),
            "exp.yaml:10: spec.versions[1].url: version \"v2\" has no url; local mode sends \
             its load to each version's url"
        );
    }

    #[test]
    fn a_wrong_type_names_the_line_and_the_field() {
        let text = GOOD.replace("maxIterations: 5", "maxIterations: many");
        let e = error(&text);
        assert!(
            e.starts_with(
                "exp.yaml:21: spec.duration.maxIterations: invalid type: string \"many\""
            ),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_kind_is_reported_with_the_allowed_ones() {
        let e = error(&GOOD.replace("kind: canary", "kind: bluegreen"));
        assert!(
            e.starts_with("exp.yaml:6: spec.kind: unknown variant `bluegreen`"),
            "{e}"
        );
    }

    #[test]
    fn kinds_and_versions_must_agree() {
        let text = GOOD.replace("kind: canary", "kind: performanceTest");
        assert_eq!(
            error(&text),
            "exp.yaml:7: spec.versions: a performance test experiment needs exactly one \
             version; got 2"
        );
    }

    #[test]
    fn a_criterion_on_an_unknown_metric_lists_the_built_in_ones() {
        let e = error(&GOOD.replace("metric: error-rate", "metric: cpu"));
        assert!(
            e.starts_with(
                "exp.yaml:14: spec.criteria.objectives[0].metric: no version has data for \
                 metric \"cpu\""
            ),
            "{e}"
        );
        assert!(e.contains("local mode provides requests, errors"), "{e}");
    }

    #[test]
    fn a_histogram_criterion_without_quantile_is_refused_at_the_criterion() {
        let e = error(&GOOD.replace("      quantile: 0.95\n", ""));
        assert!(
            e.starts_with("exp.yaml:16: spec.criteria.objectives[1].quantile: metric \"latency\""),
            "{e}"
        );
    }

    #[test]
    fn https_and_bad_load_settings_are_refused() {
        let e = error(&GOOD.replace("http://127.0.0.1:8082/", "https://example.com/"));
        assert!(e.starts_with("exp.yaml:11: spec.versions[1].url:"), "{e}");
        let e = error(&format!("{GOOD}  load:\n    rate: -3\n"));
        assert!(
            e.starts_with("exp.yaml:23: spec.load.rate: must be a positive"),
            "{e}"
        );
        let e = error(&format!("{GOOD}  load:\n    timeout: soon\n"));
        assert!(e.starts_with("exp.yaml:23: spec.load.timeout:"), "{e}");
    }

    #[test]
    fn wrong_api_version_and_metric_references_are_refused() {
        let e = error(&GOOD.replace("v3alpha1", "v1"));
        assert!(
            e.starts_with("exp.yaml:1: apiVersion: must be iter8.tools/v3alpha1"),
            "{e}"
        );
        let text = GOOD.replace(
            "  criteria:",
            "  metrics:\n  - name: cpu\n    metric: {name: cpu}\n  criteria:",
        );
        let e = error(&text);
        assert!(
            e.starts_with("exp.yaml:12: spec.metrics: local mode"),
            "{e}"
        );
    }
}
