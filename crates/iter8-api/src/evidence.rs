//! What the engine carries from one iteration to the next: [`Evidence`].
//!
//! The analytics service is stateless. Each answer returns the evidence its assessment rests
//! on, and the next request sends it back unchanged (`AssessmentRequest.evidence`); the engine
//! folds that iteration's cumulative observations into it. Its size is bounded whatever the
//! experiment's length: running sufficient statistics over the whole life, the last cumulative
//! observation of each metric, and a window of the most recent intervals.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::observation::{Observation, Target};

/// The most recent intervals the evidence keeps per version (for per-interval judges, the
/// sample-ratio check).
pub const RECENT_INTERVALS: usize = 32;

/// Everything the engine needs from earlier iterations, for the experiment's whole life.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The last iteration folded in; the next request must be for a later one.
    pub iteration: u32,
    /// The targets whose per-interval values `versions[].recent[].values` hold, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Per version, in the request's version order.
    #[serde(default)]
    pub versions: Vec<VersionEvidence>,
    /// The iteration at which the one fixed-horizon look of the reward was taken, if it was:
    /// it is taken once, not on every retried attempt of the last iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_look: Option<u32>,
}

/// The evidence about one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionEvidence {
    /// The version's name, as in the request.
    pub name: String,
    /// The latest cumulative observation of each metric: the next one is differenced
    /// against it, and a drop below it is a counter reset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last: BTreeMap<String, Observation>,
    /// Running statistics of the per-interval batches of each mean metric, for the spread of
    /// means that come without a sum of squares.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batches: BTreeMap<String, BatchStats>,
    /// The most recent intervals, oldest first (at most [`RECENT_INTERVALS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<IntervalSummary>,
    /// Interval checks of `fixed_thresholds` that failed, over the whole life.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_checks: u32,
    /// The latest iteration at which a cumulative metric went backwards (a counter reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<u32>,
    /// Why the version was removed for good (shown to break a criterion), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Running sums over the per-interval batches `(s_i, c_i)` of a mean metric (sum and count
/// of the values in interval `i`), shifted by `reference` for numerical stability:
/// `d_i = s_i - c_i * reference`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchStats {
    /// The number of batches (intervals with data).
    pub batches: u32,
    /// The shift: the first batch's mean.
    pub reference: f64,
    /// The sum of `d_i`.
    pub sum: f64,
    /// The sum of `c_i`.
    pub count: f64,
    /// The sum of `d_i^2`.
    pub sum_sq: f64,
    /// The sum of `d_i * c_i`.
    pub cross: f64,
    /// The sum of `c_i^2`.
    pub count_sq: f64,
}

/// What one interval observed of one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntervalSummary {
    /// The iteration that ended the interval.
    pub iteration: u32,
    /// The version's weight while the interval was served, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The traffic the version saw in the interval, when it has a traffic metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<f64>,
    /// The interval's value of each of `Evidence.targets`; `null` without data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Option<f64>>,
    /// Whether the interval's values met every criterion (`fixed_thresholds`' check);
    /// absent when the version had no traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<bool>,
}

impl VersionEvidence {
    /// An empty record for a version named `name`.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }
}
