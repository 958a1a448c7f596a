//! The answer of `POST /v1/assessments`: assessments, winner, decision and the next split.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::evidence::Evidence;
use crate::request::{Algorithm, Quantile};

/// The analytics service's answer for one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssessmentResponse {
    /// The iteration that was assessed.
    pub iteration: u32,
    /// The algorithm that computed the split.
    pub algorithm: Algorithm,
    /// The seed of the Monte-Carlo stream, to reproduce this answer.
    pub seed: u64,
    /// One assessment per version, in request order.
    pub versions: Vec<VersionAssessment>,
    /// The version declared best, if one is sure enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<Winner>,
    /// What the experiment should do next, and why.
    pub decision: Decision,
    /// The recommended traffic split: integer percentages in version order, summing to 100.
    pub split: Vec<VersionWeight>,
    /// Things the caller should know about the data (too few samples, counter resets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// What the next request must carry as its `evidence`, unchanged.
    #[serde(default)]
    pub evidence: Evidence,
}

/// What is known about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionAssessment {
    /// The version's name.
    pub name: String,
    /// Estimates of every metric the criteria use.
    pub metrics: Vec<MetricEstimate>,
    /// The probability of meeting each criterion, in the order of the request's criteria.
    pub criteria: Vec<CriterionAssessment>,
    /// The probability of meeting all criteria at once.
    pub probability_all_criteria: f64,
    /// The probability of a better reward than the baseline (candidates with a reward only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability_beats_baseline: Option<f64>,
    /// The probability of being the best version that meets all criteria.
    pub win_probability: f64,
}

/// A metric's point estimate and 95 % credible interval for one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricEstimate {
    /// The metric's name.
    pub metric: String,
    /// The quantile, for histogram metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<Quantile>,
    /// The observed value; absent when there is no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The 95 % equal-tailed credible interval; absent when there is no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credible_interval: Option<Interval>,
    /// How many observations the estimate rests on.
    pub sample_size: f64,
}

/// A closed interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// The lower end.
    pub lower: f64,
    /// The upper end.
    pub upper: f64,
}

/// The probability that a version meets one criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CriterionAssessment {
    /// Where the criterion is in the request, e.g. `criteria.objectives[0]`.
    pub criterion: String,
    /// The criterion in words, e.g. `latency/p95 <= 500`.
    pub description: String,
    /// The posterior probability that the version meets it.
    pub probability: f64,
}

/// The version declared best.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Winner {
    /// The winning version's name.
    pub version: String,
    /// Its probability of being the best version that meets all criteria.
    pub probability: f64,
}

/// What the experiment should do next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The action.
    pub action: Action,
    /// The version promoted (for `promote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why, in words a person can act on.
    pub reason: String,
}

/// The actions an iteration can end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Keep going with the recommended split.
    Continue,
    /// End the experiment with all traffic on the named version. For a performance test,
    /// the version passed.
    Promote,
    /// End the experiment with all traffic on the baseline. For a performance test, the
    /// version failed.
    Rollback,
    /// The experiment reached its last iteration without a confident answer.
    Inconclusive,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.action, &self.version) {
            (Action::Promote, Some(v)) => write!(f, "promote {v}"),
            (Action::Continue, _) => f.write_str("continue"),
            (Action::Promote, None) => f.write_str("promote"),
            (Action::Rollback, _) => f.write_str("rollback"),
            (Action::Inconclusive, _) => f.write_str("inconclusive"),
        }
    }
}

/// A version's share of traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionWeight {
    /// The version's name.
    pub version: String,
    /// Its share, in integer percent.
    pub weight: u32,
}

/// Something about the data the caller should know; never a reason to fail the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// The field of the request the warning is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What happened and what it means.
    pub message: String,
}
