//! What the load generator measured of one version, and its translation into the cumulative
//! observations of the analytics API under the built-in metric names.

use std::collections::BTreeMap;

use iter8_api::{
    Bucket, BucketBound, HistogramObservation, InfinityLiteral, MeanObservation, Observation,
};
use serde::{Deserialize, Serialize};

/// Built-in metric: every request sent (a counter).
pub const REQUESTS: &str = "requests";
/// Built-in metric: 5xx answers, timeouts and connection errors (a counter).
pub const ERRORS: &str = "errors";
/// Built-in metric: successful answers recognised as conversions (a counter).
pub const CONVERSIONS: &str = "conversions";
/// Built-in metric: the latency of answered requests, in milliseconds (a histogram).
pub const LATENCY: &str = "latency";
/// Built-in metric: the mean latency of answered requests, in milliseconds (a mean).
pub const MEAN_LATENCY: &str = "mean-latency";
/// Built-in ratio: errors per request.
pub const ERROR_RATE: &str = "error-rate";
/// Built-in ratio: conversions per request.
pub const CONVERSION_RATE: &str = "conversion-rate";

/// Every metric name local mode provides, observed and derived.
pub const BUILT_IN_METRICS: [&str; 7] = [
    REQUESTS,
    ERRORS,
    CONVERSIONS,
    LATENCY,
    MEAN_LATENCY,
    ERROR_RATE,
    CONVERSION_RATE,
];

/// The default latency bucket bounds, in milliseconds.
pub const DEFAULT_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// An HTTP answer: its latency, whether it is an error (5xx) and whether it converted.
    Answered {
        /// Time to the full response, in milliseconds.
        latency_ms: f64,
        /// A 5xx status.
        error: bool,
        /// Recognised as a conversion.
        conversion: bool,
    },
    /// No answer within the per-request timeout.
    TimedOut,
    /// The connection failed.
    Failed,
}

/// Cumulative measurements of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionStats {
    /// Requests sent.
    pub requests: u64,
    /// 5xx answers, timeouts and connection errors.
    pub errors: u64,
    /// Of which timeouts.
    pub timeouts: u64,
    /// Conversions.
    pub conversions: u64,
    /// Upper bounds of the latency buckets, in milliseconds.
    pub bounds_ms: Vec<f64>,
    /// Answers per bucket (not cumulative); one more than `bounds_ms`, the last for `+Inf`.
    pub bucket_counts: Vec<u64>,
    /// The sum of the answered requests' latencies, in milliseconds.
    pub latency_sum_ms: f64,
    /// The sum of their squares.
    pub latency_sum_sq: f64,
}

impl VersionStats {
    /// Empty statistics over these bucket bounds.
    pub fn new(bounds_ms: &[f64]) -> Self {
        Self {
            requests: 0,
            errors: 0,
            timeouts: 0,
            conversions: 0,
            bounds_ms: bounds_ms.to_vec(),
            bucket_counts: vec![0; bounds_ms.len() + 1],
            latency_sum_ms: 0.0,
            latency_sum_sq: 0.0,
        }
    }

    /// Counts one request's outcome.
    pub fn record(&mut self, outcome: Outcome) {
        self.requests += 1;
        match outcome {
            Outcome::Answered {
                latency_ms,
                error,
                conversion,
            } => {
                let bucket = self.bounds_ms.partition_point(|&b| b < latency_ms);
                self.bucket_counts[bucket] += 1;
                self.latency_sum_ms += latency_ms;
                self.latency_sum_sq += latency_ms * latency_ms;
                self.errors += u64::from(error);
                self.conversions += u64::from(conversion && !error);
            }
            Outcome::TimedOut => {
                self.errors += 1;
                self.timeouts += 1;
            }
            Outcome::Failed => self.errors += 1,
        }
    }

    /// Requests that got an HTTP answer.
    pub fn answered(&self) -> u64 {
        self.bucket_counts.iter().sum()
    }

    /// The mean latency of answered requests, in milliseconds.
    pub fn mean_latency_ms(&self) -> Option<f64> {
        let n = self.answered();
        (n > 0).then(|| self.latency_sum_ms / n as f64)
    }

    /// The `q` quantile of the latency, interpolated linearly inside its bucket (the way
    /// Prometheus' `histogram_quantile` does); `None` without answers.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.answered();
        if n == 0 {
            return None;
        }
        let rank = q * n as f64;
        let mut below = 0.0;
        for (i, &count) in self.bucket_counts.iter().enumerate() {
            let count = count as f64;
            if below + count >= rank && count > 0.0 {
                let lower = if i == 0 { 0.0 } else { self.bounds_ms[i - 1] };
                let Some(&upper) = self.bounds_ms.get(i) else {
                    return Some(lower);
                };
                return Some(lower + (upper - lower) * (rank - below) / count);
            }
            below += count;
        }
        self.bounds_ms.last().copied()
    }

    /// The cumulative observations under the built-in names: counters `requests`, `errors`
    /// and `conversions`, the histogram `latency` and the mean `mean-latency`.
    pub fn observations(&self) -> BTreeMap<String, Observation> {
        let mut cumulative = 0u64;
        let mut buckets: Vec<Bucket> = self
            .bounds_ms
            .iter()
            .zip(&self.bucket_counts)
            .map(|(&le, &count)| {
                cumulative += count;
                Bucket {
                    le: BucketBound::Finite(le),
                    count: cumulative as f64,
                }
            })
            .collect();
        buckets.push(Bucket {
            le: BucketBound::Infinite(InfinityLiteral::PlusInf),
            count: self.answered() as f64,
        });
        BTreeMap::from([
            (REQUESTS.into(), Observation::Counter(self.requests as f64)),
            (ERRORS.into(), Observation::Counter(self.errors as f64)),
            (
                CONVERSIONS.into(),
                Observation::Counter(self.conversions as f64),
            ),
            (
                LATENCY.into(),
                Observation::Histogram(HistogramObservation {
                    buckets,
                    sum: Some(self.latency_sum_ms),
                }),
            ),
            (
                MEAN_LATENCY.into(),
                Observation::Mean(MeanObservation {
                    sum: self.latency_sum_ms,
                    count: self.answered() as f64,
                    sum_of_squares: Some(self.latency_sum_sq),
                }),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(latency_ms: f64) -> Outcome {
        Outcome::Answered {
            latency_ms,
            error: false,
            conversion: false,
        }
    }

    #[test]
    fn a_latency_on_a_bound_falls_in_that_bucket() {
        let mut s = VersionStats::new(&[1.0, 5.0, 10.0]);
        for ms in [0.2, 1.0, 1.01, 5.0, 9.9, 10.0, 10.5, 400.0] {
            s.record(answered(ms));
        }
        assert_eq!(s.bucket_counts, vec![2, 2, 2, 2]);
        assert_eq!(s.answered(), 8);
    }

    #[test]
    fn observations_are_cumulative_prometheus_buckets_ending_in_inf() {
        let mut s = VersionStats::new(&[1.0, 5.0]);
        for ms in [0.5, 2.0, 3.0, 7.0] {
            s.record(answered(ms));
        }
        s.record(Outcome::TimedOut);
        let obs = s.observations();
        let Some(Observation::Histogram(h)) = obs.get(LATENCY) else {
            panic!("latency is a histogram: {obs:?}");
        };
        let counts: Vec<f64> = h.buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![1.0, 3.0, 4.0]);
        assert_eq!(h.buckets[2].le.value(), f64::INFINITY);
        assert_eq!(h.sum, Some(12.5));
        assert_eq!(obs.get(REQUESTS), Some(&Observation::Counter(5.0)));
        assert_eq!(obs.get(ERRORS), Some(&Observation::Counter(1.0)));
        assert_eq!(
            obs.get(MEAN_LATENCY),
            Some(&Observation::Mean(MeanObservation {
                sum: 12.5,
                count: 4.0,
                sum_of_squares: Some(0.25 + 4.0 + 9.0 + 49.0),
            }))
        );
    }

    #[test]
    fn errors_count_5xx_timeouts_and_connection_failures_but_never_convert() {
        let mut s = VersionStats::new(DEFAULT_BUCKETS_MS);
        s.record(Outcome::Answered {
            latency_ms: 3.0,
            error: true,
            conversion: true,
        });
        s.record(Outcome::TimedOut);
        s.record(Outcome::Failed);
        s.record(Outcome::Answered {
            latency_ms: 3.0,
            error: false,
            conversion: true,
        });
        assert_eq!(
            (s.requests, s.errors, s.timeouts, s.conversions),
            (4, 3, 1, 1)
        );
        assert_eq!(s.answered(), 2);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut s = VersionStats::new(&[10.0, 20.0]);
        for _ in 0..50 {
            s.record(answered(5.0));
        }
        for _ in 0..50 {
            s.record(answered(15.0));
        }
        assert_eq!(s.latency_quantile_ms(0.5), Some(10.0));
        assert_eq!(s.latency_quantile_ms(0.75), Some(15.0));
        assert_eq!(VersionStats::new(&[1.0]).latency_quantile_ms(0.5), None);
    }
}
