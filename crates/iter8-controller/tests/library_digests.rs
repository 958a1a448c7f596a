//! The digests of the chart's built-in Metrics are pinned in `api/metric-library-digests.txt`.
//!
//! A running experiment records the digest of every Metric it reads and pauses with
//! `MetricChanged` when one changes (`status.metricDigests`). A chart upgrade that changes
//! what a library Metric means (its type or provider: query, address) therefore pauses every
//! running experiment that uses it. That may be right, but it must be deliberate: this test
//! fails on any such change, and so does a change of the digest itself (which would pause
//! every experiment on a controller upgrade), until the file is regenerated with
//! `ITER8_UPDATE_API=1 cargo test -p iter8-controller --test library_digests` and the change
//! is written in the release notes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use iter8_controller::digest::metric_digest;
use iter8_crd::Metric;
use serde::Deserialize;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `file metric digest` for every Metric of the library, in file order.
fn library_digests(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the metric library exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = String::from(
        "# file metric digest: what running experiments record for the chart's built-in \
         Metrics\n# (pinned by crates/iter8-controller/tests/library_digests.rs)\n",
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable file");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let metric = Metric::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse as a Metric: {e}", file.display()));
            let metric_name = metric.metadata.name.as_deref().unwrap_or("?");
            let _ = writeln!(out, "{name} {metric_name} {}", metric_digest(&metric.spec));
        }
    }
    out
}

#[test]
fn a_chart_upgrade_changes_no_library_metric_digest_unless_the_pinned_file_says_so() {
    let root = repo_root();
    let actual = library_digests(&root.join("charts/iter8/files/metrics"));
    let path = root.join("api/metric-library-digests.txt");
    if std::env::var_os("ITER8_UPDATE_API").is_some() {
        std::fs::write(&path, &actual).expect("writable api/");
        return;
    }
    let pinned = std::fs::read_to_string(&path).unwrap_or_default();
    let changed: Vec<&str> = actual
        .lines()
        .filter(|line| !pinned.lines().any(|p| p == *line))
        .collect();
    assert!(
        pinned == actual,
        "the digests of built-in Metrics changed: a chart or controller upgrade would pause \
         every running experiment using them (MetricChanged). If that is intended, regenerate \
         with `ITER8_UPDATE_API=1 cargo test -p iter8-controller --test library_digests` and \
         say so in the release notes. New or changed lines: {changed:#?}"
    );
}
