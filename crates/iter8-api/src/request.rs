//! The body of `POST /v1/assessments`: versions, criteria, strategy and cumulative observations.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::evidence::Evidence;
use crate::limits::{MAX_HISTORY, MAX_NAME_LEN, MAX_VERSIONS};

pub use crate::observation::{
    Bucket, BucketBound, HistogramObservation, InfinityLiteral, MeanObservation, Observation,
    Quantile, Target,
};

/// One iteration's question to the analytics service.
///
/// The service is stateless: every request carries the cumulative observations since the start
/// of the experiment, so the same request always gives the same answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssessmentRequest {
    /// What kind of experiment this is; it decides what a winner means.
    pub kind: ExperimentKind,
    /// The iteration being assessed, counted from 1.
    #[schemars(range(min = 1))]
    pub iteration: u32,
    /// The iteration before which no version is promoted (default 1).
    #[serde(default = "default_min_iterations")]
    #[schemars(range(min = 1))]
    pub min_iterations: u32,
    /// The last iteration; an experiment still undecided here ends `inconclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    /// The versions: the first is the baseline, the rest are candidates.
    #[schemars(length(min = 1, max = MAX_VERSIONS))]
    pub versions: Vec<Version>,
    /// Metrics derived from the observed ones (ratios such as an error rate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<RatioMetric>,
    /// What the versions must satisfy and what they compete on.
    #[serde(default)]
    pub criteria: Criteria,
    /// How traffic moves between versions and when a winner is declared.
    #[serde(default)]
    pub strategy: Strategy,
    /// The evidence returned with the previous iteration's answer, sent back unchanged;
    /// absent at the first iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

fn default_min_iterations() -> u32 {
    1
}

/// The four kinds of experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExperimentKind {
    /// One version, checked against the criteria.
    PerformanceTest,
    /// A baseline and one candidate; the candidate wins when it meets the criteria.
    Canary,
    /// A baseline and one candidate competing on a reward.
    #[serde(rename = "ab")]
    AB,
    /// A baseline and several candidates competing on a reward.
    #[serde(rename = "abn")]
    ABn,
}

/// One version of the service and what has been observed of it so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Version {
    /// The version's name, unique in the experiment.
    #[schemars(length(min = 1, max = MAX_NAME_LEN))]
    pub name: String,
    /// The share of traffic (integer percent) this version has now.
    #[schemars(range(max = 100))]
    pub weight: u32,
    /// Cumulative observations since the start of the experiment, by metric name.
    #[serde(default)]
    pub metrics: BTreeMap<String, Observation>,
    /// Earlier cumulative snapshots, oldest first. Kept for compatibility: when `evidence` is
    /// absent, the engine folds them into evidence as if each had been an iteration. Shipped
    /// clients send `evidence` instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_HISTORY))]
    pub history: Vec<Snapshot>,
}

/// The cumulative observations of one version at an earlier iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// The iteration the snapshot was taken at.
    pub iteration: u32,
    /// The version's weight during that iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub weight: Option<u32>,
    /// Cumulative observations at that iteration, by metric name.
    pub metrics: BTreeMap<String, Observation>,
}

/// A metric computed as the ratio of two counters, with a rate in [0, 1]
/// (errors per request, conversions per user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatioMetric {
    /// The name criteria use for this metric.
    pub name: String,
    /// The counter of events (for example errors).
    pub numerator: String,
    /// The counter of trials (for example requests).
    pub denominator: String,
}

/// What the versions must satisfy, and what they compete on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Criteria {
    /// Absolute limits every version must meet (service-level objectives).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<Objective>,
    /// Limits relative to the baseline, which candidates must meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relative_objectives: Vec<RelativeObjective>,
    /// Metrics the versions compete on; the first one ranks them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewards: Vec<Reward>,
}

/// An absolute limit on a metric: `lowerLimit <= value <= upperLimit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Objective {
    /// The metric's name: an observed metric or a ratio.
    pub metric: String,
    /// For a histogram metric: the quantile, as a fraction (0.95 for p95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<Quantile>,
    /// The value must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_limit: Option<f64>,
    /// The value must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_limit: Option<f64>,
}

/// A limit relative to the baseline: a candidate may be at most `maxDegradation` worse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelativeObjective {
    /// The metric's name: an observed metric or a ratio.
    pub metric: String,
    /// For a histogram metric: the quantile, as a fraction (0.95 for p95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<Quantile>,
    /// Which direction is better for this metric.
    pub preferred_direction: Direction,
    /// The largest tolerated degradation, as a fraction of the baseline (0.1 = 10 % worse).
    pub max_degradation: f64,
}

/// A metric the versions compete on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reward {
    /// The metric's name: an observed metric or a ratio.
    pub metric: String,
    /// For a histogram metric: the quantile, as a fraction (0.95 for p95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<Quantile>,
    /// Whether more or less of it is better.
    pub preferred_direction: Direction,
}

/// Whether larger or smaller values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Larger is better (conversions).
    Higher,
    /// Smaller is better (latency, errors).
    Lower,
}

/// How traffic moves and when a winner is declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// The traffic algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The most traffic (percent) any candidate may get; with `fixed_thresholds`, the weight
    /// at which its ramp stops and a passing check promotes. Absent, each algorithm's default:
    /// 50 for `fixed_thresholds` (the baseline keeps half the traffic until promotion), 100
    /// (no cap) for the others. An explicit value, 100 included, is honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_candidate_weight: Option<u32>,
    /// The most a candidate's weight may grow in one iteration (percentage points); also the
    /// step of `check_and_increment`.
    #[serde(default = "default_max_candidate_weight_increment")]
    #[schemars(range(min = 1, max = 100))]
    pub max_candidate_weight_increment: u32,
    /// Traffic (percent) spread evenly over all versions so that none is starved of data.
    #[serde(default = "default_exploration_weight")]
    #[schemars(range(min = 0, max = 50))]
    pub exploration_weight: u32,
    /// The posterior probability a version needs to be declared winner (or a candidate to be
    /// declared failing).
    #[serde(default = "default_winner_probability")]
    #[schemars(range(min = 0.5, max = 0.9999999))]
    pub winner_probability: f64,
    /// The weights used by `fixed_split`, one per version in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Vec<u32>>,
    /// Monte-Carlo draws from the joint posterior.
    #[serde(default = "default_draws")]
    #[schemars(range(min = 100, max = 200_000))]
    pub draws: u32,
    /// Seed of the Monte-Carlo stream; by default it is derived from the request itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The error rate of the anytime-valid tests of `safe`: the chance of promoting a version
    /// that is not better than the baseline, however often the experiment is assessed and
    /// however many candidates there are (each of `K` candidates is confirmed at `alpha / K`).
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.0001, max = 0.5))]
    pub alpha: f64,
    /// Failed interval checks after which `fixed_thresholds` rolls back.
    #[serde(default = "default_max_failed_checks")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_failed_checks: u32,
}

fn default_max_candidate_weight_increment() -> u32 {
    10
}
fn default_exploration_weight() -> u32 {
    10
}
fn default_winner_probability() -> f64 {
    0.95
}
fn default_draws() -> u32 {
    10_000
}
fn default_alpha() -> f64 {
    0.05
}
fn default_max_failed_checks() -> u32 {
    5
}

impl Strategy {
    /// `maxCandidateWeight` as it applies: the value given, or the algorithm's default
    /// ([`Algorithm::default_max_candidate_weight`]).
    pub fn candidate_weight_limit(&self) -> u32 {
        self.max_candidate_weight
            .unwrap_or_else(|| self.algorithm.default_max_candidate_weight())
    }
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::default(),
            max_candidate_weight: None,
            max_candidate_weight_increment: default_max_candidate_weight_increment(),
            exploration_weight: default_exploration_weight(),
            winner_probability: default_winner_probability(),
            split: None,
            draws: default_draws(),
            seed: None,
            alpha: default_alpha(),
            max_failed_checks: default_max_failed_checks(),
        }
    }
}

/// The traffic algorithms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Top-two allocation on P(best feasible version) with caps and floors, anytime-valid
    /// guards that remove violating versions, and promotion confirmed by a sequential test.
    #[default]
    Safe,
    /// Posterior routing to the single best version (iter8's `progressive`).
    Progressive,
    /// Posterior routing to the two best versions (iter8's `top_2`).
    #[serde(rename = "top_2")]
    Top2,
    /// An even split over all versions.
    Uniform,
    /// A fixed step to the candidate while it meets the criteria (iter8 v0).
    CheckAndIncrement,
    /// Decaying epsilon-greedy between baseline and candidate (iter8 v0).
    EpsilonTGreedy,
    /// The split given in `strategy.split`, unchanged.
    FixedSplit,
    /// Flagger/Argo Rollouts: per-interval threshold checks on point values, a step ramp,
    /// promotion at the maximum weight (`maxCandidateWeight`, 50 when absent), rollback
    /// after `maxFailedChecks` failed checks.
    FixedThresholds,
    /// Kayenta: Mann-Whitney tests with Hodges-Lehmann intervals on per-interval values,
    /// scored at the end of each half of the canary lifetime: `minIterations` when it is at
    /// least 8, else `maxIterations` up to 24 (never under 8). It needs `maxIterations` of at
    /// least 8 and `minIterations` of at most 32 (the intervals the evidence keeps).
    MannWhitney,
}

impl Algorithm {
    /// Every algorithm, for listings and tests.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Safe,
        Algorithm::Progressive,
        Algorithm::Top2,
        Algorithm::Uniform,
        Algorithm::CheckAndIncrement,
        Algorithm::EpsilonTGreedy,
        Algorithm::FixedSplit,
        Algorithm::FixedThresholds,
        Algorithm::MannWhitney,
    ];

    /// `maxCandidateWeight` when the request leaves it out: 50 for `fixed_thresholds`
    /// (Flagger's usual `maxWeight`: a candidate that breaks a criterion never gets most of
    /// the traffic before its checks promote it), 100 (no cap) for every other algorithm.
    pub fn default_max_candidate_weight(self) -> u32 {
        match self {
            Algorithm::FixedThresholds => 50,
            _ => 100,
        }
    }

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Safe => "safe",
            Algorithm::Progressive => "progressive",
            Algorithm::Top2 => "top_2",
            Algorithm::Uniform => "uniform",
            Algorithm::CheckAndIncrement => "check_and_increment",
            Algorithm::EpsilonTGreedy => "epsilon_t_greedy",
            Algorithm::FixedSplit => "fixed_split",
            Algorithm::FixedThresholds => "fixed_thresholds",
            Algorithm::MannWhitney => "mann_whitney",
        }
    }
}

/// Criteria that name a metric and, for histograms, a quantile.
pub trait Targeted {
    /// The metric and quantile this criterion is about.
    fn target(&self) -> Target;
}

macro_rules! targeted {
    ($($t:ty),*) => {$(
        impl Targeted for $t {
            fn target(&self) -> Target {
                Target { metric: self.metric.clone(), quantile: self.quantile }
            }
        }
    )*};
}
targeted!(Objective, RelativeObjective, Reward);
