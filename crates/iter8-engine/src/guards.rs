//! Anytime-valid guards applied to a request: for every version and criterion, whether the
//! cumulative data shows the criterion broken or met; and for every candidate, whether its
//! reward is shown better or worse than the baseline's.
//!
//! * Rates (ratios of counters) use Robbins' mixture confidence sequence.
//! * Quantile limits use the exceedance count at a bucket bound: "p95 <= T" is exactly
//!   "P(value > T) <= 5 %" when `T` is a bound. When it is not, the nearest bound above `T`
//!   can show a violation and the nearest bound below can show compliance.
//! * Means use the asymptotic confidence sequence. Their spread comes from the sum of squares
//!   or from at least ten (effective) batch means kept in the evidence; with less, a mean is never shown
//!   either way. An assumed spread would make the "proof" only as good as the assumption,
//!   and heavy-tailed latencies (whose variance may not even exist) break any assumed one.
//! * Limits relative to the baseline, and the reward against the baseline, use the mSPRT.
//! * The reward has one more chance, when the request says which iteration is the last: the
//!   mSPRT runs at `alpha * (1 - FINAL_LOOK_SHARE)` and, at the last iteration only, a
//!   fixed-horizon one-sided z-test at `alpha * FINAL_LOOK_SHARE` can also show the
//!   candidate better. One test at one fixed time plus a test that is valid at all times
//!   err together with probability at most their sum (a union bound), so the overall level
//!   stays `alpha`; the z-test, which needs no anytime-valid margin, rescues the runs whose
//!   lift is real but not yet proved by the mSPRT when the experiment runs out.
//!
//! All statistics are cumulative, so once a version is shown to break a criterion and loses
//! its traffic, its data - and the verdict - stay as they are.

use std::collections::BTreeMap;

use iter8_api::{AssessmentRequest, Direction, Observation};

use crate::criteria::Check;
use crate::model::Model;
use crate::posterior::Posterior;
use crate::sequential::{Side, difference_vs_zero, mean_vs_limit, rate_vs_limit};
use crate::series::difference;

/// What the sequential tests say about one criterion of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Shown broken.
    Broken,
    /// Shown met.
    Met,
    /// Not shown either way yet.
    Open,
}

/// The guards of every version.
#[derive(Debug, Clone)]
pub struct Guards {
    /// `criteria[version][criterion]`.
    pub criteria: Vec<Vec<Status>>,
    /// Per version: the reward shown better (`Above`) or worse (`Below`) than the baseline's;
    /// `Unknown` for the baseline and without a reward.
    pub reward: Vec<Side>,
    /// Per version: removed for good at an earlier iteration.
    pub removed: Vec<bool>,
    /// The iteration, when this request took the fixed-horizon look of the reward.
    pub final_look: Option<u32>,
    /// `latest[version][criterion]`: the latest interval alone shows the criterion broken
    /// (the regression guard; see [`latest_breaches`]).
    pub latest: Vec<Vec<bool>>,
}

/// The mixture scale of the mSPRT, as a fraction of the baseline's value: effects of about
/// this size are detected fastest.
const EFFECT_SCALE: f64 = 0.1;

/// The share of `alpha` kept for the fixed-horizon test of the reward at the last iteration.
pub const FINAL_LOOK_SHARE: f64 = 0.4;

/// Observations a version needs (of the metric in question) before a test may show it to
/// break a criterion or to be worse than the baseline. Below it a crossing is held, not
/// acted on: the event "crossed at some time with at least this many observations" is
/// contained in "ever crossed", so Ville's bound `alpha` still holds under continuous
/// monitoring, while a handful of early conversions or errors can no longer end a good
/// candidate's experiment.
pub const MIN_OBSERVATIONS_TO_REJECT: f64 = 200.0;

impl Guards {
    /// Runs every guard at level `alpha`, split for error control across candidates: a test
    /// that can lead to a promotion (a criterion shown met, the reward shown better) runs at
    /// `alpha / K` for `K` candidates (Bonferroni), so the chance that *any* candidate is
    /// promoted wrongly stays at most `alpha`. Within a candidate the criteria need no split:
    /// all of them must be shown met (an intersection-union test). Tests that remove a
    /// version (shown broken, shown worse) run at `alpha`: removing a good candidate costs
    /// power, never safety.
    pub fn new(req: &AssessmentRequest, model: &Model, alpha: f64) -> Self {
        let versions = req.versions.len();
        let candidates = versions.saturating_sub(1).max(1) as f64;
        let confirm = alpha / candidates;
        let criteria = (0..versions)
            .map(|v| {
                model
                    .criteria
                    .iter()
                    .map(
                        |c| match criterion_status(req, model, v, c.check, confirm, alpha) {
                            Status::Broken if !enough_to_reject(model, v, c.check.target()) => {
                                Status::Open
                            }
                            status => status,
                        },
                    )
                    .collect()
            })
            .collect();
        let planned = req.max_iterations.is_some();
        let last = req.max_iterations.is_some_and(|m| req.iteration >= m);
        // The fixed-horizon look is taken once: the evidence remembers it.
        let looked = req
            .evidence
            .as_ref()
            .is_some_and(|e| e.final_look.is_some());
        let share = if planned { 1.0 - FINAL_LOOK_SHARE } else { 1.0 };
        let mut final_look = None;
        let reward = (0..versions)
            .map(|v| match model.reward {
                Some((t, direction)) if v > 0 => {
                    let better =
                        compare(model, v, t, direction, 0.0, EFFECT_SCALE, confirm * share);
                    let worse = compare(model, v, t, direction, 0.0, EFFECT_SCALE, alpha * share);
                    match (better, worse) {
                        (Side::Above, _) => Side::Above,
                        (_, Side::Below) if enough_to_reject(model, v, t) => Side::Below,
                        _ if last && !looked => {
                            final_look = Some(req.iteration);
                            final_look_test(model, v, t, direction, confirm * FINAL_LOOK_SHARE)
                        }
                        _ => Side::Unknown,
                    }
                }
                _ => Side::Unknown,
            })
            .collect();
        let removed = model
            .evidence
            .versions
            .iter()
            .map(|e| e.removed.is_some())
            .collect();
        Self {
            criteria,
            reward,
            removed,
            final_look,
            latest: latest_breaches(req, model, alpha),
        }
    }

    /// Whether a version is shown to break any criterion, now or at an earlier iteration
    /// (removal is for good: the evidence remembers it).
    pub fn broken(&self, version: usize) -> bool {
        self.removed[version] || self.criteria[version].contains(&Status::Broken)
    }
}

/// Whether version `v` has at least [`MIN_OBSERVATIONS_TO_REJECT`] observations of target `t`
/// (the baseline too, where the test compares with it).
fn enough_to_reject(model: &Model, v: usize, t: usize) -> bool {
    let n = |v: usize| {
        model.posteriors[v][t]
            .as_ref()
            .map_or(0.0, |p| p.sample_size())
    };
    n(v) >= MIN_OBSERVATIONS_TO_REJECT
}

/// The regression guard: per version and criterion, whether the latest interval on its own
/// (this request's cumulative observations less the previous evidence's) shows an absolute
/// limit broken, by the same anytime-valid test as the whole life, at `alpha`, on at least
/// [`MIN_OBSERVATIONS_TO_REJECT`] observations. The cumulative tests weigh a regression
/// that starts late against all the good intervals before it; this one sees it as soon as
/// one interval holds enough of it. A breach here holds promotion and keeps the version at
/// its exploration floor; it removes nothing, so a false alarm costs one interval's delay,
/// never safety. Limits relative to the baseline are left to the cumulative mSPRT.
pub fn latest_breaches(req: &AssessmentRequest, model: &Model, alpha: f64) -> Vec<Vec<bool>> {
    (0..req.versions.len())
        .map(|v| {
            // The previous cumulative observation: the evidence's, or a legacy history's last.
            let before = match &req.evidence {
                Some(e) => e.versions.get(v).map(|e| &e.last),
                None => req.versions[v].history.last().map(|h| &h.metrics),
            };
            let interval: BTreeMap<String, Observation> = req.versions[v]
                .metrics
                .iter()
                .filter_map(|(name, now)| {
                    let earlier = before.and_then(|b| b.get(name));
                    Some((name.clone(), difference(now, earlier)?))
                })
                .collect();
            model
                .criteria
                .iter()
                .map(|c| match c.check {
                    Check::Absolute {
                        target,
                        lower,
                        upper,
                    } => {
                        if interval_size(req, model, &interval, target) < MIN_OBSERVATIONS_TO_REJECT
                        {
                            return false;
                        }
                        let side = |limit| absolute(req, model, v, &interval, target, limit, alpha);
                        upper.is_some_and(|u| side(u) == LimitSide::Above)
                            || lower.is_some_and(|l| side(l) == LimitSide::Below)
                    }
                    Check::Relative { .. } => false,
                })
                .collect()
        })
        .collect()
}

/// How many observations of target `t` an interval's metrics hold.
fn interval_size(
    req: &AssessmentRequest,
    model: &Model,
    metrics: &BTreeMap<String, Observation>,
    t: usize,
) -> f64 {
    let target = &model.targets[t];
    let name = req
        .ratios
        .iter()
        .find(|r| r.name == target.metric)
        .map_or(target.metric.as_str(), |r| r.denominator.as_str());
    match metrics.get(name) {
        Some(Observation::Counter(n)) => *n,
        Some(Observation::Mean(m)) => m.count,
        Some(Observation::Histogram(h)) => h.buckets.last().map_or(0.0, |b| b.count),
        None => 0.0,
    }
}

fn criterion_status(
    req: &AssessmentRequest,
    model: &Model,
    v: usize,
    check: Check,
    alpha_met: f64,
    alpha_broken: f64,
) -> Status {
    match check {
        Check::Absolute {
            target,
            lower,
            upper,
        } => {
            let metrics = &req.versions[v].metrics;
            let side =
                |limit: f64, alpha: f64| absolute(req, model, v, metrics, target, limit, alpha);
            let up = upper.map_or(Status::Met, |u| {
                if side(u, alpha_broken) == LimitSide::Above {
                    Status::Broken
                } else if side(u, alpha_met) == LimitSide::Below {
                    Status::Met
                } else {
                    Status::Open
                }
            });
            let low = lower.map_or(Status::Met, |l| {
                if side(l, alpha_broken) == LimitSide::Below {
                    Status::Broken
                } else if side(l, alpha_met) == LimitSide::Above {
                    Status::Met
                } else {
                    Status::Open
                }
            });
            combine(up, low)
        }
        Check::Relative { .. } if v == 0 => Status::Met,
        Check::Relative {
            target,
            direction,
            max_degradation,
        } => {
            let shift = match direction {
                Direction::Lower => max_degradation,
                Direction::Higher => -max_degradation,
            };
            let scale = max_degradation.max(EFFECT_SCALE);
            // Oriented so that `Above` means better than the tolerated limit.
            let side = |alpha: f64| compare(model, v, target, direction, shift, scale, alpha);
            if side(alpha_met) == Side::Above {
                Status::Met
            } else if side(alpha_broken) == Side::Below {
                Status::Broken
            } else {
                Status::Open
            }
        }
    }
}

fn combine(a: Status, b: Status) -> Status {
    match (a, b) {
        (Status::Broken, _) | (_, Status::Broken) => Status::Broken,
        (Status::Met, Status::Met) => Status::Met,
        _ => Status::Open,
    }
}

/// Where a target stands against an absolute limit: above, below, or not yet known. For a
/// quantile "above" means the quantile is shown above the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitSide {
    Above,
    Below,
    Unknown,
}

/// Target `t` of version `v` against an absolute limit, on `metrics`: the version's
/// cumulative observations, or one interval's. A mean's spread per observation comes from
/// the version's whole life.
fn absolute(
    req: &AssessmentRequest,
    model: &Model,
    v: usize,
    metrics: &BTreeMap<String, Observation>,
    t: usize,
    limit: f64,
    alpha: f64,
) -> LimitSide {
    let target = &model.targets[t];
    if let Some(ratio) = req.ratios.iter().find(|r| r.name == target.metric) {
        let count = |name: &str| match metrics.get(name) {
            Some(Observation::Counter(c)) => Some(*c),
            _ => None,
        };
        return match (count(&ratio.numerator), count(&ratio.denominator)) {
            (Some(events), Some(trials)) if events <= trials => {
                from_side(rate_vs_limit(events, trials, limit, alpha))
            }
            _ => LimitSide::Unknown,
        };
    }
    match (metrics.get(&target.metric), target.quantile) {
        (Some(Observation::Histogram(h)), Some(q)) => {
            quantile_vs_limit(&h.buckets, q.fraction(), limit, alpha)
        }
        (Some(Observation::Mean(m)), _) => match &model.posteriors[v][t] {
            Some(whole @ Posterior::Mean(p)) if model.spread_estimated(v, t) && m.count > 0.0 => {
                let mean = m.sum / m.count;
                let sd = p.std_error()
                    * whole.sample_size().sqrt()
                    * small_sample_factor(p.dof(), alpha);
                from_side(mean_vs_limit(mean, sd, m.count, limit, alpha))
            }
            _ => LimitSide::Unknown,
        },
        _ => LimitSide::Unknown,
    }
}

/// How much wider a plug-in spread with `dof` degrees of freedom must be taken to cover like a
/// known one at the level `alpha` of the test it feeds: the ratio of the Student-t and
/// normal `1 - alpha / 2` quantiles (at alpha 5 %: 1.15 at 9 degrees of freedom, 1.02 at 47;
/// 1 with a sum of squares). A few batch means estimate a spread poorly, and a spread
/// under-estimated makes every anytime-valid bound too narrow; the smaller the test's
/// alpha (a Bonferroni share, say), the further into the tails the widening must reach.
fn small_sample_factor(dof: f64, alpha: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
    if !((1.0..=1e4).contains(&dof) && alpha > 0.0 && alpha < 1.0) {
        return 1.0;
    }
    let p = 1.0 - alpha / 2.0;
    StudentsT::new(0.0, 1.0, dof).map_or(1.0, |t| {
        t.inverse_cdf(p) / Normal::standard().inverse_cdf(p)
    })
}

fn from_side(side: Side) -> LimitSide {
    match side {
        Side::Above => LimitSide::Above,
        Side::Below => LimitSide::Below,
        Side::Unknown => LimitSide::Unknown,
    }
}

/// The quantile `q` against `limit` through exceedance counts at bucket bounds: the quantile
/// is above a bound `b` when P(value > b) > 1 - q, and at most `b` when P(value > b) < 1 - q.
fn quantile_vs_limit(buckets: &[iter8_api::Bucket], q: f64, limit: f64, alpha: f64) -> LimitSide {
    // Without a +Inf bucket the total is unknown: the last count under-counts exceedances.
    let Some(total) = buckets
        .last()
        .filter(|b| b.le.value().is_infinite())
        .map(|b| b.count)
        .filter(|&n| n > 0.0)
    else {
        return LimitSide::Unknown;
    };
    let finite = || buckets.iter().filter(|b| b.le.value().is_finite());
    let exceed = |b: &iter8_api::Bucket| rate_vs_limit(total - b.count, total, 1.0 - q, alpha);
    // Shown above: at the smallest bound at or above the limit.
    if let Some(b) = finite().find(|b| b.le.value() >= limit)
        && exceed(b) == Side::Above
    {
        return LimitSide::Above;
    }
    // Shown at or below: at the largest bound at or below the limit.
    if let Some(b) = finite().rfind(|b| b.le.value() <= limit)
        && exceed(b) == Side::Below
    {
        return LimitSide::Below;
    }
    LimitSide::Unknown
}

/// Compares a candidate with the baseline on target `t` by the mSPRT: `Above` when the
/// candidate's value, oriented so that larger is better, is shown above the baseline's
/// shifted by `shift` (a fraction of the baseline, in the worse direction).
fn compare(
    model: &Model,
    v: usize,
    t: usize,
    direction: Direction,
    shift: f64,
    scale: f64,
    alpha: f64,
) -> Side {
    // A mean whose spread is assumed, or estimated from too few batches, decides nothing.
    if !(model.spread_estimated(v, t) && model.spread_estimated(0, t)) {
        return Side::Unknown;
    }
    let Some(d) = Difference::new(model, v, t, direction, shift, alpha) else {
        return Side::Unknown;
    };
    let tau = scale * d.baseline.abs();
    let tau2 = if tau > 0.0 { tau * tau } else { d.variance };
    difference_vs_zero(d.delta, d.variance, tau2, alpha)
}

/// The fixed-horizon one-sided z-test of "the candidate's reward is better than the
/// baseline's" at level `alpha`, for the last iteration only: `Above` or `Unknown`.
fn final_look_test(model: &Model, v: usize, t: usize, direction: Direction, alpha: f64) -> Side {
    if !(model.spread_estimated(v, t) && model.spread_estimated(0, t)) {
        return Side::Unknown;
    }
    let Some(d) = Difference::new(model, v, t, direction, 0.0, alpha) else {
        return Side::Unknown;
    };
    let sd = d.variance.sqrt();
    if sd.is_finite() && sd > 0.0 && d.delta / sd >= normal_upper_quantile(alpha) {
        Side::Above
    } else {
        Side::Unknown
    }
}

/// A candidate's value minus the baseline's shifted by `shift`, oriented so that larger is
/// better, with the sampling variance of that difference.
struct Difference {
    delta: f64,
    variance: f64,
    /// The baseline's value, unshifted.
    baseline: f64,
}

impl Difference {
    fn new(
        model: &Model,
        v: usize,
        t: usize,
        direction: Direction,
        shift: f64,
        alpha: f64,
    ) -> Option<Self> {
        let (Some(c), Some(b)) = (&model.posteriors[v][t], &model.posteriors[0][t]) else {
            return None;
        };
        let limit = (1.0 + shift) * b.value();
        let delta = match direction {
            Direction::Higher => c.value() - limit,
            Direction::Lower => limit - c.value(),
        };
        let variance = variance(c, alpha) + (1.0 + shift) * (1.0 + shift) * variance(b, alpha);
        Some(Self {
            delta,
            variance,
            baseline: b.value(),
        })
    }
}

/// The `z` with P(Z > z) = `alpha` for a standard normal `Z`.
fn normal_upper_quantile(alpha: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::standard().inverse_cdf(1.0 - alpha)
}

/// The sampling variance of a posterior's point estimate.
fn variance(p: &Posterior, alpha: f64) -> f64 {
    match p {
        Posterior::Rate(_) => {
            let (x, n) = (p.value(), p.sample_size());
            // Half a pseudo-count keeps a zero rate from claiming zero variance.
            let x = (x * n + 0.5) / (n + 1.0);
            x * (1.0 - x) / n.max(1.0)
        }
        Posterior::Mean(m) => (m.std_error() * small_sample_factor(m.dof(), alpha)).powi(2),
        Posterior::Quantile(_) => {
            let (lo, hi) = p.credible_interval();
            let sd = (hi - lo) / 3.92;
            if sd.is_finite() {
                sd * sd
            } else {
                f64::INFINITY
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iter8_api::{Bucket, BucketBound, InfinityLiteral};
    use iter8_api::{
        Criteria, Evidence, ExperimentKind, MeanObservation, Objective, Reward, Strategy, Version,
    };
    use rand::{RngExt, SeedableRng};
    use rand_distr::LogNormal;

    /// A request as the controller's ledger builds it: cumulative (sum, count) of a mean
    /// metric `m` per version, the split in force, and the previous answer's evidence.
    fn mean_request(
        kind: ExperimentKind,
        iteration: u32,
        max_iterations: u32,
        data: &[(f64, f64)],
        weights: &[u32],
        criteria: &Criteria,
        evidence: Option<Evidence>,
    ) -> AssessmentRequest {
        AssessmentRequest {
            kind,
            iteration,
            min_iterations: 1,
            max_iterations: Some(max_iterations),
            versions: data
                .iter()
                .zip(weights)
                .enumerate()
                .map(|(i, (&(sum, count), &weight))| Version {
                    name: format!("v{i}"),
                    weight,
                    metrics: [(
                        "m".to_string(),
                        Observation::Mean(MeanObservation {
                            sum,
                            count,
                            sum_of_squares: None,
                        }),
                    )]
                    .into(),
                    history: Vec::new(),
                })
                .collect(),
            ratios: Vec::new(),
            criteria: criteria.clone(),
            strategy: Strategy::default(),
            evidence,
        }
    }

    /// Runs `runs` experiments of `iterations` iterations with `per_interval` values per
    /// version per interval drawn from `dist`, and counts those in which `hit` held at
    /// some iteration.
    #[allow(clippy::too_many_arguments)] // a test harness: each argument is one knob of the simulation
    fn ever(
        runs: u32,
        iterations: u32,
        kind: ExperimentKind,
        weights: &[u32],
        per_interval: u32,
        dist: LogNormal<f64>,
        criteria: &Criteria,
        hit: impl Fn(&Guards) -> bool,
    ) -> u32 {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(20_261_130);
        let mut hits = 0;
        for _ in 0..runs {
            let mut data = vec![(0.0, 0.0); weights.len()];
            let mut evidence = None;
            for iteration in 1..=iterations {
                for d in &mut data {
                    for _ in 0..per_interval {
                        d.0 += rng.sample(dist);
                    }
                    d.1 += f64::from(per_interval);
                }
                let req = mean_request(
                    kind, iteration, iterations, &data, weights, criteria, evidence,
                );
                let model = Model::new(&req);
                if hit(&Guards::new(&req, &model, req.strategy.alpha)) {
                    hits += 1;
                    break;
                }
                evidence = Some(model.evidence);
            }
        }
        hits
    }

    #[test]
    fn a_mean_at_its_limit_is_shown_met_at_most_alpha_of_the_time_over_48_looks() {
        // Lognormal latency, median 200 ms, sigma 0.6: the true mean is the limit.
        let (median, sigma): (f64, f64) = (200.0, 0.6);
        let limit = median * (sigma * sigma / 2.0).exp();
        let criteria = Criteria {
            objectives: vec![Objective {
                metric: "m".into(),
                quantile: None,
                upper_limit: Some(limit),
                lower_limit: None,
            }],
            ..Criteria::default()
        };
        let dist = LogNormal::new(median.ln(), sigma).expect("lognormal");
        let runs = 1500;
        let met = ever(
            runs,
            48,
            ExperimentKind::PerformanceTest,
            &[100],
            400,
            dist,
            &criteria,
            |g| g.criteria[0][0] == Status::Met,
        );
        // alpha = 5 %: at most 75 of 1,500.
        assert!(
            met * 20 <= runs,
            "{met} of {runs} runs showed the limit met"
        );
    }

    #[test]
    fn a_mean_reward_in_an_a_a_test_is_shown_better_at_most_alpha_of_the_time() {
        let criteria = Criteria {
            rewards: vec![Reward {
                metric: "m".into(),
                quantile: None,
                preferred_direction: Direction::Higher,
            }],
            ..Criteria::default()
        };
        let dist = LogNormal::new(0.0, 1.5).expect("lognormal");
        let runs = 1000;
        let better = ever(
            runs,
            48,
            ExperimentKind::AB,
            &[50, 50],
            200,
            dist,
            &criteria,
            |g| g.reward[1] == Side::Above,
        );
        assert!(
            better * 20 <= runs,
            "{better} of {runs} A/A runs showed v1 better"
        );
    }

    /// An A/B(/n) request on a conversion-rate reward: `(requests, conversions)` per version.
    fn rate_request(
        iteration: u32,
        data: &[(f64, f64)],
        evidence: Option<Evidence>,
    ) -> AssessmentRequest {
        let versions: Vec<serde_json::Value> = data
            .iter()
            .enumerate()
            .map(|(i, (n, c))| {
                serde_json::json!({"name": format!("v{i}"), "weight": if i == 0 { 100 } else { 0 },
                    "metrics": {"requests": {"counter": n}, "conversions": {"counter": c}}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "kind": if data.len() > 2 { "abn" } else { "ab" },
            "iteration": iteration, "maxIterations": 10, "versions": versions,
            "ratios": [{"name": "cr", "numerator": "conversions", "denominator": "requests"}],
            "criteria": {"rewards": [{"metric": "cr", "preferredDirection": "higher"}]},
            "evidence": evidence
        }))
        .expect("request")
    }

    fn reward_side(req: &AssessmentRequest) -> Side {
        let model = Model::new(req);
        Guards::new(req, &model, req.strategy.alpha).reward[1]
    }

    #[test]
    fn the_student_t_widening_follows_the_level_of_the_test() {
        // At alpha 5 % the two-sided 97.5 % quantiles: 2.262 / 1.960 at 9 degrees of freedom.
        assert!((small_sample_factor(9.0, 0.05) - 2.262_157 / 1.959_964).abs() < 1e-4);
        // A Bonferroni share (alpha / 5) reaches further into the tails: wider.
        assert!(small_sample_factor(9.0, 0.01) > small_sample_factor(9.0, 0.05) + 0.05);
        assert_eq!(small_sample_factor(f64::INFINITY, 0.05), 1.0);
    }

    #[test]
    fn a_worse_reward_needs_the_minimum_of_observations_to_be_shown() {
        // No conversion at all, against 5 %: worse on 400 observations, held on 80.
        let base = (8_000.0, 400.0);
        assert_eq!(
            reward_side(&rate_request(2, &[base, (80.0, 0.0)], None)),
            Side::Unknown
        );
        assert_eq!(
            reward_side(&rate_request(2, &[base, (400.0, 0.0)], None)),
            Side::Below
        );
    }

    #[test]
    fn the_reward_gate_splits_alpha_across_candidates() {
        // The smallest lift the A/B gate confirms at iteration 5 is not confirmed when two
        // more candidates (equal to the baseline) share alpha.
        let base = (20_000.0, 1_000.0);
        let lift = (1_000..1_400)
            .map(f64::from)
            .find(|&c| reward_side(&rate_request(5, &[base, (20_000.0, c)], None)) == Side::Above)
            .expect("some lift is confirmed");
        let abn = rate_request(5, &[base, (20_000.0, lift), base, base], None);
        assert_eq!(reward_side(&abn), Side::Unknown, "lift {lift}");
    }

    #[test]
    fn the_final_look_is_taken_once() {
        let base = (20_000.0, 1_000.0);
        // A lift the final look confirms at the last iteration and the mSPRT does not.
        let lift = (1_000..1_400)
            .map(f64::from)
            .find(|&c| reward_side(&rate_request(10, &[base, (20_000.0, c)], None)) == Side::Above)
            .expect("some lift is confirmed");
        assert_eq!(
            reward_side(&rate_request(9, &[base, (20_000.0, lift)], None)),
            Side::Unknown
        );
        let first = rate_request(10, &[base, (20_000.0, lift)], None);
        let model = Model::new(&first);
        assert_eq!(Guards::new(&first, &model, 0.05).final_look, Some(10));
        // Once the evidence says it was taken, a later attempt does not look again.
        let mut evidence = model.evidence.clone();
        evidence.iteration = 10;
        evidence.final_look = Some(10);
        let again = rate_request(11, &[base, (20_000.0, lift)], Some(evidence));
        assert_eq!(reward_side(&again), Side::Unknown);
    }

    #[test]
    fn an_assumed_or_two_batch_spread_of_a_mean_reward_decides_nothing() {
        let criteria = Criteria {
            rewards: vec![Reward {
                metric: "m".into(),
                quantile: None,
                preferred_direction: Direction::Higher,
            }],
            ..Criteria::default()
        };
        // Revenue per user 10 against 1: an assumed spread (no history) would call it.
        let req = mean_request(
            ExperimentKind::AB,
            1,
            20,
            &[(4_000.0, 4_000.0), (40_000.0, 4_000.0)],
            &[50, 50],
            &criteria,
            None,
        );
        let model = Model::new(&req);
        assert_eq!(Guards::new(&req, &model, 0.05).reward[1], Side::Unknown);
        // Two batches: still nothing.
        let second = mean_request(
            ExperimentKind::AB,
            2,
            20,
            &[(8_100.0, 8_000.0), (79_000.0, 8_000.0)],
            &[50, 50],
            &criteria,
            Some(model.evidence),
        );
        let model = Model::new(&second);
        assert_eq!(Guards::new(&second, &model, 0.05).reward[1], Side::Unknown);
    }

    #[test]
    fn a_mean_with_two_unequal_batches_is_data_with_an_assumed_spread() {
        // 4,000 then 3,922 observations: fewer than two effective batches, which used to
        // leave the version with no posterior at all ("no data yet" on 7,922 requests).
        let criteria = Criteria {
            objectives: vec![Objective {
                metric: "m".into(),
                quantile: None,
                lower_limit: None,
                upper_limit: Some(500.0),
            }],
            ..Criteria::default()
        };
        let first = mean_request(
            ExperimentKind::Canary,
            1,
            20,
            &[(800_000.0, 4_000.0), (20_000.0, 100.0)],
            &[50, 50],
            &criteria,
            None,
        );
        let model = Model::new(&first);
        let second = mean_request(
            ExperimentKind::Canary,
            2,
            20,
            &[(1_590_000.0, 7_922.0), (1_000_000.0, 5_000.0)],
            &[50, 50],
            &criteria,
            Some(model.evidence),
        );
        let model = Model::new(&second);
        assert!(model.has_data(0) && model.has_data(1));
        assert!(!model.spread_estimated(0, 0) && !model.spread_estimated(1, 0));
        assert!(
            model
                .warnings
                .iter()
                .any(|w| w.message.contains("too few or too unequal intervals")),
            "{:?}",
            model.warnings
        );
    }

    #[test]
    fn a_removed_version_stays_removed_whatever_its_data_says_later() {
        let criteria = Criteria {
            objectives: vec![Objective {
                metric: "m".into(),
                quantile: None,
                upper_limit: Some(500.0),
                lower_limit: None,
            }],
            ..Criteria::default()
        };
        let req = mean_request(
            ExperimentKind::AB,
            30,
            48,
            &[(200.0, 1.0), (200.0, 1.0)],
            &[100, 0],
            &criteria,
            None,
        );
        let mut model = Model::new(&req);
        assert!(!Guards::new(&req, &model, 0.05).broken(1));
        model.evidence.versions[1].removed = Some("shown broken".into());
        assert!(Guards::new(&req, &model, 0.05).broken(1));
    }

    fn buckets(at_800: f64, total: f64) -> Vec<Bucket> {
        vec![
            Bucket {
                le: BucketBound::Finite(500.0),
                count: at_800 * 0.9,
            },
            Bucket {
                le: BucketBound::Finite(800.0),
                count: at_800,
            },
            Bucket {
                le: BucketBound::Infinite(InfinityLiteral::PlusInf),
                count: total,
            },
        ]
    }

    #[test]
    fn p95_at_a_bucket_bound_is_an_exceedance_rate_test() {
        // 6.5 % above 800 in 4,000: p95 > 800 is shown.
        assert_eq!(
            quantile_vs_limit(&buckets(3740.0, 4000.0), 0.95, 800.0, 0.05),
            LimitSide::Above
        );
        // 1 % above 800 in 4,000: p95 <= 800 is shown.
        assert_eq!(
            quantile_vs_limit(&buckets(3960.0, 4000.0), 0.95, 800.0, 0.05),
            LimitSide::Below
        );
        // 5.2 % above 800: too close to tell.
        assert_eq!(
            quantile_vs_limit(&buckets(3792.0, 4000.0), 0.95, 800.0, 0.05),
            LimitSide::Unknown
        );
    }

    #[test]
    fn a_limit_between_bounds_uses_the_bound_above_for_violations_and_below_for_compliance() {
        // Limit 700: violation is read at 800, compliance at 500 (where 10 % exceed).
        assert_eq!(
            quantile_vs_limit(&buckets(3740.0, 4000.0), 0.95, 700.0, 0.05),
            LimitSide::Above
        );
        assert_eq!(
            quantile_vs_limit(&buckets(3960.0, 4000.0), 0.95, 700.0, 0.05),
            LimitSide::Unknown
        );
    }
}
