//! Conjugate posteriors of one metric of one version: closed forms for estimates, intervals and
//! tail probabilities, and a sampler for joint Monte-Carlo draws.

use rand::Rng;
use rand_distr::{Beta as BetaSampler, Distribution, StandardNormal, StudentT};
use statrs::distribution::{Beta, ContinuousCDF, Normal, StudentsT};

use crate::histogram::QuantilePosterior;

/// The credible mass of reported intervals.
pub const CREDIBLE_MASS: f64 = 0.95;

/// Shape parameters above which a Beta is drawn from its normal approximation: the two agree
/// to well under the Monte-Carlo noise of 10,000 draws, and a normal draw is several times
/// cheaper than an exact Beta draw.
const BETA_NORMAL_APPROX: f64 = 50.0;

/// Smallest shape for which a Gamma is drawn by the Wilson-Hilferty cube of a normal draw
/// (quantile error below 0.5 % there); smaller shapes are drawn exactly.
const GAMMA_WILSON_HILFERTY: f64 = 3.0;

/// Trials beyond which statrs' Beta quantile is not used: from about 1e7 trials its Newton
/// iteration never ends (found by fuzzing: a canary with ten million requests and no error
/// hung the engine), so the quantile is found by bisection on the CDF instead.
const BETA_QUANTILE_BY_BISECTION: f64 = 1e6;

/// Degrees of freedom above which a Student-t quantile is taken from the normal.
const T_QUANTILE_AS_NORMAL_DOF: f64 = 1e6;

/// Degrees of freedom above which a Student-t is drawn by a Cornish-Fisher expansion of a
/// normal draw (accurate to about 1e-4 in the quantile there).
const T_EXPANSION_DOF: f64 = 30.0;

/// The belief about one metric of one version after seeing its data.
#[derive(Debug, Clone)]
pub enum Posterior {
    /// A rate in [0, 1]: Beta over the success probability (Jeffreys prior).
    Rate(RatePosterior),
    /// A mean: Student-t over the mean (non-informative prior).
    Mean(MeanPosterior),
    /// A quantile of a histogram: Dirichlet over the bucket probabilities.
    Quantile(QuantilePosterior),
}

/// Beta(events + 1/2, trials - events + 1/2).
#[derive(Debug, Clone)]
pub struct RatePosterior {
    events: f64,
    trials: f64,
    beta: Beta,
    sampler: RateSampler,
}

#[derive(Debug, Clone)]
enum RateSampler {
    Exact(BetaSampler<f64>),
    /// Two Wilson-Hilferty Gammas, for moderately skewed Betas (few errors in many requests).
    Gammas {
        a: f64,
        b: f64,
    },
    Normal {
        mean: f64,
        sd: f64,
    },
}

/// Student-t with `dof` degrees of freedom around the sample mean.
#[derive(Debug, Clone)]
pub struct MeanPosterior {
    mean: f64,
    scale: f64,
    dof: f64,
    count: f64,
    /// The closed form; `None` when the spread is zero and the belief is a point.
    dist: Option<StudentsT>,
    /// The exact sampler for few degrees of freedom.
    exact_t: Option<StudentT<f64>>,
}

impl Posterior {
    /// The observed value (the point estimate reported to users).
    pub fn value(&self) -> f64 {
        match self {
            Posterior::Rate(r) => r.events / r.trials,
            Posterior::Mean(m) => m.mean,
            Posterior::Quantile(q) => q.value(),
        }
    }

    /// How many observations the belief rests on.
    pub fn sample_size(&self) -> f64 {
        match self {
            Posterior::Rate(r) => r.trials,
            Posterior::Mean(m) => m.count,
            Posterior::Quantile(q) => q.count(),
        }
    }

    /// The equal-tailed credible interval of mass [`CREDIBLE_MASS`].
    pub fn credible_interval(&self) -> (f64, f64) {
        let tail = (1.0 - CREDIBLE_MASS) / 2.0;
        (self.inverse_cdf(tail), self.inverse_cdf(1.0 - tail))
    }

    /// P(metric <= x).
    pub fn cdf(&self, x: f64) -> f64 {
        match self {
            Posterior::Rate(r) => r.beta.cdf(x),
            Posterior::Mean(m) => match &m.dist {
                Some(t) => t.cdf(x),
                None if x >= m.mean => 1.0,
                None => 0.0,
            },
            Posterior::Quantile(q) => q.cdf(x),
        }
    }

    /// The posterior quantile function.
    pub fn inverse_cdf(&self, p: f64) -> f64 {
        match self {
            Posterior::Rate(r) => r.inverse_cdf(p),
            Posterior::Mean(m) => match &m.dist {
                // statrs' t quantile never returns for huge degrees of freedom (found by
                // fuzzing); there the t is a normal to far below f64 precision.
                Some(_) if m.dof > T_QUANTILE_AS_NORMAL_DOF => {
                    m.mean + m.scale * Normal::standard().inverse_cdf(p)
                }
                Some(t) => t.inverse_cdf(p),
                None => m.mean,
            },
            Posterior::Quantile(q) => q.inverse_cdf(p),
        }
    }

    /// Fills `out` with independent draws; one dispatch per call keeps the sampling loop tight.
    pub fn fill<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [f64]) {
        match self {
            Posterior::Rate(RatePosterior {
                sampler: RateSampler::Normal { mean, sd },
                ..
            }) => {
                for x in out {
                    let z: f64 = StandardNormal.sample(rng);
                    *x = (mean + sd * z).clamp(0.0, 1.0);
                }
            }
            Posterior::Rate(RatePosterior {
                sampler: RateSampler::Gammas { a, b },
                ..
            }) => {
                for x in out {
                    let g = wilson_hilferty_gamma(*a, StandardNormal.sample(rng));
                    let h = wilson_hilferty_gamma(*b, StandardNormal.sample(rng));
                    *x = g / (g + h);
                }
            }
            Posterior::Mean(m) if m.exact_t.is_none() => {
                for x in out {
                    *x = m.mean + m.scale * cornish_fisher_t(StandardNormal.sample(rng), m.dof);
                }
            }
            Posterior::Quantile(q) => {
                for x in out {
                    *x = q.draw(rng);
                }
            }
            _ => {
                for x in out {
                    *x = self.draw(rng);
                }
            }
        }
    }

    /// One draw from the posterior.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match self {
            Posterior::Rate(r) => match &r.sampler {
                RateSampler::Exact(b) => b.sample(rng),
                RateSampler::Gammas { a, b } => {
                    let x = wilson_hilferty_gamma(*a, StandardNormal.sample(rng));
                    let y = wilson_hilferty_gamma(*b, StandardNormal.sample(rng));
                    x / (x + y)
                }
                RateSampler::Normal { mean, sd } => {
                    let z: f64 = StandardNormal.sample(rng);
                    (mean + sd * z).clamp(0.0, 1.0)
                }
            },
            Posterior::Mean(m) => {
                let t = match &m.exact_t {
                    Some(t) => t.sample(rng),
                    None => cornish_fisher_t(StandardNormal.sample(rng), m.dof),
                };
                m.mean + m.scale * t
            }
            Posterior::Quantile(q) => q.draw(rng),
        }
    }
}

impl RatePosterior {
    /// The posterior after `events` successes in `trials` trials; `None` without trials.
    pub fn new(events: f64, trials: f64) -> Option<Self> {
        if !(trials > 0.0 && events >= 0.0 && events <= trials) {
            return None;
        }
        let (a, b) = (events + 0.5, trials - events + 0.5);
        let beta = Beta::new(a, b).ok()?;
        let sampler = if a > BETA_NORMAL_APPROX && b > BETA_NORMAL_APPROX {
            let n = a + b;
            RateSampler::Normal {
                mean: a / n,
                sd: (a * b / (n * n * (n + 1.0))).sqrt(),
            }
        } else if a >= GAMMA_WILSON_HILFERTY && b >= GAMMA_WILSON_HILFERTY {
            RateSampler::Gammas { a, b }
        } else {
            RateSampler::Exact(BetaSampler::new(a, b).ok()?)
        };
        Some(Self {
            events,
            trials,
            beta,
            sampler,
        })
    }
}

impl RatePosterior {
    /// The posterior quantile function.
    fn inverse_cdf(&self, p: f64) -> f64 {
        if self.trials <= BETA_QUANTILE_BY_BISECTION {
            self.beta.inverse_cdf(p)
        } else {
            quantile_by_bisection(&self.beta, p)
        }
    }
}

/// The `p` quantile of a distribution on [0, 1], from its CDF alone.
fn quantile_by_bisection(dist: &Beta, p: f64) -> f64 {
    {
        // The CDF is continuous and increasing on [0, 1]; halve until the bracket is as
        // narrow as f64 can tell apart (at most about 1,100 halvings, down to subnormals).
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        loop {
            let mid = lo + (hi - lo) / 2.0;
            if mid <= lo || mid >= hi || hi - lo <= 1e-15 * lo {
                return mid;
            }
            if dist.cdf(mid) < p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
}

impl MeanPosterior {
    /// The standard error of the mean.
    pub fn std_error(&self) -> f64 {
        self.scale
    }

    /// The degrees of freedom the spread was estimated with.
    pub fn dof(&self) -> f64 {
        self.dof
    }

    /// A Student-t posterior for a mean of `count` values with standard error `std_error`.
    pub fn new(mean: f64, std_error: f64, dof: f64, count: f64) -> Option<Self> {
        if !(mean.is_finite() && std_error.is_finite() && std_error >= 0.0 && dof >= 1.0) {
            return None;
        }
        let exact_t = if dof < T_EXPANSION_DOF {
            Some(StudentT::new(dof).ok()?)
        } else {
            None
        };
        let dist = if std_error > 0.0 {
            Some(StudentsT::new(mean, std_error, dof).ok()?)
        } else {
            None
        };
        Some(Self {
            mean,
            scale: std_error,
            dof,
            count,
            dist,
            exact_t,
        })
    }
}

/// Maps a standard normal draw to a Gamma(shape, 1) draw (Wilson & Hilferty, 1931).
fn wilson_hilferty_gamma(shape: f64, z: f64) -> f64 {
    let c = 1.0 / (9.0 * shape);
    let cube = 1.0 - c + z * c.sqrt();
    shape * (cube * cube * cube).max(0.0)
}

/// Maps a standard normal draw to a Student-t draw with `dof` degrees of freedom
/// (Cornish-Fisher expansion; Abramowitz & Stegun 26.7.5).
fn cornish_fisher_t(z: f64, dof: f64) -> f64 {
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    z + g1 / dof + g2 / (dof * dof) + g3 / (dof * dof * dof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use rand::SeedableRng;

    #[test]
    fn rate_interval_of_ten_million_trials_without_events_is_found() {
        // statrs' Beta quantile never returns for these shapes; Beta(1/2, n) is close to
        // chi-squared(1) / 2n, whose 97.5 % point is 5.0239 / 2n.
        let p = Posterior::Rate(RatePosterior::new(0.0, 1e7).expect("valid"));
        let (lo, hi) = p.credible_interval();
        assert!(lo > 0.0 && lo < hi, "{lo} {hi}");
        assert_abs_diff_eq!(hi * 2e7, 5.0239, epsilon = 1e-3);
        let huge = Posterior::Rate(RatePosterior::new(88.0, 9e15).expect("valid"));
        // Near 2^53 trials statrs' CDF is a step at the mean; the interval shrinks to it.
        let (lo, hi) = huge.credible_interval();
        assert!(lo <= hi && (lo - 88.0 / 9e15).abs() < 1e-15, "{lo} {hi}");
    }

    #[test]
    fn mean_interval_of_a_huge_count_is_found() {
        let p = Posterior::Mean(MeanPosterior::new(10.0, 0.5, 1e15, 1e15).expect("valid"));
        let (lo, hi) = p.credible_interval();
        assert_abs_diff_eq!(lo, 10.0 - 1.959964 * 0.5, epsilon = 1e-5);
        assert_abs_diff_eq!(hi, 10.0 + 1.959964 * 0.5, epsilon = 1e-5);
    }

    #[test]
    fn bisection_agrees_with_statrs_where_statrs_converges() {
        // To 1e-5: at a million trials statrs itself is off by 4e-6 (chi-squared check above).
        for (a, b) in [(0.5, 1e6), (88.5, 1e6), (1e4, 1e5), (12.5, 988.5)] {
            let beta = Beta::new(a, b).expect("valid");
            for p in [0.025, 0.5, 0.975] {
                let exact = beta.inverse_cdf(p);
                let bisected = quantile_by_bisection(&beta, p);
                assert!(
                    (bisected - exact).abs() <= 1e-5 * exact,
                    "{a} {b} {p}: {bisected} {exact}"
                );
            }
        }
    }

    #[test]
    fn rate_interval_matches_beta_quantiles() {
        let p = Posterior::Rate(RatePosterior::new(12.0, 1000.0).expect("valid"));
        let beta = Beta::new(12.5, 988.5).expect("valid");
        let (lo, hi) = p.credible_interval();
        assert_abs_diff_eq!(lo, beta.inverse_cdf(0.025), epsilon = 1e-12);
        assert_abs_diff_eq!(hi, beta.inverse_cdf(0.975), epsilon = 1e-12);
        assert_abs_diff_eq!(p.value(), 0.012);
    }

    #[test]
    fn rate_without_trials_has_no_posterior() {
        assert!(RatePosterior::new(0.0, 0.0).is_none());
        assert!(RatePosterior::new(5.0, 4.0).is_none());
    }

    #[test]
    fn mean_interval_is_a_t_interval() {
        let p = Posterior::Mean(MeanPosterior::new(200.0, 5.0, 9.0, 10.0).expect("valid"));
        let (lo, hi) = p.credible_interval();
        // t(9) 97.5 % quantile is 2.262157.
        assert_abs_diff_eq!(hi - 200.0, 5.0 * 2.262157, epsilon = 1e-4);
        assert_abs_diff_eq!(200.0 - lo, 5.0 * 2.262157, epsilon = 1e-4);
    }

    #[test]
    fn draws_match_the_closed_form_tail_probabilities() {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        for p in [
            Posterior::Rate(RatePosterior::new(3.0, 200.0).expect("valid")),
            Posterior::Rate(RatePosterior::new(300.0, 2000.0).expect("valid")),
            Posterior::Rate(RatePosterior::new(20.0, 5000.0).expect("valid")),
            Posterior::Rate(RatePosterior::new(4.0, 10.0).expect("valid")),
            Posterior::Mean(MeanPosterior::new(100.0, 4.0, 5.0, 6.0).expect("valid")),
            Posterior::Mean(MeanPosterior::new(100.0, 4.0, 80.0, 81.0).expect("valid")),
        ] {
            let x = p.inverse_cdf(0.9);
            let n = 40_000;
            let below = (0..n).filter(|_| p.draw(&mut rng) <= x).count();
            assert_abs_diff_eq!(below as f64 / n as f64, 0.9, epsilon = 0.01);
        }
    }

    #[test]
    fn cornish_fisher_matches_t_quantiles() {
        // t(30) 97.5 % = 2.042272, t(100) 99.5 % = 2.625891.
        assert_abs_diff_eq!(cornish_fisher_t(1.959964, 30.0), 2.042272, epsilon = 2e-4);
        assert_abs_diff_eq!(cornish_fisher_t(2.575829, 100.0), 2.625891, epsilon = 2e-4);
    }
}
