//! Data-quality checks that turn raw numbers into observations, or into
//! [`MetricsError::NoData`] when the numbers cannot be trusted.

use iter8_api::{
    Bucket, BucketBound, HistogramObservation, InfinityLiteral, MeanObservation, Observation,
};

use crate::MetricsError;

/// Relative tolerance for a cumulative bucket that is smaller than the one before it.
///
/// `increase()` extrapolates each bucket series on its own, so neighbouring buckets can differ
/// by a little in the wrong direction; such dips are smoothed. Larger ones mean a counter reset
/// or series of different targets mixed up, and are refused.
pub const BUCKET_DIP_TOLERANCE: f64 = 0.01;

pub(crate) fn no_data(metric: &str, reason: impl Into<String>) -> MetricsError {
    MetricsError::NoData {
        metric: metric.to_owned(),
        reason: reason.into(),
    }
}

pub(crate) fn invalid(metric: &str, reason: impl Into<String>) -> MetricsError {
    MetricsError::Invalid {
        metric: metric.to_owned(),
        reason: reason.into(),
    }
}

pub(crate) fn unavailable(metric: &str, reason: impl Into<String>) -> MetricsError {
    MetricsError::Unavailable {
        metric: metric.to_owned(),
        reason: reason.into(),
    }
}

/// A count or sum must be a finite, non-negative number.
pub fn check_value(metric: &str, what: &str, value: f64) -> Result<f64, MetricsError> {
    if value.is_nan() {
        return Err(no_data(metric, format!("{what} is NaN")));
    }
    if value.is_infinite() {
        return Err(no_data(metric, format!("{what} is infinite")));
    }
    if value < 0.0 {
        return Err(no_data(
            metric,
            format!("{what} is negative ({value}): a counter reset or a query without increase()"),
        ));
    }
    Ok(value)
}

/// A counter observation.
pub fn counter(metric: &str, value: f64) -> Result<Observation, MetricsError> {
    Ok(Observation::Counter(check_value(
        metric,
        "the count",
        value,
    )?))
}

/// A mean observation; a zero count means nothing was observed yet.
pub fn mean(metric: &str, sum: f64, count: f64) -> Result<Observation, MetricsError> {
    let sum = check_value(metric, "the sum", sum)?;
    let count = check_value(metric, "the count", count)?;
    if count == 0.0 {
        return Err(no_data(metric, "the count is zero: no values observed yet"));
    }
    Ok(Observation::Mean(MeanObservation {
        sum,
        count,
        sum_of_squares: None,
    }))
}

/// Parses an `le` label value: a number, or `+Inf`.
pub fn parse_le(metric: &str, le: &str) -> Result<BucketBound, MetricsError> {
    let v: f64 = le
        .trim()
        .parse()
        .map_err(|_| invalid(metric, format!("bucket bound le=\"{le}\" is not a number")))?;
    if v == f64::INFINITY {
        Ok(BucketBound::Infinite(InfinityLiteral::PlusInf))
    } else if v.is_finite() {
        Ok(BucketBound::Finite(v))
    } else {
        Err(invalid(
            metric,
            format!("bucket bound le=\"{le}\" is not usable"),
        ))
    }
}

/// A histogram observation from `(le, cumulative count)` pairs in any order.
///
/// Buckets are sorted by bound (`+Inf` last). Duplicate bounds are refused (the query must
/// aggregate `by (le)`); NaN, infinite or negative counts, a bucket that dips by more than
/// [`BUCKET_DIP_TOLERANCE`] below the previous one, and an all-zero histogram are `NoData`.
pub fn histogram(
    metric: &str,
    mut buckets: Vec<(BucketBound, f64)>,
    sum: Option<f64>,
) -> Result<Observation, MetricsError> {
    if buckets.is_empty() {
        return Err(no_data(metric, "no histogram buckets"));
    }
    buckets.sort_by(|a, b| a.0.value().total_cmp(&b.0.value()));
    for pair in buckets.windows(2) {
        if pair[0].0.value() == pair[1].0.value() {
            return Err(invalid(
                metric,
                format!(
                    "two series for bucket le={}: aggregate the query with `sum by (le)`",
                    pair[0].0.value()
                ),
            ));
        }
    }
    let mut out = Vec::with_capacity(buckets.len());
    let mut previous: f64 = 0.0;
    for (le, count) in buckets {
        let count = check_value(metric, &format!("bucket le={}", le.value()), count)?;
        let count = if count < previous {
            if previous - count > BUCKET_DIP_TOLERANCE * previous + 1e-9 {
                return Err(no_data(
                    metric,
                    format!(
                        "cumulative buckets decrease at le={} ({count} < {previous}): a counter reset or mixed series",
                        le.value()
                    ),
                ));
            }
            previous
        } else {
            count
        };
        previous = count;
        out.push(Bucket { le, count });
    }
    if previous == 0.0 {
        return Err(no_data(metric, "the histogram has no observations yet"));
    }
    let sum = sum
        .map(|s| check_value(metric, "the histogram's sum", s))
        .transpose()?;
    Ok(Observation::Histogram(HistogramObservation {
        buckets: out,
        sum,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(v: f64) -> BucketBound {
        BucketBound::Finite(v)
    }
    const INF: BucketBound = BucketBound::Infinite(InfinityLiteral::PlusInf);

    fn is_no_data(r: &Result<Observation, MetricsError>) -> bool {
        matches!(r, Err(MetricsError::NoData { .. }))
    }

    #[test]
    fn nan_infinite_and_negative_counts_are_no_data() {
        assert!(is_no_data(&counter("m", f64::NAN)));
        assert!(is_no_data(&counter("m", f64::INFINITY)));
        assert!(is_no_data(&counter("m", -1.0)));
        assert_eq!(counter("m", 0.0), Ok(Observation::Counter(0.0)));
    }

    #[test]
    fn a_mean_with_zero_count_is_no_data() {
        assert!(is_no_data(&mean("m", 0.0, 0.0)));
        assert!(is_no_data(&mean("m", f64::NAN, 3.0)));
        assert!(matches!(
            mean("m", 6.0, 3.0),
            Ok(Observation::Mean(MeanObservation {
                sum: 6.0,
                count: 3.0,
                ..
            }))
        ));
    }

    #[test]
    fn buckets_are_sorted_with_inf_last() {
        let obs = histogram(
            "m",
            vec![(INF, 10.0), (fin(100.0), 7.0), (fin(5.0), 2.0)],
            Some(3.5),
        );
        let Ok(Observation::Histogram(h)) = obs else {
            panic!("expected a histogram, got {obs:?}");
        };
        let les: Vec<f64> = h.buckets.iter().map(|b| b.le.value()).collect();
        assert_eq!(les, vec![5.0, 100.0, f64::INFINITY]);
        assert_eq!(h.buckets[2].le, INF);
        assert_eq!(h.sum, Some(3.5));
    }

    #[test]
    fn duplicate_bounds_are_invalid() {
        let r = histogram("m", vec![(fin(1.0), 1.0), (fin(1.0), 2.0)], None);
        assert!(matches!(r, Err(MetricsError::Invalid { .. })));
    }

    #[test]
    fn small_dips_from_extrapolation_are_smoothed_large_ones_refused() {
        let Ok(Observation::Histogram(h)) = histogram(
            "m",
            vec![(fin(1.0), 100.0), (fin(2.0), 99.5), (INF, 120.0)],
            None,
        ) else {
            panic!("small dip should be smoothed");
        };
        assert_eq!(h.buckets[1].count, 100.0);
        let r = histogram("m", vec![(fin(1.0), 100.0), (fin(2.0), 50.0)], None);
        assert!(is_no_data(&r));
    }

    #[test]
    fn empty_or_all_zero_histograms_are_no_data() {
        assert!(is_no_data(&histogram("m", vec![], None)));
        assert!(is_no_data(&histogram(
            "m",
            vec![(fin(1.0), 0.0), (INF, 0.0)],
            None
        )));
        assert!(is_no_data(&histogram(
            "m",
            vec![(fin(1.0), f64::NAN), (INF, 1.0)],
            None
        )));
    }

    #[test]
    fn le_labels_parse_including_plus_inf() {
        assert_eq!(parse_le("m", "+Inf"), Ok(INF));
        assert_eq!(parse_le("m", "0.25"), Ok(fin(0.25)));
        assert!(matches!(
            parse_le("m", "abc"),
            Err(MetricsError::Invalid { .. })
        ));
        assert!(matches!(
            parse_le("m", "NaN"),
            Err(MetricsError::Invalid { .. })
        ));
    }
}
