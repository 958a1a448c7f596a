//! The fold of one iteration into the evidence, and what is read back from it.
//!
//! A request carries cumulative observations now, and the evidence of the iterations before
//! (or, from older clients, cumulative snapshots in `versions[].history`, folded here the
//! same way as if each had been an iteration). The difference between this iteration's
//! cumulative observation and the evidence's last one is what this interval alone saw; it
//! feeds running statistics kept for the whole life (batch means of means), a bounded window
//! of recent per-interval values (per-interval judges, the sample-ratio check), and the
//! interval checks of `fixed_thresholds`. The fold is pure: the same request always gives the
//! same evidence, so a retried iteration gets the same answer.

use std::collections::{BTreeMap, BTreeSet};

use iter8_api::{
    AssessmentRequest, BatchStats, Bucket, Evidence, HistogramObservation, IntervalSummary,
    MeanObservation, Observation, RECENT_INTERVALS, RatioMetric, Target, VersionEvidence,
};

use crate::criteria::{Check, Criterion};
use crate::histogram::observed_quantile_of;

/// A cumulative count below this fraction of an earlier one is a reset or a wrong query.
/// Smaller dips are normal: Prometheus' `increase()` extrapolates to the edges of its window,
/// so the count of a version whose traffic slowed or stopped shrinks a little as the window
/// grows. A reset that the query does not bridge drops to about nothing.
const RESET_FRACTION: f64 = 0.5;

/// Iterations after a counter reset during which nothing is promoted: the cumulative data
/// then mixes two series, and the next intervals show whether the drop was a glitch.
pub const RESET_HOLD: u32 = 5;

/// A cumulative metric that went backwards while folding this request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reset {
    /// The version's index.
    pub version: usize,
    /// The metric.
    pub metric: String,
    /// The iteration of the earlier, larger value.
    pub since: u32,
    /// The earlier and the current size.
    pub sizes: (f64, f64),
}

/// One version's data at one iteration: the weight in force while the interval was served,
/// and the cumulative metrics.
type VersionPoint<'a> = (Option<u32>, &'a BTreeMap<String, Observation>);

/// One iteration's cumulative data of every version, as folded.
struct Point<'a> {
    iteration: u32,
    /// Per version: the weight in force while the interval was served, and the metrics;
    /// `None` for a version without a snapshot at this iteration (legacy history only).
    versions: Vec<Option<VersionPoint<'a>>>,
}

/// The evidence after this request's iteration: the request's evidence (or its legacy
/// history) with this iteration's cumulative observations folded in. `targets` and
/// `criteria` are the request's, compiled.
pub fn fold(
    req: &AssessmentRequest,
    targets: &[Target],
    criteria: &[Criterion],
) -> (Evidence, Vec<Reset>) {
    let mut resets = Vec::new();
    let mut evidence = match &req.evidence {
        Some(e) => retarget(e.clone(), targets),
        None => Evidence {
            iteration: 0,
            targets: targets.to_vec(),
            versions: req
                .versions
                .iter()
                .map(|v| VersionEvidence::named(&v.name))
                .collect(),
            final_look: None,
        },
    };
    let mut points = legacy_points(req);
    points.push(Point {
        iteration: req.iteration,
        versions: req
            .versions
            .iter()
            .map(|v| Some((Some(v.weight), &v.metrics)))
            .collect(),
    });
    for point in points {
        fold_point(&mut evidence, &point, &req.ratios, criteria, &mut resets);
    }
    // Only resets seen in this iteration are news; earlier ones are in `reset_at`.
    resets.retain(|r| evidence.versions[r.version].reset_at == Some(req.iteration));
    (evidence, resets)
}

/// The snapshots of `versions[].history`, grouped by iteration, oldest first.
fn legacy_points(req: &AssessmentRequest) -> Vec<Point<'_>> {
    let iterations: BTreeSet<u32> = req
        .versions
        .iter()
        .flat_map(|v| v.history.iter().map(|s| s.iteration))
        .filter(|&i| i < req.iteration)
        .collect();
    iterations
        .into_iter()
        .map(|iteration| Point {
            iteration,
            versions: req
                .versions
                .iter()
                .map(|v| {
                    v.history
                        .iter()
                        .find(|s| s.iteration == iteration)
                        .map(|s| (s.weight, &s.metrics))
                })
                .collect(),
        })
        .collect()
}

/// Re-orders the per-interval values of evidence made for other targets (criteria may have
/// changed between iterations); a target the evidence did not follow has no values.
fn retarget(mut e: Evidence, targets: &[Target]) -> Evidence {
    if e.targets == targets {
        return e;
    }
    let index: Vec<Option<usize>> = targets
        .iter()
        .map(|t| e.targets.iter().position(|x| x == t))
        .collect();
    for v in &mut e.versions {
        for r in &mut v.recent {
            r.values = index
                .iter()
                .map(|i| i.and_then(|i| r.values.get(i).copied().flatten()))
                .collect();
        }
    }
    e.targets = targets.to_vec();
    e
}

fn fold_point(
    e: &mut Evidence,
    point: &Point<'_>,
    ratios: &[RatioMetric],
    criteria: &[Criterion],
    resets: &mut Vec<Reset>,
) {
    let since = e.iteration;
    for (vi, (ev, data)) in e.versions.iter_mut().zip(&point.versions).enumerate() {
        let Some((weight, now)) = data else {
            continue;
        };
        let mut restarted = BTreeSet::new();
        for (name, past) in &ev.last {
            if let Some(current) = now.get(name)
                && size(current) < size(past) * RESET_FRACTION
            {
                ev.reset_at = Some(point.iteration);
                restarted.insert(name.clone());
                resets.push(Reset {
                    version: vi,
                    metric: name.clone(),
                    since,
                    sizes: (size(past), size(current)),
                });
            }
        }
        let before = &ev.last;
        let summary = IntervalSummary {
            iteration: point.iteration,
            weight: *weight,
            // A count that went backwards leaves the interval's traffic unknown, not negative.
            traffic: match (traffic(ratios, now), traffic(ratios, before)) {
                (Some(n), Some(b)) => finite(n - b).filter(|&d| d >= 0.0),
                (Some(n), None) if before.is_empty() => finite(n),
                _ => None,
            },
            values: e
                .targets
                .iter()
                .map(|t| interval_value(ratios, t, now, before).and_then(finite))
                .collect(),
            check: None,
        };
        for (name, o) in now.iter() {
            // After a reset the cumulative mean holds only what came since, so its batches
            // start again from it: a spread over the older batches would belong to more
            // data than the mean it is the error of, and be too small.
            let batch = if restarted.contains(name) {
                ev.batches.remove(name);
                Some(o.clone())
            } else {
                difference(o, before.get(name))
            };
            if let Some(Observation::Mean(m)) = batch
                && m.count > 0.0
                && m.sum.is_finite()
            {
                add_batch(ev.batches.entry(name.clone()).or_default(), m.sum, m.count);
            }
        }
        for (name, o) in now.iter() {
            ev.last.insert(name.clone(), o.clone());
        }
        ev.recent.push(summary);
        let excess = ev.recent.len().saturating_sub(RECENT_INTERVALS);
        ev.recent.drain(..excess);
    }
    e.iteration = point.iteration;
    check_interval(e, point.iteration, criteria);
}

/// `fixed_thresholds`' check of this interval for every candidate that had traffic: every
/// criterion met by the interval's own values (a limit relative to the baseline against the
/// baseline's value of the same interval); no data fails the check, as in Flagger.
fn check_interval(e: &mut Evidence, iteration: u32, criteria: &[Criterion]) {
    let value = |ev: &VersionEvidence, t: usize| -> Option<f64> {
        ev.recent
            .last()
            .filter(|r| r.iteration == iteration)
            .and_then(|r| r.values.get(t).copied().flatten())
    };
    let baseline: Vec<Option<f64>> = (0..e.targets.len())
        .map(|t| e.versions.first().and_then(|b| value(b, t)))
        .collect();
    for ev in e.versions.iter_mut().skip(1) {
        let Some(latest) = ev.recent.last().filter(|r| r.iteration == iteration) else {
            continue;
        };
        if latest.weight == Some(0) {
            continue;
        }
        let ok = criteria.iter().all(|c| {
            let t = c.check.target();
            match (value(ev, t), baseline[t], c.check) {
                (None, _, _) => false,
                (Some(x), _, Check::Absolute { .. }) => c.check.holds(x, f64::NAN, false),
                (Some(x), Some(b), Check::Relative { .. }) => c.check.holds(x, b, false),
                (Some(_), None, Check::Relative { .. }) => false,
            }
        });
        if let Some(latest) = ev.recent.last_mut() {
            latest.check = Some(ok);
        }
        if !ok {
            ev.failed_checks = ev.failed_checks.saturating_add(1);
        }
    }
}

/// Adds one batch; a batch whose sums would leave the range of f64 is left out (the evidence
/// is JSON, which has no infinity).
fn add_batch(b: &mut BatchStats, sum: f64, count: f64) {
    let reference = if b.batches == 0 {
        sum / count
    } else {
        b.reference
    };
    let d = sum - count * reference;
    let next = BatchStats {
        batches: b.batches.saturating_add(1),
        reference,
        sum: b.sum + d,
        count: b.count + count,
        sum_sq: b.sum_sq + d * d,
        cross: b.cross + d * count,
        count_sq: b.count_sq + count * count,
    };
    let fields = [
        next.reference,
        next.sum,
        next.count,
        next.sum_sq,
        next.cross,
        next.count_sq,
    ];
    if fields.iter().all(|x| x.is_finite()) {
        *b = next;
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Standard error of a mean from its per-interval batch means over the whole life (a
/// cluster-robust estimate), with the effective number of batches less one as degrees of
/// freedom; `None` with fewer than two batches.
///
/// Batches differ in size (a ramp, or a first batch holding everything before the ledger
/// existed). For independent values of variance s2, the spread below has expectation
/// `s2 * (C^2 - sum c_i^2) / C`, so dividing by `C^2 - sum c_i^2` is unbiased for `s2 / C`
/// whatever the sizes (with equal sizes it is the textbook `k / (k - 1) / C^2`). The degrees
/// of freedom are Kish's effective number of batches, `C^2 / sum c_i^2`, less one, never
/// more than `k - 1`: one dominant batch carries little information about the spread.
pub fn batch_means_error(b: &BatchStats) -> Option<(f64, f64)> {
    let k = f64::from(b.batches);
    if b.batches < 2 || b.count <= 0.0 || b.count_sq <= 0.0 {
        return None;
    }
    // sum over i of (s_i - c_i * mean)^2 = sum (d_i - c_i * delta)^2, delta = mean - reference.
    let delta = b.sum / b.count;
    let spread = (b.sum_sq - 2.0 * delta * b.cross + delta * delta * b.count_sq).max(0.0);
    let denominator = b.count * b.count - b.count_sq;
    if denominator <= 0.0 {
        return None;
    }
    let var = spread / denominator;
    let effective = (b.count * b.count / b.count_sq).min(k);
    Some((var.sqrt(), effective - 1.0))
}

/// The amount of data an observation holds, which never decreases in a cumulative series.
fn size(o: &Observation) -> f64 {
    match o {
        Observation::Counter(c) => *c,
        Observation::Mean(m) => m.count,
        Observation::Histogram(h) => h.buckets.last().map_or(0.0, |b| b.count),
    }
}

/// The amount of traffic a version saw: the denominator of the first ratio, else the count
/// of the first mean or histogram metric (in name order).
pub fn traffic(ratios: &[RatioMetric], metrics: &BTreeMap<String, Observation>) -> Option<f64> {
    if let Some(r) = ratios.first() {
        return match metrics.get(&r.denominator) {
            Some(Observation::Counter(c)) => Some(*c),
            _ => None,
        };
    }
    metrics.values().find_map(|o| match o {
        Observation::Mean(m) => Some(m.count),
        Observation::Histogram(h) => h.buckets.last().map(|b| b.count),
        Observation::Counter(_) => None,
    })
}

/// What one interval observed of one target of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// The iteration that ended the interval.
    pub iteration: u32,
    /// The version's weight during the interval, when known.
    pub weight: Option<u32>,
    /// The interval's point value; `None` when the interval saw no data of the target.
    pub value: Option<f64>,
}

/// The recent per-interval values of `target` for `version`, oldest first.
pub fn intervals(e: &Evidence, version: usize, target: &Target) -> Vec<Interval> {
    let t = e.targets.iter().position(|x| x == target);
    e.versions[version]
        .recent
        .iter()
        .map(|r| Interval {
            iteration: r.iteration,
            weight: r.weight,
            value: t.and_then(|t| r.values.get(t).copied().flatten()),
        })
        .collect()
}

/// The traffic a version saw in the latest interval and its weight then; `None` without a
/// traffic metric, without an earlier interval to difference against, or with a negative
/// traffic (a dipped count, as older engines recorded it: unknown, not less than none).
pub fn latest_traffic(e: &Evidence, version: usize) -> Option<(f64, u32)> {
    let [.., _, now] = e.versions[version].recent.as_slice() else {
        return None;
    };
    let traffic = now.traffic.filter(|t| *t >= 0.0)?;
    Some((traffic, now.weight.unwrap_or(0)))
}

/// Whether some version's weight in the latest interval differs from its weight in the
/// interval before (unknown weights count as a change).
pub fn split_just_changed(e: &Evidence) -> bool {
    e.versions.iter().any(|v| match v.recent.as_slice() {
        [.., before, now] => before.weight.is_none() || before.weight != now.weight,
        _ => true,
    })
}

fn interval_value(
    ratios: &[RatioMetric],
    target: &Target,
    now: &BTreeMap<String, Observation>,
    before: &BTreeMap<String, Observation>,
) -> Option<f64> {
    let delta = |name: &str| difference(now.get(name)?, before.get(name));
    if let Some(ratio) = ratios.iter().find(|r| r.name == target.metric) {
        return match (delta(&ratio.numerator)?, delta(&ratio.denominator)?) {
            (Observation::Counter(events), Observation::Counter(trials)) if trials > 0.0 => {
                Some(events / trials)
            }
            _ => None,
        };
    }
    match (delta(&target.metric)?, target.quantile) {
        (Observation::Mean(m), _) => (m.count > 0.0).then(|| m.sum / m.count),
        (Observation::Histogram(h), Some(q)) => observed_quantile_of(&h, q.fraction()),
        _ => None,
    }
}

/// What a cumulative metric observed since `before` (the whole of `now` without it): counts,
/// sums and bucket counts differenced, histogram buckets matched by their bound, never by
/// position. `None` when the metric went backwards (a counter reset: the interval is
/// unknown, not negative), changed kind, or has a bucket bound `before` lacks (its earlier
/// count is unknown).
pub fn difference(now: &Observation, before: Option<&Observation>) -> Option<Observation> {
    let Some(before) = before else {
        return Some(now.clone());
    };
    let non_negative = |x: f64| (x >= 0.0).then_some(x);
    match (now, before) {
        (Observation::Counter(n), Observation::Counter(b)) => {
            Some(Observation::Counter(non_negative(n - b)?))
        }
        (Observation::Mean(n), Observation::Mean(b)) => Some(Observation::Mean(MeanObservation {
            sum: n.sum - b.sum,
            count: non_negative(n.count - b.count)?,
            sum_of_squares: n
                .sum_of_squares
                .zip(b.sum_of_squares)
                .and_then(|(n, b)| non_negative(n - b)),
        })),
        (Observation::Histogram(n), Observation::Histogram(b)) => {
            let buckets = n
                .buckets
                .iter()
                .map(|bucket| {
                    let earlier = b
                        .buckets
                        .iter()
                        .find(|x| x.le.value() == bucket.le.value())?
                        .count;
                    Some(Bucket {
                        le: bucket.le,
                        count: non_negative(bucket.count - earlier)?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Observation::Histogram(HistogramObservation {
                buckets,
                sum: n.sum.zip(b.sum).map(|(n, b)| n - b),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn error_rate() -> Target {
        Target {
            metric: "error-rate".into(),
            quantile: None,
        }
    }

    fn histogram(buckets: &[(f64, f64)]) -> Observation {
        Observation::Histogram(HistogramObservation {
            buckets: buckets
                .iter()
                .map(|&(le, count)| Bucket {
                    le: if le.is_finite() {
                        iter8_api::BucketBound::Finite(le)
                    } else {
                        iter8_api::BucketBound::Infinite(iter8_api::InfinityLiteral::PlusInf)
                    },
                    count,
                })
                .collect(),
            sum: None,
        })
    }

    #[test]
    fn histogram_intervals_match_buckets_by_bound_not_position() {
        let inf = f64::INFINITY;
        // A bound dropped since: the others are still matched by their bound.
        let now = histogram(&[(100.0, 5.0), (inf, 10.0)]);
        let before = histogram(&[(100.0, 2.0), (200.0, 3.0), (inf, 4.0)]);
        assert_eq!(
            difference(&now, Some(&before)),
            Some(histogram(&[(100.0, 3.0), (inf, 6.0)]))
        );
        // Same length, different bounds: by position 200 would be differenced against 300.
        let now = histogram(&[(100.0, 5.0), (200.0, 8.0), (inf, 10.0)]);
        let before = histogram(&[(100.0, 2.0), (300.0, 3.0), (inf, 4.0)]);
        assert_eq!(difference(&now, Some(&before)), None);
        // A reset is an unknown interval, not a negative one.
        assert_eq!(
            difference(&Observation::Counter(3.0), Some(&Observation::Counter(9.0))),
            None
        );
    }

    #[test]
    fn intervals_are_differences_of_cumulative_snapshots() {
        let req: AssessmentRequest = serde_json::from_value(json!({
            "kind": "canary", "iteration": 3,
            "versions": [{"name": "a", "weight": 50,
                "metrics": {"requests": {"counter": 300.0}, "errors": {"counter": 9.0}},
                "history": [
                    {"iteration": 1, "weight": 90,
                     "metrics": {"requests": {"counter": 100.0}, "errors": {"counter": 1.0}}},
                    {"iteration": 2, "weight": 70,
                     "metrics": {"requests": {"counter": 200.0}, "errors": {"counter": 3.0}}}
                ]}],
            "ratios": [{"name": "error-rate", "numerator": "errors", "denominator": "requests"}]
        }))
        .expect("decodes");
        let (e, _) = fold(&req, &[error_rate()], &[]);
        let values: Vec<Option<f64>> = intervals(&e, 0, &error_rate())
            .iter()
            .map(|i| i.value)
            .collect();
        assert_eq!(values, vec![Some(0.01), Some(0.02), Some(0.06)]);
        assert_eq!(latest_traffic(&e, 0), Some((100.0, 50)));
        // A negative traffic, as engines before 2026-12-01 recorded a dipped count: unknown.
        let mut old = e.clone();
        if let Some(last) = old.versions[0].recent.last_mut() {
            last.traffic = Some(-0.11);
        }
        assert_eq!(latest_traffic(&old, 0), None);
    }

    #[test]
    fn folding_evidence_iteration_by_iteration_equals_folding_the_whole_history() {
        let at = |k: u32| {
            json!({"requests": {"counter": 100.0 * f64::from(k)},
                   "errors": {"counter": f64::from(k * k)},
                   "latency": {"mean": {"sum": 250.0 * f64::from(k) + f64::from(k * k), "count": 100.0 * f64::from(k)}}})
        };
        let ratios =
            json!([{"name": "error-rate", "numerator": "errors", "denominator": "requests"}]);
        let history: Vec<_> = (1..6)
            .map(|k| json!({"iteration": k, "weight": 100, "metrics": at(k)}))
            .collect();
        let whole: AssessmentRequest = serde_json::from_value(json!({
            "kind": "performanceTest", "iteration": 6, "ratios": ratios,
            "versions": [{"name": "a", "weight": 100, "metrics": at(6), "history": history}]
        }))
        .expect("decodes");
        let (expected, _) = fold(&whole, &[error_rate()], &[]);
        let mut evidence = None;
        for k in 1..=6 {
            let step: AssessmentRequest = serde_json::from_value(json!({
                "kind": "performanceTest", "iteration": k, "ratios": ratios,
                "versions": [{"name": "a", "weight": 100, "metrics": at(k)}],
                "evidence": evidence
            }))
            .expect("decodes");
            evidence = Some(fold(&step, &[error_rate()], &[]).0);
        }
        assert_eq!(evidence, Some(expected.clone()));
        let (se, dof) = batch_means_error(&expected.versions[0].batches["latency"]).expect("se");
        assert_eq!(dof, 5.0);
        assert!(se > 0.0 && se.is_finite());
    }
}

#[cfg(test)]
mod resets {
    use serde_json::json;

    use super::tests::error_rate;
    use super::*;

    /// The evidence after folding, one iteration at a time, cumulative latency means of
    /// 100 values per interval (interval means 250 + k) whose counter restarts after
    /// iteration `reset` (the process restarted: the series starts again from nothing).
    fn folded(iterations: u32, reset: u32) -> (Evidence, MeanObservation) {
        let mut evidence = None;
        let mut last = None;
        let (mut sum, mut count) = (0.0, 0.0);
        for k in 1..=iterations {
            if k == reset + 1 {
                (sum, count) = (0.0, 0.0);
            }
            sum += 100.0 * (250.0 + f64::from(k % 3));
            count += 100.0;
            let step: AssessmentRequest = serde_json::from_value(json!({
                "kind": "performanceTest", "iteration": k,
                "versions": [{"name": "a", "weight": 100,
                    "metrics": {"latency": {"mean": {"sum": sum, "count": count}}}}],
                "evidence": evidence
            }))
            .expect("decodes");
            evidence = Some(fold(&step, &[], &[]).0);
            last = Some(MeanObservation {
                sum,
                count,
                sum_of_squares: None,
            });
        }
        (evidence.expect("folded"), last.expect("observed"))
    }

    #[test]
    fn after_a_reset_a_means_batches_cover_the_data_of_its_cumulative_observation() {
        let (e, now) = folded(16, 12);
        let b = e.versions[0].batches["latency"];
        // The mean the model reads is the cumulative one: 4 intervals since the reset. Its
        // spread must come from those 4 batches, not from the 15 before and after.
        assert_eq!(b.count, now.count);
        assert_eq!(b.batches, 4);
        let mean = b.reference + b.sum / b.count;
        assert!((mean - now.sum / now.count).abs() < 1e-9);
        // Without a reset, every interval is a batch.
        let (e, now) = folded(16, 16);
        assert_eq!(e.versions[0].batches["latency"].count, now.count);
        assert_eq!(e.versions[0].batches["latency"].batches, 16);
    }

    #[test]
    fn a_count_that_dips_leaves_the_traffic_unknown_and_the_evidence_valid() {
        // Prometheus' extrapolation can shrink a cumulative count a little (not a reset).
        let request = |iteration: u32, requests: f64, evidence: Option<Evidence>| {
            serde_json::from_value::<AssessmentRequest>(json!({
                "kind": "performanceTest", "iteration": iteration,
                "ratios": [{"name": "error-rate", "numerator": "errors", "denominator": "requests"}],
                "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}]},
                "versions": [{"name": "a", "weight": 100,
                    "metrics": {"requests": {"counter": requests}, "errors": {"counter": 1.0}}}],
                "evidence": evidence
            }))
            .expect("decodes")
        };
        let (first, _) = fold(&request(1, 1000.0, None), &[error_rate()], &[]);
        let (second, resets) = fold(&request(2, 980.0, Some(first)), &[error_rate()], &[]);
        assert!(resets.is_empty());
        assert_eq!(second.versions[0].recent[1].traffic, None);
        request(3, 1500.0, Some(second))
            .validate()
            .expect("the engine's own evidence is valid");
    }
}

#[cfg(test)]
mod unequal_batches {
    use iter8_api::BatchStats;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    use rand_pcg::Pcg64Mcg;

    use super::batch_means_error;

    /// Folds batches of the given sizes of N(0, 1) values into running batch statistics.
    fn stats(sizes: &[f64], rng: &mut Pcg64Mcg) -> BatchStats {
        let normal = Normal::new(0.0, 1.0).expect("valid");
        let mut b = BatchStats::default();
        for &c in sizes {
            let s: f64 = (0..c as usize).map(|_| normal.sample(rng)).sum();
            b.batches += 1;
            b.sum += s;
            b.count += c;
            b.sum_sq += s * s;
            b.cross += s * c;
            b.count_sq += c * c;
        }
        b
    }

    #[test]
    fn one_dominant_batch_neither_shrinks_the_spread_nor_counts_as_many_batches() {
        // Everything before the ledger existed lands in one first batch: 900 values, then nine
        // intervals of 20. The variance of the mean is 1 / 1080.
        let sizes: Vec<f64> = std::iter::once(900.0)
            .chain(std::iter::repeat_n(20.0, 9))
            .collect();
        let mut rng = Pcg64Mcg::seed_from_u64(20261130);
        let runs = 2000;
        let mut mean_var = 0.0;
        let mut dof = 0.0;
        for _ in 0..runs {
            let (se, d) = batch_means_error(&stats(&sizes, &mut rng)).expect("estimated");
            mean_var += se * se / f64::from(runs);
            dof = d;
        }
        let truth = 1.0 / 1080.0;
        // Unbiased within Monte-Carlo noise (the old k/(k-1)/C^2 gave about a third of it).
        assert!(
            (mean_var / truth - 1.0).abs() < 0.1,
            "mean estimate {mean_var} vs {truth}"
        );
        // Kish: C^2 / sum c^2 = 1080^2 / (810000 + 3600) = 1.43 effective batches.
        assert!(dof < 1.0, "{dof}");
    }

    #[test]
    fn equal_batches_keep_the_textbook_estimate() {
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        let b = stats(&[50.0; 12], &mut rng);
        let (se, dof) = batch_means_error(&b).expect("estimated");
        let k = 12.0;
        let delta = b.sum / b.count;
        let spread = b.sum_sq - 2.0 * delta * b.cross + delta * delta * b.count_sq;
        let textbook = (spread * k / (k - 1.0) / (b.count * b.count)).sqrt();
        assert!((se - textbook).abs() < 1e-12 * textbook.max(1.0));
        assert!((dof - 11.0).abs() < 1e-9);
    }
}
