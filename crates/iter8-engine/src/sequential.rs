//! Anytime-valid tests: confidence sequences for rates and means, and the mixture sequential
//! probability ratio test (mSPRT) for a difference.
//!
//! Each test is a nonnegative (super)martingale under its null hypothesis, so by Ville's
//! inequality the chance that it *ever* crosses `1/alpha` is at most `alpha`: the experiment
//! may be assessed after every iteration, and stop at any of them, without inflating the
//! error rate. The statistics are computed on cumulative data, so a test that has crossed
//! keeps its evidence for as long as the data does not change.

use statrs::function::beta::ln_beta;
use statrs::function::erf::erfc;

/// Where a quantity stands against a limit, as far as an anytime-valid test can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Shown to be above the limit.
    Above,
    /// Shown to be below the limit.
    Below,
    /// Not yet shown either way.
    Unknown,
}

/// The log of Robbins' beta-binomial mixture martingale for the rate `p0`, after `events`
/// successes in `trials` trials, mixing over a Beta(`a`, `b`) prior:
/// `ln B(a + S, b + n - S) - ln B(a, b) - S ln p0 - (n - S) ln(1 - p0)`.
pub fn rate_log_evidence(events: f64, trials: f64, p0: f64, a: f64, b: f64) -> f64 {
    let failures = (trials - events).max(0.0);
    let events = events.max(0.0);
    let p0 = p0.clamp(1e-12, 1.0 - 1e-12);
    ln_beta(a + events, b + failures)
        - ln_beta(a, b)
        - events * p0.ln()
        - failures * (1.0 - p0).ln()
}

/// Tests a rate against `limit` with a Robbins mixture centred on the limit (prior mean at
/// the limit, about one pseudo-observation on the rarer side). The confidence sequence
/// `{p : evidence(p) < ln(1/alpha)}` is an interval, so the rate is shown above (below) the
/// limit exactly when the observed rate is above (below) it and the limit is excluded.
pub fn rate_vs_limit(events: f64, trials: f64, limit: f64, alpha: f64) -> Side {
    if trials.is_nan() || trials <= 0.0 || limit.is_nan() || limit <= 0.0 || limit >= 1.0 {
        return Side::Unknown;
    }
    let strength = 1.0 / limit.min(1.0 - limit);
    let (a, b) = (limit * strength, (1.0 - limit) * strength);
    let observed = events / trials;
    let crossed = rate_log_evidence(events, trials, limit, a, b) >= (1.0 / alpha).ln();
    match (crossed, observed > limit) {
        (false, _) => Side::Unknown,
        (true, true) => Side::Above,
        (true, false) => Side::Below,
    }
}

/// The sample size an asymptotic confidence sequence is tuned to be tightest at.
pub const MEAN_CS_TUNED_AT: f64 = 5_000.0;

/// The half-width of the asymptotic confidence sequence for a mean (Waudby-Smith et al.,
/// arXiv:2103.06476) after `n` observations with standard deviation `sd`:
/// `sd * sqrt(2 (n r + 1) / (n^2 r) * ln(sqrt(n r + 1) / alpha))`, with `r` = rho squared
/// tuned to [`MEAN_CS_TUNED_AT`].
pub fn mean_cs_half_width(sd: f64, n: f64, alpha: f64) -> f64 {
    if n.is_nan() || n <= 0.0 {
        return f64::INFINITY;
    }
    let l = -2.0 * alpha.ln();
    let r = (l + (l + 1.0).ln()) / MEAN_CS_TUNED_AT;
    let nr1 = n * r + 1.0;
    sd * (2.0 * nr1 / (n * n * r) * (nr1.sqrt() / alpha).ln()).sqrt()
}

/// Tests a mean against `limit` with the asymptotic confidence sequence.
pub fn mean_vs_limit(mean: f64, sd: f64, n: f64, limit: f64, alpha: f64) -> Side {
    let h = mean_cs_half_width(sd, n, alpha);
    if mean - h > limit {
        Side::Above
    } else if mean + h < limit {
        Side::Below
    } else {
        Side::Unknown
    }
}

/// The log of the two-sided normal-mixture SPRT statistic (Johari et al., arXiv:1512.04922)
/// for an estimated difference `delta` with variance `variance`, mixing the effect over
/// N(0, `tau2`): `0.5 ln(V / (V + tau2)) + tau2 delta^2 / (2 V (V + tau2))`.
pub fn msprt_log_evidence(delta: f64, variance: f64, tau2: f64) -> f64 {
    if !(variance > 0.0 && tau2 > 0.0) {
        return 0.0;
    }
    let s = variance + tau2;
    0.5 * (variance / s).ln() + tau2 * delta * delta / (2.0 * variance * s)
}

/// The log of the one-sided mSPRT statistic for "the difference is above zero": the mixture
/// over the half-normal N(0, `tau2`) restricted to positive effects. It equals twice the
/// two-sided statistic times the posterior probability of a positive effect,
/// `2 Lambda Phi(m / s)` with `m = tau2 delta / (V + tau2)` and `s^2 = V tau2 / (V + tau2)`,
/// and is a supermartingale whenever the true difference is at most zero.
pub fn msprt_one_sided_log_evidence(delta: f64, variance: f64, tau2: f64) -> f64 {
    if !(variance > 0.0 && tau2 > 0.0) {
        return 0.0;
    }
    let s = variance + tau2;
    let m = tau2 * delta / s;
    let sd = (variance * tau2 / s).sqrt();
    let positive = 0.5 * erfc(-m / sd / std::f64::consts::SQRT_2);
    std::f64::consts::LN_2 + msprt_log_evidence(delta, variance, tau2) + positive.max(1e-300).ln()
}

/// Tests a difference against zero with two one-sided mSPRTs, each at level `alpha`: shown
/// above zero once the statistic for positive effects crosses `1/alpha`, below zero once the
/// statistic for negative effects does.
pub fn difference_vs_zero(delta: f64, variance: f64, tau2: f64, alpha: f64) -> Side {
    let bound = (1.0 / alpha).ln();
    if msprt_one_sided_log_evidence(delta, variance, tau2) >= bound {
        Side::Above
    } else if msprt_one_sided_log_evidence(-delta, variance, tau2) >= bound {
        Side::Below
    } else {
        Side::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn robbins_mixture_matches_its_closed_form() {
        // Uniform prior, 3 successes in 4 trials, p0 = 1/2: B(4, 2) / 0.5^4 = (1/20) * 16.
        let e = rate_log_evidence(3.0, 4.0, 0.5, 1.0, 1.0);
        assert_abs_diff_eq!(e, (16.0f64 / 20.0).ln(), epsilon = 1e-12);
        // No data, no evidence.
        assert_abs_diff_eq!(
            rate_log_evidence(0.0, 0.0, 0.3, 2.0, 5.0),
            0.0,
            epsilon = 1e-12
        );
    }

    #[test]
    fn a_rate_far_above_its_limit_is_shown_above_and_one_far_below_is_shown_below() {
        assert_eq!(rate_vs_limit(40.0, 1000.0, 0.01, 0.05), Side::Above);
        assert_eq!(rate_vs_limit(5.0, 4000.0, 0.01, 0.05), Side::Below);
        assert_eq!(rate_vs_limit(11.0, 1000.0, 0.01, 0.05), Side::Unknown);
        assert_eq!(rate_vs_limit(0.0, 0.0, 0.01, 0.05), Side::Unknown);
    }

    #[test]
    fn rate_test_at_the_limit_rarely_ever_crosses_under_continuous_monitoring() {
        // Ville: P(ever cross) <= alpha. 400 runs of 5,000 Bernoulli(1 %) looks each.
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(1);
        let runs = 400;
        let mut crossed = 0;
        for _ in 0..runs {
            let mut events = 0.0;
            for n in 1..=5_000 {
                if rng.random::<f64>() < 0.01 {
                    events += 1.0;
                }
                if n % 50 == 0 && rate_vs_limit(events, f64::from(n), 0.01, 0.05) != Side::Unknown {
                    crossed += 1;
                    break;
                }
            }
        }
        assert!(crossed <= runs * 5 / 100, "{crossed} of {runs} crossed");
    }

    #[test]
    fn mean_cs_shrinks_like_sqrt_log_n_over_n_and_is_wider_than_a_z_interval() {
        let w1 = mean_cs_half_width(1.0, 1_000.0, 0.05);
        let w2 = mean_cs_half_width(1.0, 100_000.0, 0.05);
        assert!(w1 > 1.96 / 1_000f64.sqrt());
        assert!(w2 < w1 / 5.0);
        assert_eq!(
            mean_vs_limit(240.0, 160.0, 4_000.0, 500.0, 0.05),
            Side::Below
        );
        assert_eq!(
            mean_vs_limit(540.0, 300.0, 4_000.0, 500.0, 0.05),
            Side::Above
        );
        assert_eq!(
            mean_vs_limit(505.0, 300.0, 4_000.0, 500.0, 0.05),
            Side::Unknown
        );
    }

    #[test]
    fn msprt_matches_its_closed_form() {
        // V = tau2 = 1, delta = 2: 0.5 ln(1/2) + 4 / 4.
        assert_abs_diff_eq!(
            msprt_log_evidence(2.0, 1.0, 1.0),
            0.5 * 0.5f64.ln() + 1.0,
            epsilon = 1e-12
        );
        // A clearly positive effect: nearly all the posterior mass is positive, so the
        // one-sided statistic is twice the two-sided one.
        assert_abs_diff_eq!(
            msprt_one_sided_log_evidence(0.01, 1e-6, 1e-5),
            std::f64::consts::LN_2 + msprt_log_evidence(0.01, 1e-6, 1e-5),
            epsilon = 1e-9
        );
        // No effect: half the mass is positive, so it equals the two-sided statistic.
        assert_abs_diff_eq!(
            msprt_one_sided_log_evidence(0.0, 1e-6, 1e-5),
            msprt_log_evidence(0.0, 1e-6, 1e-5),
            epsilon = 1e-12
        );
        assert_eq!(difference_vs_zero(0.01, 1e-6, 1e-5, 0.05), Side::Above);
        assert_eq!(difference_vs_zero(-0.01, 1e-6, 1e-5, 0.05), Side::Below);
        assert_eq!(difference_vs_zero(0.0005, 1e-6, 1e-5, 0.05), Side::Unknown);
    }

    #[test]
    fn msprt_under_no_difference_rarely_ever_crosses() {
        // Two N(0, 1) streams, 100 looks of 100 pairs each: type I error at most alpha.
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(2);
        let normal = rand_distr::StandardNormal;
        let runs = 300;
        let mut crossed = 0;
        for _ in 0..runs {
            let (mut sa, mut sb, mut n) = (0.0, 0.0, 0.0);
            for _ in 0..100 {
                for _ in 0..100 {
                    let a: f64 = rng.sample(normal);
                    let b: f64 = rng.sample(normal);
                    sa += a;
                    sb += b;
                    n += 1.0;
                }
                let delta = (sb - sa) / n;
                if difference_vs_zero(delta, 2.0 / n, 0.01, 0.05) != Side::Unknown {
                    crossed += 1;
                    break;
                }
            }
        }
        assert!(crossed <= runs * 5 / 100, "{crossed} of {runs} crossed");
    }
}
