//! What is observed of a metric (counter, mean, histogram) and what a criterion targets (a
//! metric, or a quantile of a histogram).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_BUCKETS, MAX_COUNT};

/// Cumulative data of one metric of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Observation {
    /// A count of events (requests, errors, conversions).
    Counter(f64),
    /// A sum and a count, whose ratio is a mean (for example mean latency).
    Mean(MeanObservation),
    /// A classic Prometheus histogram: cumulative `le` buckets.
    Histogram(HistogramObservation),
}

/// A sum of values and their count; optionally their sum of squares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeanObservation {
    /// The sum of the observed values.
    pub sum: f64,
    /// How many values were observed.
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub count: f64,
    /// The sum of the squared values, when the source has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_of_squares: Option<f64>,
}

/// Cumulative histogram buckets as Prometheus exposes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistogramObservation {
    /// Buckets in increasing order of `le`; the last one may be `+Inf`.
    #[schemars(length(min = 1, max = MAX_BUCKETS))]
    pub buckets: Vec<Bucket>,
    /// The sum of the observed values, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

/// One cumulative bucket: how many values were at most `le`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bucket {
    /// The bucket's upper bound, inclusive.
    pub le: BucketBound,
    /// The cumulative count of values at most `le`.
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub count: f64,
}

/// A bucket bound: a number, or `"+Inf"` for the last bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BucketBound {
    /// A finite upper bound.
    Finite(f64),
    /// The `"+Inf"` bound of the last bucket.
    Infinite(InfinityLiteral),
}

impl BucketBound {
    /// The bound as a float (`f64::INFINITY` for `+Inf`).
    pub fn value(self) -> f64 {
        match self {
            Self::Finite(v) => v,
            Self::Infinite(_) => f64::INFINITY,
        }
    }
}

/// The literal `"+Inf"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InfinityLiteral {
    /// Prometheus' spelling of infinity.
    #[serde(rename = "+Inf")]
    PlusInf,
}

/// The quantity a criterion is about: a metric, or a quantile of a histogram metric.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// The metric's name: an observed metric or a ratio.
    pub metric: String,
    /// For a histogram metric: the quantile, as a fraction (0.95 for p95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<Quantile>,
}

/// A quantile in (0, 1), kept as parts per million so targets can be compared exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Quantile(u32);

impl Quantile {
    /// The quantile as a fraction.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

impl TryFrom<f64> for Quantile {
    type Error = String;
    fn try_from(q: f64) -> Result<Self, Self::Error> {
        // The value is in (0, 1), so the rounded product fits in u32; it must stay strictly
        // inside after rounding to parts per million, or 0.9999996 would mean the maximum.
        let parts = (q * 1e6).round();
        if q.is_finite() && q > 0.0 && q < 1.0 && parts > 0.0 && parts < 1e6 {
            Ok(Self(parts as u32))
        } else {
            Err(format!(
                "quantile must be between 0 and 1 (exclusive) in steps of one millionth, got {q}"
            ))
        }
    }
}

impl From<Quantile> for f64 {
    fn from(q: Quantile) -> f64 {
        q.fraction()
    }
}

impl JsonSchema for Quantile {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantile".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A quantile as a fraction, strictly between 0 and 1 (0.95 for p95), \
                            in steps of one millionth: 0.000001 to 0.999999.",
            "type": "number",
            "minimum": 0.000001,
            "maximum": 0.999999
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.quantile {
            Some(q) => write!(f, "{}/p{}", self.metric, format_percent(q.fraction())),
            None => f.write_str(&self.metric),
        }
    }
}

fn format_percent(q: f64) -> String {
    let p = q * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round() as i64)
    } else {
        format!("{p}")
    }
}
