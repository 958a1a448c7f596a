//! The local experiment loop: generate load by the current split, assess every iteration,
//! apply the returned split, stop on the engine's decision.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use iter8_api::{Action, Observation};
use iter8_crd::Ledger;

use crate::analytics::{Analytics, AnalyticsError};
use crate::load::{Conversion, LoadConfig, LoadError, LoadGenerator};
use crate::progress::Progress;
use crate::record::{IterationRecord, LoadSummary, RUN_FORMAT, RunOutcome, RunRecord};
use crate::spec::LocalExperiment;
use crate::stats::VersionStats;

/// How often the live status line is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// Why a run stopped before a decision.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The load generator could not start.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The analytics gave no answer.
    #[error("iteration {iteration}: {source}")]
    Analytics {
        /// The iteration.
        iteration: u32,
        /// Why.
        source: AnalyticsError,
    },
    /// The spec allows no iteration.
    #[error("spec.duration.maxIterations is 0: nothing to run")]
    NoIterations,
}

/// Runs the experiment to its decision and returns the record of the run.
pub async fn run(
    experiment: &LocalExperiment,
    analytics: &Analytics,
    progress: &mut Progress,
) -> Result<RunRecord, RunError> {
    let spec = &experiment.spec;
    let names: Vec<&str> = spec.versions.iter().map(|v| v.name.as_str()).collect();
    let max = spec.duration.max_iterations;
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let started = Instant::now();
    let mut ledger = Ledger::start(spec);
    let generator = LoadGenerator::start(load_config(experiment), &ledger.weights)?;
    progress.say(&format!(
        "experiment {} ({:?}, {} versions, analytics {}): up to {max} iterations",
        experiment.name,
        spec.kind,
        names.len(),
        analytics.describe()
    ));
    let mut iterations: Vec<IterationRecord> = Vec::new();
    for iteration in 1..=max {
        let iteration_start = Instant::now();
        let completed_before = generator.completed();
        let wait = async {
            match experiment.load.requests_per_iteration {
                Some(n) => generator.run_requests(n).await,
                None => tokio::time::sleep(experiment.interval).await,
            }
        };
        tokio::pin!(wait);
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = &mut wait => break,
                _ = ticker.tick() => progress.tick(
                    iteration,
                    max,
                    generator.completed() - completed_before,
                    iteration_start.elapsed().as_secs_f64(),
                ),
            }
        }
        let stats = generator.snapshot();
        let observations: Vec<BTreeMap<String, Observation>> =
            stats.iter().map(VersionStats::observations).collect();
        let request = ledger.request(spec, observations);
        let asked = Instant::now();
        let response = analytics
            .assess(&request)
            .await
            .map_err(|source| RunError::Analytics { iteration, source })?;
        let record = IterationRecord {
            iteration,
            weights: ledger.weights.clone(),
            load: summaries(&names, &stats),
            elapsed_ms: started.elapsed().as_millis() as u64,
            assess_ms: asked.elapsed().as_millis() as u64,
            request,
            response,
        };
        progress.iteration(&names, &record, max);
        ledger = ledger.record(spec, &record.response);
        let action = record.response.decision.action;
        if action == Action::Continue {
            generator.set_weights(&ledger.weights);
        }
        iterations.push(record);
        if action != Action::Continue {
            break;
        }
    }
    let stats = generator.stop().await;
    let last = iterations.last().ok_or(RunError::NoIterations)?;
    let decision = last.response.decision.clone();
    let outcome = RunOutcome {
        // A terminal answer's final split is already in force; a run cut short while
        // continuing ends by the termination policy.
        final_weights: if decision.action == Action::Continue {
            spec.final_weights(&decision, &ledger.weights)
        } else {
            ledger.weights.clone()
        },
        winner: last.response.winner.clone(),
        decision,
        total_requests: stats.iter().map(|s| s.requests).sum(),
        wall_ms: started.elapsed().as_millis() as u64,
    };
    Ok(RunRecord {
        format: RUN_FORMAT.into(),
        name: experiment.name.clone(),
        spec: spec.clone(),
        analytics: analytics.describe(),
        started_at_ms,
        iterations,
        outcome,
    })
}

/// The load generator's configuration for an experiment (checked when the file was read).
pub fn load_config(experiment: &LocalExperiment) -> LoadConfig {
    let load = &experiment.load;
    let headers = load
        .headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    let conversion = load
        .conversion
        .as_ref()
        .map(|c| Conversion {
            header: c
                .header
                .as_ref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            json_field: c.json_field.clone(),
        })
        .unwrap_or_default();
    LoadConfig {
        urls: experiment.urls.clone(),
        concurrency: load.concurrency,
        rate: load.rate,
        method: hyper::Method::from_bytes(load.method.as_bytes()).unwrap_or(hyper::Method::GET),
        headers,
        body: Bytes::from(load.body.clone().unwrap_or_default()),
        timeout: experiment.timeout,
        conversion,
        buckets_ms: experiment.buckets_ms.clone(),
        seed: load.seed,
        counted: load.requests_per_iteration.is_some(),
    }
}

fn summaries(names: &[&str], stats: &[VersionStats]) -> Vec<LoadSummary> {
    names
        .iter()
        .zip(stats)
        .map(|(name, s)| LoadSummary {
            version: (*name).to_string(),
            requests: s.requests,
            errors: s.errors,
            timeouts: s.timeouts,
            conversions: s.conversions,
            mean_latency_ms: s.mean_latency_ms(),
            p50_latency_ms: s.latency_quantile_ms(0.5),
            p95_latency_ms: s.latency_quantile_ms(0.95),
        })
        .collect()
}
