//! `mann_whitney`: Kayenta (NetflixACAJudge) semantics, for users who migrate and for
//! comparison.
//!
//! The canary lifetime (see [`lifetime`]) is split into two runs of half its length. Every
//! live candidate holds `maxCandidateWeightIncrement` percent of the traffic. At the end of a
//! run, each metric the criteria and the reward read is compared between candidate and
//! baseline on the run's per-interval values (differences of the history snapshots): a
//! Mann-Whitney test with a 98 % Hodges-Lehmann interval for the shift. A metric fails when
//! it moved in its harmful direction: the interval's lower end above a quarter of the
//! estimated shift and the means' ratio beyond 1. The run's score is the percentage of
//! metrics that did not fail (0 when half the metrics have no data). A candidate scoring
//! below [`MARGINAL`] after the first run is removed; after the second run the candidates
//! scoring at least [`PASS`] pass, and the one with the best observed reward is promoted.
//! There is no error control across runs, metrics or candidates, and per-interval values are
//! taken as independent, as Kayenta does.

use iter8_api::{Action, Decision, Direction, Winner};

use super::{Context, Strategy};
use crate::criteria::Check;
use crate::decision::Verdict;
use crate::series::intervals;

/// The Mann-Whitney judge.
pub struct MannWhitney;

/// A run scoring below this removes the candidate.
pub const MARGINAL: f64 = 75.0;
/// The final run must score at least this.
pub const PASS: f64 = 95.0;
/// Kayenta's confidence level for the Hodges-Lehmann interval.
const CONFIDENCE: f64 = 0.98;
/// Kayenta's tolerance, as a fraction of the estimated shift.
const TOLERANCE: f64 = 0.25;
/// Per-interval values each side needs for a metric to be classified.
const MIN_POINTS: usize = 3;
/// The shortest lifetime whose runs can both score: each run holds [`MIN_POINTS`] intervals
/// with candidate data, and the first interval has none (the experiment starts with all
/// traffic on the baseline).
pub const MIN_LIFETIME: u32 = 2 * (MIN_POINTS as u32 + 1);
/// The lifetime when `minIterations` is too short to be one: Kayenta's two runs of 12.
pub const DEFAULT_LIFETIME: u32 = 24;

impl Strategy for MannWhitney {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        let s = &ctx.request.strategy;
        let n = ctx.request.versions.len();
        let step = s
            .max_candidate_weight_increment
            .min(s.candidate_weight_limit());
        let status = judge(ctx);
        let mut out = vec![0; n];
        let mut candidates = 0;
        for (w, live) in out.iter_mut().zip(&status.live).skip(1) {
            if *live {
                *w = step.min(100 - candidates);
                candidates += *w;
            }
        }
        out[0] = 100 - candidates;
        out
    }

    fn limited(&self) -> bool {
        false
    }

    fn decide(&self, ctx: &Context<'_>) -> Verdict {
        let req = ctx.request;
        let names: Vec<&str> = req.versions.iter().map(|v| v.name.as_str()).collect();
        let status = judge(ctx);
        let last = req.max_iterations.is_some_and(|m| req.iteration >= m);
        let scores = |s: &[Option<f64>]| -> String {
            (1..names.len())
                .map(|v| match s[v] {
                    Some(x) => format!("{} {x:.0}", names[v]),
                    None => format!("{} -", names[v]),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let verdict = |action, version: Option<String>, reason: String| Verdict {
            decision: Decision {
                action,
                version,
                reason,
            },
            // The judge has no probability to report a winner with.
            winner: None::<Winner>,
        };
        if !status.live.iter().skip(1).any(|&l| l) {
            return verdict(
                Action::Rollback,
                None,
                format!(
                    "every candidate scored below {MARGINAL} in the first run ({})",
                    scores(&status.first)
                ),
            );
        }
        if status.finished {
            let passing = (1..names.len())
                .filter(|&v| status.live[v] && status.second[v].is_some_and(|s| s >= PASS));
            let best = passing
                .max_by(|&a, &b| observed_reward(ctx, a).total_cmp(&observed_reward(ctx, b)));
            return match best {
                Some(v) if ctx.model.promotion_blocked.is_none() => verdict(
                    Action::Promote,
                    Some(names[v].to_string()),
                    format!(
                        "{} passed the final run with score at least {PASS} ({})",
                        names[v],
                        scores(&status.second)
                    ),
                ),
                _ => verdict(
                    Action::Rollback,
                    None,
                    format!(
                        "no candidate passed the final run with score {PASS} ({})",
                        scores(&status.second)
                    ),
                ),
            };
        }
        let why = format!(
            "the canary runs until iteration {}; first-run scores: {}",
            status.lifetime,
            scores(&status.first)
        );
        if last {
            verdict(Action::Inconclusive, None, why)
        } else {
            verdict(Action::Continue, None, why)
        }
    }
}

/// The judge's state, recomputed from the history on every request.
struct Status {
    lifetime: u32,
    finished: bool,
    live: Vec<bool>,
    first: Vec<Option<f64>>,
    second: Vec<Option<f64>>,
}

/// The canary lifetime in iterations: `minIterations` when it is at least [`MIN_LIFETIME`],
/// otherwise (at its default of 1, say) [`DEFAULT_LIFETIME`] or the whole experiment if that is
/// shorter, and never less than [`MIN_LIFETIME`]. A lifetime too short to hold
/// [`MIN_POINTS`] intervals per run could only ever score 0.
pub fn lifetime(min_iterations: u32, max_iterations: Option<u32>) -> u32 {
    if min_iterations >= MIN_LIFETIME {
        min_iterations
    } else {
        max_iterations
            .map_or(DEFAULT_LIFETIME, |m| m.min(DEFAULT_LIFETIME))
            .max(MIN_LIFETIME)
    }
}

fn judge(ctx: &Context<'_>) -> Status {
    let req = ctx.request;
    let n = req.versions.len();
    let lifetime = lifetime(req.min_iterations, req.max_iterations);
    let half = lifetime / 2;
    let mut status = Status {
        lifetime,
        finished: req.iteration >= lifetime,
        live: vec![true; n],
        first: vec![None; n],
        second: vec![None; n],
    };
    for v in 1..n {
        if req.iteration >= half {
            let s = score(ctx, v, 1, half);
            status.first[v] = Some(s);
            status.live[v] = s >= MARGINAL;
        }
        if status.finished {
            status.second[v] = Some(score(ctx, v, half + 1, lifetime));
        }
    }
    status
}

/// The score of candidate `v` over the intervals ending at iterations `from..=to`.
fn score(ctx: &Context<'_>, v: usize, from: u32, to: u32) -> f64 {
    let model = ctx.model;
    // (target, whether an increase is harmful, whether a decrease is harmful)
    let mut metrics: Vec<(usize, bool, bool)> = model
        .criteria
        .iter()
        .map(|c| match c.check {
            Check::Absolute {
                target,
                lower,
                upper,
            } => (target, upper.is_some(), lower.is_some()),
            Check::Relative {
                target, direction, ..
            } => (
                target,
                direction == Direction::Lower,
                direction == Direction::Higher,
            ),
        })
        .collect();
    if let Some((t, direction)) = model.reward {
        metrics.push((
            t,
            direction == Direction::Lower,
            direction == Direction::Higher,
        ));
    }
    metrics.dedup_by_key(|m| m.0);
    if metrics.is_empty() {
        return 100.0;
    }
    let (mut classified, mut failed, mut no_data) = (0usize, 0usize, 0usize);
    for &(t, up_bad, down_bad) in &metrics {
        let target = &model.targets[t];
        let window = |version: usize| -> Vec<(u32, f64)> {
            intervals(&model.evidence, version, target)
                .into_iter()
                .filter(|i| i.iteration >= from && i.iteration <= to)
                .filter_map(|i| i.value.map(|x| (i.iteration, x)))
                .collect()
        };
        let control: Vec<f64> = window(0).into_iter().map(|(_, x)| x).collect();
        let experiment: Vec<f64> = window(v).into_iter().map(|(_, x)| x).collect();
        if control.len() < MIN_POINTS || experiment.len() < MIN_POINTS {
            no_data += 1;
            continue;
        }
        classified += 1;
        let Some((lo, estimate, hi)) = hodges_lehmann(&experiment, &control, CONFIDENCE) else {
            continue;
        };
        let ratio = mean(&experiment) / mean(&control);
        // A NaN ratio (a zero control mean) does not veto the interval.
        let high = lo > TOLERANCE * estimate.abs() && (ratio.is_nan() || ratio >= 1.0);
        let low = hi < -TOLERANCE * estimate.abs() && (ratio.is_nan() || ratio <= 1.0);
        if (high && up_bad) || (low && down_bad) {
            failed += 1;
        }
    }
    if 2 * no_data >= metrics.len() || classified == 0 {
        return 0.0;
    }
    100.0 * (classified - failed) as f64 / classified as f64
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn observed_reward(ctx: &Context<'_>, v: usize) -> f64 {
    match ctx.model.reward {
        Some((t, direction)) => {
            let x = ctx.model.posteriors[v][t]
                .as_ref()
                .map_or(f64::NEG_INFINITY, |p| p.value());
            if direction == Direction::Lower { -x } else { x }
        }
        None => -(v as f64),
    }
}

/// The Hodges-Lehmann estimate of the shift of `y` against `x` (the median of all pairwise
/// differences `y_i - x_j`) with its distribution-free interval at `confidence`, from the
/// normal approximation to the Mann-Whitney statistic: (lower, estimate, upper).
pub fn hodges_lehmann(y: &[f64], x: &[f64], confidence: f64) -> Option<(f64, f64, f64)> {
    let (m, n) = (y.len(), x.len());
    if m == 0 || n == 0 {
        return None;
    }
    let mut d: Vec<f64> = y
        .iter()
        .flat_map(|a| x.iter().map(move |b| a - b))
        .collect();
    d.sort_by(f64::total_cmp);
    let mn = d.len();
    let estimate = if mn % 2 == 1 {
        d[mn / 2]
    } else {
        (d[mn / 2 - 1] + d[mn / 2]) / 2.0
    };
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let (mf, nf) = (m as f64, n as f64);
    let k = (mf * nf / 2.0 - z * (mf * nf * (mf + nf + 1.0) / 12.0).sqrt()).floor();
    // The k-th smallest and k-th largest differences (1-indexed), at least the extremes.
    let k = if k < 1.0 {
        0
    } else {
        (k as usize - 1).min(mn / 2)
    };
    Some((d[k], estimate, d[mn - 1 - k]))
}

fn normal_quantile(p: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::standard().inverse_cdf(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hodges_lehmann_is_the_median_pairwise_difference() {
        let x = [1.0, 2.0, 3.0];
        let y = [2.0, 3.0, 4.0];
        let (lo, est, hi) = hodges_lehmann(&y, &x, 0.98).expect("data");
        assert_eq!(est, 1.0);
        assert!(lo <= est && est <= hi);
    }

    #[test]
    fn hodges_lehmann_interval_excludes_zero_for_a_clear_shift_only() {
        let x: Vec<f64> = (0..24).map(|i| f64::from(i % 7)).collect();
        let shifted: Vec<f64> = x.iter().map(|v| v + 10.0).collect();
        let (lo, est, _) = hodges_lehmann(&shifted, &x, 0.98).expect("data");
        assert_eq!(est, 10.0);
        assert!(lo > 0.0);
        let (lo, _, hi) = hodges_lehmann(&x, &x, 0.98).expect("data");
        assert!(lo < 0.0 && hi > 0.0);
    }

    #[test]
    fn the_lifetime_holds_two_runs_that_can_score() {
        // Defaults (minIterations 1, maxIterations 20): the whole experiment, two runs of 10.
        assert_eq!(lifetime(1, Some(20)), 20);
        assert_eq!(lifetime(1, Some(1000)), DEFAULT_LIFETIME);
        assert_eq!(lifetime(1, None), DEFAULT_LIFETIME);
        assert_eq!(lifetime(30, Some(40)), 30);
        // The API refuses what this could not judge: fewer than MIN_LIFETIME iterations, a
        // lifetime longer than the intervals the evidence keeps.
        let bounds = iter8_api::requirements::MANN_WHITNEY_ITERATIONS;
        assert_eq!(bounds.max_at_least, MIN_LIFETIME);
        assert!(DEFAULT_LIFETIME <= bounds.min_at_most);
        for (min, max) in [
            (1, Some(20)),
            (1, Some(8)),
            (7, None),
            (8, Some(8)),
            (32, None),
        ] {
            let half = lifetime(min, max) / 2;
            // The first interval has no candidate data: each run still holds MIN_POINTS.
            assert!(half as usize > MIN_POINTS, "{min} {max:?}");
        }
    }

    #[test]
    fn normal_quantile_of_98_percent_two_sided_is_2_326() {
        assert!((normal_quantile(0.99) - 2.326_348).abs() < 1e-5);
    }
}
