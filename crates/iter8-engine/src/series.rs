//! Per-interval values from the cumulative history: what each iteration alone observed.
//!
//! The request carries cumulative data now and, in `versions[].history`, cumulative snapshots
//! of earlier iterations. The difference of consecutive snapshots is what one interval saw,
//! which the per-interval judges (fixed thresholds, Mann-Whitney) and the data-quality checks
//! need.

use std::collections::BTreeMap;

use iter8_api::{AssessmentRequest, Bucket, HistogramObservation, Observation, Target};

use crate::histogram::observed_quantile_of;

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

/// One cumulative point of a version: the iteration, the weight then, and the metrics.
struct Point<'a> {
    iteration: u32,
    weight: Option<u32>,
    metrics: &'a BTreeMap<String, Observation>,
}

fn points<'a>(req: &'a AssessmentRequest, version: usize) -> Vec<Point<'a>> {
    let v = &req.versions[version];
    v.history
        .iter()
        .filter(|s| s.iteration < req.iteration)
        .map(|s| Point {
            iteration: s.iteration,
            weight: s.weight,
            metrics: &s.metrics,
        })
        .chain(std::iter::once(Point {
            iteration: req.iteration,
            weight: Some(v.weight),
            metrics: &v.metrics,
        }))
        .collect()
}

/// The per-interval values of `target` for `version`, oldest first; the first interval runs
/// from the start of the experiment to the oldest snapshot.
pub fn intervals(req: &AssessmentRequest, version: usize, target: &Target) -> Vec<Interval> {
    let points = points(req, version);
    let mut out = Vec::with_capacity(points.len());
    let mut previous: Option<&BTreeMap<String, Observation>> = None;
    for p in &points {
        out.push(Interval {
            iteration: p.iteration,
            weight: p.weight,
            value: interval_value(req, target, p.metrics, previous),
        });
        previous = Some(p.metrics);
    }
    out
}

/// The amount of traffic a version saw: the denominator of the first ratio, else the count
/// of the first mean or histogram metric (in name order).
pub fn traffic(req: &AssessmentRequest, metrics: &BTreeMap<String, Observation>) -> Option<f64> {
    if let Some(r) = req.ratios.first() {
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

/// The traffic each version saw in the latest interval and its weight then; `None` for a
/// version without a traffic metric or without a snapshot to difference against.
pub fn latest_traffic(req: &AssessmentRequest, version: usize) -> Option<(f64, u32)> {
    let points = points(req, version);
    let [.., before, now] = points.as_slice() else {
        return None;
    };
    let delta = traffic(req, now.metrics)? - traffic(req, before.metrics)?;
    Some((delta, now.weight.unwrap_or(0)))
}

/// Whether some version's weight in the latest interval differs from its weight in the
/// interval before (unknown weights count as a change).
pub fn split_just_changed(req: &AssessmentRequest) -> bool {
    (0..req.versions.len()).any(|v| {
        let points = points(req, v);
        match points.as_slice() {
            [.., before, now] => before.weight.is_none() || before.weight != now.weight,
            _ => true,
        }
    })
}

fn interval_value(
    req: &AssessmentRequest,
    target: &Target,
    now: &BTreeMap<String, Observation>,
    before: Option<&BTreeMap<String, Observation>>,
) -> Option<f64> {
    if let Some(ratio) = req.ratios.iter().find(|r| r.name == target.metric) {
        let counter = |m: &BTreeMap<String, Observation>, name: &str| match m.get(name) {
            Some(Observation::Counter(c)) => Some(*c),
            _ => None,
        };
        let delta = |name: &str| -> Option<f64> {
            let then = match before {
                Some(b) => counter(b, name)?,
                None => 0.0,
            };
            Some(counter(now, name)? - then)
        };
        let (events, trials) = (delta(&ratio.numerator)?, delta(&ratio.denominator)?);
        return (trials > 0.0).then(|| events / trials);
    }
    let then = before.and_then(|b| b.get(&target.metric));
    match (now.get(&target.metric)?, then, target.quantile) {
        (Observation::Mean(m), then, _) => {
            let (s0, c0) = match then {
                Some(Observation::Mean(t)) => (t.sum, t.count),
                _ => (0.0, 0.0),
            };
            let count = m.count - c0;
            (count > 0.0).then(|| (m.sum - s0) / count)
        }
        (Observation::Histogram(h), then, Some(q)) => {
            let difference = match then {
                Some(Observation::Histogram(t)) if t.buckets.len() == h.buckets.len() => {
                    HistogramObservation {
                        buckets: h
                            .buckets
                            .iter()
                            .zip(&t.buckets)
                            .map(|(a, b)| Bucket {
                                le: a.le,
                                count: a.count - b.count,
                            })
                            .collect(),
                        sum: None,
                    }
                }
                _ => h.clone(),
            };
            observed_quantile_of(&difference, q.fraction())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let target = Target {
            metric: "error-rate".into(),
            quantile: None,
        };
        let values: Vec<Option<f64>> = intervals(&req, 0, &target)
            .iter()
            .map(|i| i.value)
            .collect();
        assert_eq!(values, vec![Some(0.01), Some(0.02), Some(0.06)]);
        assert_eq!(latest_traffic(&req, 0), Some((100.0, 50)));
    }
}
