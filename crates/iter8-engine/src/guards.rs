//! Anytime-valid guards applied to a request: for every version and criterion, whether the
//! cumulative data shows the criterion broken or met; and for every candidate, whether its
//! reward is shown better or worse than the baseline's.
//!
//! * Rates (ratios of counters) use Robbins' mixture confidence sequence.
//! * Quantile limits use the exceedance count at a bucket bound: "p95 <= T" is exactly
//!   "P(value > T) <= 5 %" when `T` is a bound. When it is not, the nearest bound above `T`
//!   can show a violation and the nearest bound below can show compliance.
//! * Means use the asymptotic confidence sequence. Their spread comes from the sum of squares
//!   or from at least five batch means in the history; with less, a mean is never shown
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

use iter8_api::{AssessmentRequest, Direction, Observation};

use crate::model::{Check, Model};
use crate::posterior::Posterior;
use crate::sequential::{Side, difference_vs_zero, mean_vs_limit, rate_vs_limit};
use crate::series::batch_means_error;

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
}

/// The mixture scale of the mSPRT, as a fraction of the baseline's value: effects of about
/// this size are detected fastest.
const EFFECT_SCALE: f64 = 0.1;

/// Batch means needed before a mean without a sum of squares is tested.
const MIN_BATCHES: f64 = 5.0;

/// The share of `alpha` kept for the fixed-horizon test of the reward at the last iteration.
pub const FINAL_LOOK_SHARE: f64 = 0.4;

impl Guards {
    /// Runs every guard at level `alpha`.
    pub fn new(req: &AssessmentRequest, model: &Model, alpha: f64) -> Self {
        let versions = req.versions.len();
        let criteria = (0..versions)
            .map(|v| {
                model
                    .criteria
                    .iter()
                    .map(|c| criterion_status(req, model, v, c.check, alpha))
                    .collect()
            })
            .collect();
        let planned = req.max_iterations.is_some();
        let last = req.max_iterations.is_some_and(|m| req.iteration >= m);
        let sequential_alpha = if planned {
            alpha * (1.0 - FINAL_LOOK_SHARE)
        } else {
            alpha
        };
        let reward = (0..versions)
            .map(|v| match model.reward {
                Some((t, direction)) if v > 0 => {
                    match compare(model, v, t, direction, 0.0, EFFECT_SCALE, sequential_alpha) {
                        Side::Unknown if last => {
                            final_look(model, v, t, direction, alpha * FINAL_LOOK_SHARE)
                        }
                        side => side,
                    }
                }
                _ => Side::Unknown,
            })
            .collect();
        Self { criteria, reward }
    }

    /// Whether a version is shown to break any criterion.
    pub fn broken(&self, version: usize) -> bool {
        self.criteria[version].contains(&Status::Broken)
    }
}

fn criterion_status(
    req: &AssessmentRequest,
    model: &Model,
    v: usize,
    check: Check,
    alpha: f64,
) -> Status {
    match check {
        Check::Absolute {
            target,
            lower,
            upper,
        } => {
            let side = |limit: f64| absolute(req, model, v, target, limit, alpha);
            let up = upper.map_or(Status::Met, |u| match side(u) {
                LimitSide::Above => Status::Broken,
                LimitSide::Below => Status::Met,
                LimitSide::Unknown => Status::Open,
            });
            let low = lower.map_or(Status::Met, |l| match side(l) {
                LimitSide::Above => Status::Met,
                LimitSide::Below => Status::Broken,
                LimitSide::Unknown => Status::Open,
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
            match compare(model, v, target, direction, shift, scale, alpha) {
                Side::Above => Status::Met,
                Side::Below => Status::Broken,
                Side::Unknown => Status::Open,
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

fn absolute(
    req: &AssessmentRequest,
    model: &Model,
    v: usize,
    t: usize,
    limit: f64,
    alpha: f64,
) -> LimitSide {
    let target = &model.targets[t];
    let version = &req.versions[v];
    if let Some(ratio) = req.ratios.iter().find(|r| r.name == target.metric) {
        let count = |name: &str| match version.metrics.get(name) {
            Some(Observation::Counter(c)) => Some(*c),
            _ => None,
        };
        return match (count(&ratio.numerator), count(&ratio.denominator)) {
            (Some(events), Some(trials)) => from_side(rate_vs_limit(events, trials, limit, alpha)),
            _ => LimitSide::Unknown,
        };
    }
    match (version.metrics.get(&target.metric), target.quantile) {
        (Some(Observation::Histogram(h)), Some(q)) => {
            quantile_vs_limit(&h.buckets, q.fraction(), limit, alpha)
        }
        (Some(Observation::Mean(m)), _) => match &model.posteriors[v][t] {
            Some(Posterior::Mean(p)) if spread_is_estimated(model, v, &target.metric, m) => {
                let mean = m.sum / m.count;
                let sd = p.std_error() * m.count.sqrt();
                from_side(mean_vs_limit(mean, sd, m.count, limit, alpha))
            }
            _ => LimitSide::Unknown,
        },
        _ => LimitSide::Unknown,
    }
}

fn spread_is_estimated(
    model: &Model,
    v: usize,
    metric: &str,
    m: &iter8_api::MeanObservation,
) -> bool {
    m.sum_of_squares.is_some()
        || model.evidence.versions[v]
            .batches
            .get(metric)
            .and_then(batch_means_error)
            .is_some_and(|(_, dof)| dof + 1.0 >= MIN_BATCHES)
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
    let Some(total) = buckets.last().map(|b| b.count).filter(|&n| n > 0.0) else {
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
    let Some(d) = Difference::new(model, v, t, direction, shift) else {
        return Side::Unknown;
    };
    let tau = scale * d.baseline.abs();
    let tau2 = if tau > 0.0 { tau * tau } else { d.variance };
    difference_vs_zero(d.delta, d.variance, tau2, alpha)
}

/// The fixed-horizon one-sided z-test of "the candidate's reward is better than the
/// baseline's" at level `alpha`, for the last iteration only: `Above` or `Unknown`.
fn final_look(model: &Model, v: usize, t: usize, direction: Direction, alpha: f64) -> Side {
    let Some(d) = Difference::new(model, v, t, direction, 0.0) else {
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
    fn new(model: &Model, v: usize, t: usize, direction: Direction, shift: f64) -> Option<Self> {
        let (Some(c), Some(b)) = (&model.posteriors[v][t], &model.posteriors[0][t]) else {
            return None;
        };
        let limit = (1.0 + shift) * b.value();
        let delta = match direction {
            Direction::Higher => c.value() - limit,
            Direction::Lower => limit - c.value(),
        };
        let variance = variance(c) + (1.0 + shift) * (1.0 + shift) * variance(b);
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
fn variance(p: &Posterior) -> f64 {
    match p {
        Posterior::Rate(_) => {
            let (x, n) = (p.value(), p.sample_size());
            // Half a pseudo-count keeps a zero rate from claiming zero variance.
            let x = (x * n + 0.5) / (n + 1.0);
            x * (1.0 - x) / n.max(1.0)
        }
        Posterior::Mean(m) => m.std_error().powi(2),
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
