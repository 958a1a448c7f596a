//! A finished local run as saved to JSON: the spec, every iteration's load summary, the
//! analytics request and response, the weights and the timings.

use iter8_api::{AssessmentRequest, AssessmentResponse, Decision, Winner};
use iter8_crd::ExperimentSpec;
use serde::{Deserialize, Serialize};

/// The format version of saved runs.
pub const RUN_FORMAT: &str = "iter8.tools/local-run/v1";

/// A whole local run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Always [`RUN_FORMAT`].
    pub format: String,
    /// The experiment's name.
    pub name: String,
    /// The spec that ran (with the built-in ratios added).
    pub spec: ExperimentSpec,
    /// Where the analytics came from: `in-process` or the service URL.
    pub analytics: String,
    /// When the run started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Every iteration, in order.
    pub iterations: Vec<IterationRecord>,
    /// How the run ended.
    pub outcome: RunOutcome,
}

/// One iteration of a local run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IterationRecord {
    /// The iteration number, from 1.
    pub iteration: u32,
    /// The split the load ran with during this iteration, in version order.
    pub weights: Vec<u32>,
    /// What the load generator measured per version, cumulatively, at the iteration's end.
    pub load: Vec<LoadSummary>,
    /// Milliseconds from the run's start to the iteration's end.
    pub elapsed_ms: u64,
    /// Milliseconds the analytics call took.
    pub assess_ms: u64,
    /// The question asked to the analytics.
    pub request: AssessmentRequest,
    /// Its answer.
    pub response: AssessmentResponse,
}

/// A version's cumulative load numbers, for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadSummary {
    /// The version.
    pub version: String,
    /// Requests sent.
    pub requests: u64,
    /// Errors (5xx, timeouts, connection errors).
    pub errors: u64,
    /// Of which timeouts.
    pub timeouts: u64,
    /// Conversions.
    pub conversions: u64,
    /// Mean latency of answered requests, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_latency_ms: Option<f64>,
    /// Median latency (from the histogram), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_latency_ms: Option<f64>,
    /// 95th percentile latency (from the histogram), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_ms: Option<f64>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    /// The last decision.
    pub decision: Decision,
    /// The winner, if one was declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<Winner>,
    /// The split left in place (by `spec.onTermination`).
    pub final_weights: Vec<u32>,
    /// Requests sent over the whole run.
    pub total_requests: u64,
    /// The run's wall time, in milliseconds.
    pub wall_ms: u64,
}

impl RunRecord {
    /// The version names, in order.
    pub fn version_names(&self) -> Vec<&str> {
        self.spec.versions.iter().map(|v| v.name.as_str()).collect()
    }

    /// The last iteration, if any ran.
    pub fn last(&self) -> Option<&IterationRecord> {
        self.iterations.last()
    }
}
