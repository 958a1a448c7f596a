//! Well-formed but extreme assessment requests built from unstructured bytes, shared by the
//! property tests (bytes from proptest) and the structured `cargo fuzz` target (bytes from
//! libFuzzer): any number of versions, weights that mostly sum to 100, counters, means and
//! histograms with NaN, infinities, zeros, huge and tiny values, empty buckets, histories,
//! and criteria and strategies of every kind, so that most requests reach the engine and
//! the rest hit validation at every rule.

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use iter8_api::validate::MAX_COUNT;
use iter8_api::{
    Algorithm, AssessmentRequest, Bucket, BucketBound, Criteria, Direction, ExperimentKind,
    HistogramObservation, InfinityLiteral, MeanObservation, Objective, Observation, Quantile,
    RatioMetric, RelativeObjective, Reward, Snapshot, Strategy, Version,
};

/// Counters; `errors`, `conversions` <= `requests` keeps the ratios below in [0, 1] mostly.
const COUNTERS: [&str; 3] = ["requests", "errors", "conversions"];
const RATIOS: [(&str, &str); 2] = [("error-rate", "errors"), ("conversion-rate", "conversions")];
/// Metrics a criterion may name: ratios, a mean and a histogram (and, rarely, `ghost`, which
/// nobody reports).
const TARGETS: [&str; 4] = ["error-rate", "conversion-rate", "revenue", "latency"];

/// One request; `Err` only when the bytes run out mid-way, which callers treat as "skip".
pub fn request(u: &mut Unstructured) -> Result<AssessmentRequest> {
    let kind = *u.choose(&[
        ExperimentKind::PerformanceTest,
        ExperimentKind::Canary,
        ExperimentKind::AB,
        ExperimentKind::ABn,
    ])?;
    let count = match kind {
        _ if rarely(u, 16)? => u.int_in_range(0..=17)?,
        ExperimentKind::PerformanceTest => 1,
        ExperimentKind::Canary | ExperimentKind::AB => 2,
        ExperimentKind::ABn => u.int_in_range(2..=16)?,
    };
    let iteration = u.int_in_range(1..=40)?;
    let weights = weights(u, count)?;
    let mut versions = Vec::with_capacity(count);
    for (i, weight) in weights.into_iter().enumerate() {
        versions.push(Version {
            name: format!("v{i}"),
            weight,
            metrics: metrics(u)?,
            history: history(u, iteration)?,
        });
    }
    let min_iterations = u.int_in_range(1..=10)?;
    Ok(AssessmentRequest {
        kind,
        iteration: if rarely(u, 32)? { 0 } else { iteration },
        min_iterations,
        max_iterations: if u.arbitrary()? {
            Some(u.int_in_range(min_iterations.saturating_sub(1)..=60)?)
        } else {
            None
        },
        versions,
        ratios: RATIOS
            .iter()
            .map(|(name, numerator)| RatioMetric {
                name: (*name).to_owned(),
                numerator: (*numerator).to_owned(),
                denominator: "requests".to_owned(),
            })
            .collect(),
        criteria: criteria(u, kind)?,
        strategy: strategy(u, count)?,
        evidence: None,
    })
}

/// Weights summing to 100 (almost always), or anything up to 101.
fn weights(u: &mut Unstructured, count: usize) -> Result<Vec<u32>> {
    if rarely(u, 32)? {
        return (0..count).map(|_| u.int_in_range(0..=101)).collect();
    }
    let mut left = 100;
    let mut weights = Vec::with_capacity(count);
    for i in 0..count {
        let w = if i + 1 == count {
            left
        } else {
            u.int_in_range(0..=left)?
        };
        left -= w;
        weights.push(w);
    }
    Ok(weights)
}

/// A number from the edges of f64 as often as from the middle; rarely one that no field
/// takes (NaN, infinities, negatives), so that most requests still reach the engine.
fn extreme(u: &mut Unstructured, typical: f64) -> Result<f64> {
    let scale = f64::from(u.int_in_range(0..=2_000u32)?) / 1000.0;
    pick(
        u,
        &[
            0.0,
            f64::MIN_POSITIVE,
            1e-300,
            1e300,
            f64::MAX,
            1.0,
            typical * 1e9,
            typical * scale,
            typical,
        ],
        &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0],
    )
}

/// True once in `n` times, and never once the bytes run out (`arbitrary` then answers with
/// the low end of every range, which would make the rare case the usual one).
fn rarely(u: &mut Unstructured, n: u32) -> Result<bool> {
    Ok(u.int_in_range(1..=n)? == n)
}

/// One of `valid`, or now and then one of `invalid`.
fn pick<T: Copy>(u: &mut Unstructured, valid: &[T], invalid: &[T]) -> Result<T> {
    if rarely(u, 32)? {
        u.choose(invalid).copied()
    } else {
        u.choose(valid).copied()
    }
}

/// A count: mostly sane, sometimes at the edges (zero, one, 2^53), rarely impossible.
fn count(u: &mut Unstructured, typical: f64) -> Result<f64> {
    let usual = (typical * f64::from(u.int_in_range(0..=2_000u32)?) / 1000.0).round();
    pick(
        u,
        &[usual, usual, usual, usual, 0.0, 1.0, 1e12, MAX_COUNT / 8.0],
        &[f64::NAN, f64::INFINITY, -1.0, 1e300],
    )
}

fn metrics(u: &mut Unstructured) -> Result<BTreeMap<String, Observation>> {
    let mut metrics = BTreeMap::new();
    let requests = count(u, 5_000.0)?;
    for name in COUNTERS {
        if u.ratio(1, 8)? {
            continue; // a version with no data for this metric
        }
        let value = match name {
            "requests" => requests,
            _ if u.ratio(7, 8)? => {
                (requests * f64::from(u.int_in_range(0..=100u32)?) / 100.0).floor()
            }
            _ => count(u, 100.0)?,
        };
        metrics.insert(name.to_owned(), Observation::Counter(value));
    }
    if u.ratio(7, 8)? {
        let n = count(u, requests.max(1.0))?;
        let sum = n * extreme(u, 30.0)?;
        // At least sum^2 / n, as Cauchy-Schwarz demands (rarely less).
        let spread = pick(u, &[1.0, 1.5, 10.0, 1e6], &[0.5])?;
        let sum_of_squares = if u.arbitrary()? && n > 0.0 {
            Some(sum * sum / n * spread)
        } else {
            None
        };
        metrics.insert(
            "revenue".to_owned(),
            Observation::Mean(MeanObservation {
                sum,
                count: n,
                sum_of_squares,
            }),
        );
    }
    if u.ratio(7, 8)? {
        metrics.insert("latency".to_owned(), histogram(u)?);
    }
    Ok(metrics)
}

/// Cumulative buckets: none, one, or up to 257; `+Inf` last or not; empty (all zero) often.
fn histogram(u: &mut Unstructured) -> Result<Observation> {
    let n: usize = match u.int_in_range(0..=31)? {
        31 => 0,
        30 => 1,
        29 => u.int_in_range(200..=257)?,
        _ => u.int_in_range(2..=12)?,
    };
    let empty = u.ratio(1, 4)?;
    let mut buckets = Vec::with_capacity(n);
    let (mut le, mut total) = (extreme(u, 10.0)?.abs().min(1e6), 0.0);
    for i in 0..n {
        le += extreme(u, 50.0)?.abs().clamp(1e-3, 1e12);
        if !empty {
            total += count(u, 400.0)?.abs();
        }
        let bound = if i + 1 == n && u.arbitrary()? {
            BucketBound::Infinite(InfinityLiteral::PlusInf)
        } else {
            BucketBound::Finite(le)
        };
        buckets.push(Bucket {
            le: bound,
            count: total,
        });
    }
    let sum = if u.arbitrary()? {
        Some(total * extreme(u, 120.0)?)
    } else {
        None
    };
    Ok(Observation::Histogram(HistogramObservation {
        buckets,
        sum,
    }))
}

/// Earlier snapshots, in increasing order of iteration (sometimes not).
fn history(u: &mut Unstructured, iteration: u32) -> Result<Vec<Snapshot>> {
    if !u.ratio(1, 4)? {
        return Ok(Vec::new());
    }
    let mut snapshots = Vec::new();
    for at in 1..iteration.min(12) {
        if u.ratio(1, 2)? {
            snapshots.push(Snapshot {
                iteration: if rarely(u, 64)? { iteration } else { at },
                weight: if u.arbitrary()? {
                    Some(u.int_in_range(0..=100)?)
                } else {
                    None
                },
                metrics: metrics(u)?,
            });
        }
    }
    Ok(snapshots)
}

fn target(u: &mut Unstructured) -> Result<(String, Option<Quantile>)> {
    let metric = pick(u, &TARGETS, &["ghost"])?;
    let quantile = if metric == "latency" || rarely(u, 16)? {
        let q = *u.choose(&[0.5, 0.9, 0.95, 0.99, 0.999_999, 1e-6])?;
        Quantile::try_from(q).ok()
    } else {
        None
    };
    Ok((metric.to_owned(), quantile))
}

fn direction(u: &mut Unstructured) -> Result<Direction> {
    Ok(*u.choose(&[Direction::Higher, Direction::Lower])?)
}

fn criteria(u: &mut Unstructured, kind: ExperimentKind) -> Result<Criteria> {
    let mut c = Criteria::default();
    for _ in 0..u.int_in_range(0..=4)? {
        let (metric, quantile) = target(u)?;
        let (lower, upper) = (extreme(u, 0.5)?, extreme(u, 500.0)?);
        let (lower_limit, upper_limit) = match u.int_in_range(0..=15)? {
            15 => (None, None),
            0..=4 => (Some(lower), None),
            5..=8 => (Some(lower), Some(upper)),
            _ => (None, Some(upper)),
        };
        c.objectives.push(Objective {
            metric,
            quantile,
            upper_limit,
            lower_limit,
        });
    }
    if kind != ExperimentKind::PerformanceTest {
        for _ in 0..u.int_in_range(0..=2)? {
            let (metric, quantile) = target(u)?;
            c.relative_objectives.push(RelativeObjective {
                metric,
                quantile,
                preferred_direction: direction(u)?,
                max_degradation: extreme(u, 0.1)?,
            });
        }
    }
    let rewards = match kind {
        ExperimentKind::AB | ExperimentKind::ABn if !rarely(u, 16)? => u.int_in_range(1..=2)?,
        _ => u.int_in_range(0..=1)?,
    };
    for _ in 0..rewards {
        let (metric, quantile) = target(u)?;
        c.rewards.push(Reward {
            metric,
            quantile,
            preferred_direction: direction(u)?,
        });
    }
    Ok(c)
}

fn strategy(u: &mut Unstructured, versions: usize) -> Result<Strategy> {
    let algorithm = *u.choose(&Algorithm::ALL)?;
    let split = if algorithm == Algorithm::FixedSplit || rarely(u, 32)? {
        Some(weights(u, versions)?)
    } else {
        None
    };
    Ok(Strategy {
        algorithm,
        max_candidate_weight: pick(
            u,
            &[
                None,
                Some(0),
                Some(1),
                Some(20),
                Some(50),
                Some(99),
                Some(100),
            ],
            &[Some(101), Some(u32::MAX)],
        )?,
        max_candidate_weight_increment: pick(u, &[1, 5, 10, 50, 100], &[0, 101])?,
        exploration_weight: pick(u, &[0, 1, 10, 49, 50], &[51])?,
        winner_probability: pick(u, &[0.51, 0.9, 0.95, 0.999_999], &[0.5, 1.0, f64::NAN])?,
        split,
        // Few draws keep a case fast; the lower bound is hit too.
        draws: pick(u, &[100, 300, 1_000, 2_000], &[99])?,
        seed: u.arbitrary()?,
        alpha: pick(u, &[1e-4, 0.01, 0.05, 0.5], &[1e-5, 0.51, f64::NAN])?,
        max_failed_checks: pick(u, &[1, 2, 5, 1000], &[0, 1001])?,
    })
}
