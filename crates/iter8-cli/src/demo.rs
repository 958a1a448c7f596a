//! `iter8 demo`: three sample versions on loopback, an A/B/n experiment on them, and the
//! run's JSON and HTML report in a directory.
//!
//! The versions: `v1` (the baseline: 20 ms, 1 % errors, 5 % conversions), `v2` (faster and
//! converting better: the expected winner) and `v3` (converting best but failing 6 % of
//! requests, beyond the 3 % objective: it must not win). Every generator is seeded.

use std::path::{Path, PathBuf};

use iter8_sample_app::{App, Config};

use crate::analytics::Analytics;
use crate::local::{self, RunError};
use crate::progress::Progress;
use crate::record::RunRecord;
use crate::report;
use crate::spec::{self, SpecError};

/// The sample versions: name, median latency (ms), error rate, conversion rate.
pub const PROFILES: [(&str, f64, f64, f64); 3] = [
    ("v1", 20.0, 0.01, 0.05),
    ("v2", 15.0, 0.005, 0.09),
    ("v3", 45.0, 0.06, 0.12),
];

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A sample version could not start.
    #[error("cannot start sample version {version}: {message}")]
    Sample {
        /// The version.
        version: String,
        /// Why.
        message: String,
    },
    /// The generated experiment was refused (a bug).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The report could not be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What the demo produced.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The run.
    pub run: RunRecord,
    /// The saved run.
    pub json: PathBuf,
    /// The HTML report.
    pub html: PathBuf,
}

/// The demo's experiment for versions at these URLs.
pub fn experiment_yaml(urls: &[String]) -> String {
    let versions: String = PROFILES
        .iter()
        .zip(urls)
        .map(|((name, ..), url)| format!("  - name: {name}\n    url: {url}\n"))
        .collect();
    format!(
        "\
apiVersion: iter8.tools/v3alpha1
kind: Experiment
metadata:
  name: iter8-demo
spec:
  kind: abn
  versions:
{versions}  criteria:
    objectives:
    - metric: error-rate
      upperLimit: 0.03
    - metric: latency
      quantile: 0.95
      upperLimit: 100
    rewards:
    - metric: conversion-rate
      preferredDirection: higher
  strategy:
    winnerProbability: 0.95
  duration:
    minIterations: 3
    maxIterations: 20
  load:
    concurrency: 48
    requestsPerIteration: 1500
    timeout: 2s
    conversion:
      header: x-conversion
    seed: 42
"
    )
}

/// Runs the demo and writes `run.json` and `report.html` into `out`.
pub async fn run(
    out: &Path,
    analytics: &Analytics,
    progress: &mut Progress,
) -> Result<DemoOutcome, DemoError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut urls = Vec::new();
    let mut servers = Vec::new();
    for (i, (name, latency_ms, error_rate, conversion_rate)) in PROFILES.iter().enumerate() {
        let fail = |message: String| DemoError::Sample {
            version: (*name).to_string(),
            message,
        };
        let app = App::new(Config {
            version: (*name).to_string(),
            latency_ms: *latency_ms,
            latency_sigma: 0.4,
            error_rate: *error_rate,
            conversion_rate: *conversion_rate,
            seed: 1000 + i as u64,
            ..Config::default()
        })
        .map_err(|e| fail(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| fail(e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        urls.push(format!("http://{addr}/"));
        let mut stopped = stopped.clone();
        servers.push(tokio::spawn(iter8_sample_app::serve(
            listener,
            app,
            async move {
                // Ends when the demo signals or drops the sender.
                let _ = stopped.wait_for(|s| *s).await;
            },
        )));
    }
    progress.say(&format!(
        "demo: sample versions {} on {}",
        PROFILES.map(|p| p.0).join(", "),
        urls.join(", ")
    ));
    let experiment = spec::parse("demo.yaml", &experiment_yaml(&urls), "iter8-demo")?;
    let result = local::run(&experiment, analytics, progress).await;
    // The servers stop whatever the outcome.
    let _ = stop.send(true);
    for s in servers {
        let _ = s.await;
    }
    let run = result?;
    let write = |name: &str, text: String| -> Result<PathBuf, DemoError> {
        let path = out.join(name);
        std::fs::create_dir_all(out)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| DemoError::Write {
                path: path.clone(),
                message: e.to_string(),
            })?;
        Ok(path)
    };
    let json = write(
        "run.json",
        report::render(&run, report::Format::Json).map_err(|e| DemoError::Write {
            path: out.join("run.json"),
            message: e.to_string(),
        })?,
    )?;
    let html = write("report.html", report::html::render(&run))?;
    Ok(DemoOutcome { run, json, html })
}
