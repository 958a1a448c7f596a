//! Every built-in metric under `charts/iter8/files/metrics/` parses as a `Metric` and renders.

use std::collections::BTreeMap;
use std::path::PathBuf;

use iter8_crd::{Metric, MetricType};
use iter8_metrics::template::{Carrier, Context, render};
use serde::Deserialize;

fn library_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/iter8/files/metrics")
}

fn library() -> Vec<(String, Metric)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(library_dir())
        .expect("the metric library exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected istio, envoy and sample-app files"
    );
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable file");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let metric = Metric::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse as a Metric: {e}", file.display()));
            out.push((file.display().to_string(), metric));
        }
    }
    out
}

fn templates(m: &Metric) -> Vec<&str> {
    let iter8_crd::Provider::Prometheus(p) = &m.spec.provider else {
        panic!("built-ins use Prometheus");
    };
    [&p.query, &p.sum_query, &p.count_query]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn balanced(s: &str) -> bool {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in s.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '{' | '[' => stack.push(c),
            ')' | '}' | ']' => {
                let open = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !in_string
}

#[test]
fn every_library_metric_parses_and_names_are_unique() {
    let lib = library();
    let mut names: Vec<String> = lib
        .iter()
        .map(|(_, m)| m.metadata.name.clone().expect("named"))
        .collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate metric names: {names:?}");
    for family in ["istio", "envoy", "sample-app"] {
        for kind in ["request-count", "error-count", "mean-latency", "latency"] {
            let name = format!("{family}-{kind}");
            assert!(names.contains(&name), "missing {name}");
        }
    }
}

#[test]
fn every_library_template_renders_with_escaped_labels_and_balanced_brackets() {
    let labels: BTreeMap<String, String> = [
        (
            "destination_workload".to_owned(),
            "reviews-v2\"} or vector(1) #".to_owned(),
        ),
        ("version".to_owned(), "v2".to_owned()),
    ]
    .into();
    let ctx = Context {
        labels: &labels,
        namespace: "bookinfo",
        start: 1_700_000_000,
        now: 1_700_000_600,
        secrets: None,
    };
    for (file, metric) in library() {
        let name = metric.metadata.name.clone().unwrap_or_default();
        let ts = templates(&metric);
        match metric.spec.kind {
            MetricType::Mean => assert_eq!(ts.len(), 2, "{name}: a mean needs sum and count"),
            MetricType::Counter => assert_eq!(ts.len(), 1, "{name}"),
            MetricType::Histogram => assert!(ts[0].contains("by (le)"), "{name}"),
        }
        for t in ts {
            let q = render(t, &ctx, Carrier::PromQl)
                .unwrap_or_else(|e| panic!("{file}: {name} does not render: {e}"));
            assert!(!q.contains("{{"), "{name}: {q}");
            assert!(
                q.contains("[600s]"),
                "{name} must count over the experiment: {q}"
            );
            assert!(q.contains("increase("), "{name} must use increase(): {q}");
            assert!(
                q.contains(
                    "destination_workload=\"reviews-v2\\\"} or vector(1) #\",version=\"v2\""
                ),
                "{name}: labels not rendered as escaped matchers: {q}"
            );
            assert!(balanced(&q), "{name}: unbalanced brackets in {q}");
            assert!(
                !q.contains("vector(0)"),
                "{name}: must not invent data: {q}"
            );
        }
    }
}
