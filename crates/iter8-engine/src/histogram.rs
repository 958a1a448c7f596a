//! Quantiles of a latency distribution from Prometheus histogram buckets.
//!
//! The bucket probabilities get a Dirichlet posterior. For a quantile `Q_q` the event
//! `Q_q <= x` is the event `F(x) >= q`, and at a bucket bound `F` is a sum of Dirichlet
//! components, hence Beta distributed. So the posterior CDF of `Q_q` is known exactly at every
//! bucket bound, and "p95 <= T" is tested exactly when `T` is a bound. Inside a bucket values
//! are taken as evenly spread, the assumption Prometheus' `histogram_quantile` makes.

use rand::Rng;
use rand_distr::{Distribution, StandardUniform};
use statrs::function::beta::checked_beta_reg;

use iter8_api::HistogramObservation;

/// Total prior pseudo-count spread evenly over the buckets: weak, but it keeps every bucket
/// possible before data arrives.
const PRIOR_MASS: f64 = 1.0;

/// Points computed inside each bucket that holds some of the quantile's posterior mass; the
/// posterior CDF is interpolated linearly between them.
const POINTS_PER_BUCKET: usize = 16;

/// The posterior of one quantile of one histogram.
#[derive(Debug, Clone)]
pub struct QuantilePosterior {
    /// Abscissae of the tabulated posterior CDF, increasing; the last is the last finite bound.
    xs: Vec<f64>,
    /// Posterior CDF of the quantile at `xs`, non-decreasing; below 1 at the end when the
    /// quantile may lie in the `+Inf` bucket.
    cdf_at: Vec<f64>,
    /// The observed (Prometheus-style) quantile.
    value: f64,
    /// Whether the observed quantile fell in the `+Inf` bucket.
    beyond_last_bound: bool,
    count: f64,
}

/// The Dirichlet posterior over bucket probabilities, and the law of `F(x)` it implies.
struct BucketPosterior {
    /// Dirichlet parameters of the buckets, in order (the `+Inf` bucket last, if any).
    alpha: Vec<f64>,
    total: f64,
}

impl BucketPosterior {
    /// P(F(x) >= q) for `x` a fraction `t` into bucket `j` (values spread evenly inside a
    /// bucket). `F(x)` is `F(lower edge) + t * p_j`: exactly Beta at the edges (t = 0 or 1),
    /// and matched to a Beta by its first two moments inside.
    fn prob_quantile_below(&self, j: usize, t: f64, q: f64) -> Option<f64> {
        let below: f64 = self.alpha[..j].iter().sum();
        let inside = self.alpha[j];
        let a0 = self.total;
        let mean = (below + t * inside) / a0;
        let var = (below * (a0 - below) + t * t * inside * (a0 - inside)
            - 2.0 * t * below * inside)
            / (a0 * a0 * (a0 + 1.0));
        if mean <= 1e-12 {
            return Some(0.0);
        }
        if mean >= 1.0 - 1e-12 || var <= 0.0 {
            return Some(if mean >= q { 1.0 } else { 0.0 });
        }
        let common = mean * (1.0 - mean) / var - 1.0;
        if common <= 0.0 {
            return Some(if mean >= q { 1.0 } else { 0.0 });
        }
        let g = 1.0 - checked_beta_reg(mean * common, (1.0 - mean) * common, q).ok()?;
        Some(g.clamp(0.0, 1.0))
    }
}

impl QuantilePosterior {
    /// The posterior of quantile `q` given cumulative buckets; `None` without observations.
    pub fn new(histogram: &HistogramObservation, q: f64) -> Option<Self> {
        let buckets = &histogram.buckets;
        let total = buckets.last()?.count;
        if total.is_nan() || total <= 0.0 {
            return None;
        }
        let first = buckets.first()?.le.value();
        // Values are taken as non-negative; a first bound at or below zero makes the first
        // bucket a point.
        let mut edges = vec![if first > 0.0 { 0.0 } else { first }];
        let mut counts = Vec::with_capacity(buckets.len());
        let mut previous = 0.0;
        for b in buckets {
            counts.push((b.count - previous).max(0.0));
            previous = b.count;
            let le = b.le.value();
            if le.is_finite() {
                edges.push(le);
            }
        }
        if edges.len() < 2 {
            // Only a +Inf bucket: nothing is known about where values lie.
            return None;
        }
        let prior = PRIOR_MASS / counts.len() as f64;
        let alpha: Vec<f64> = counts.iter().map(|c| c + prior).collect();
        let dirichlet = BucketPosterior {
            total: alpha.iter().sum(),
            alpha,
        };
        let mut xs = vec![edges[0]];
        let mut cdf_at = vec![0.0];
        for j in 0..edges.len() - 1 {
            let (lo, hi) = (edges[j], edges[j + 1]);
            let start = cdf_at[cdf_at.len() - 1];
            let end = dirichlet.prob_quantile_below(j, 1.0, q)?;
            if end - start > 1e-9 {
                for k in 1..POINTS_PER_BUCKET {
                    let t = k as f64 / POINTS_PER_BUCKET as f64;
                    xs.push(lo + t * (hi - lo));
                    cdf_at.push(dirichlet.prob_quantile_below(j, t, q)?);
                }
            }
            xs.push(hi);
            cdf_at.push(end);
        }
        // Rounding in the incomplete beta must not make the CDF decrease.
        for j in 1..cdf_at.len() {
            if cdf_at[j] < cdf_at[j - 1] {
                cdf_at[j] = cdf_at[j - 1];
            }
        }
        let (value, beyond_last_bound) = observed_quantile(&edges, &counts, total, q);
        Some(Self {
            xs,
            cdf_at,
            value,
            beyond_last_bound,
            count: total,
        })
    }

    /// The observed quantile, interpolated as Prometheus' `histogram_quantile` does.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Whether the observed quantile lies in the `+Inf` bucket (and is reported as the last
    /// finite bound).
    pub fn beyond_last_bound(&self) -> bool {
        self.beyond_last_bound
    }

    /// The number of observations.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// The largest finite bucket bound.
    pub fn last_bound(&self) -> f64 {
        self.xs.last().copied().unwrap_or(0.0)
    }

    /// P(quantile <= x); exact when `x` is a bucket bound.
    pub fn cdf(&self, x: f64) -> f64 {
        let (xs, g) = (&self.xs, &self.cdf_at);
        if x < xs[0] {
            return 0.0;
        }
        // The first tabulated point at or above x.
        let j = xs.partition_point(|&p| p < x);
        if j >= xs.len() {
            return g[g.len() - 1];
        }
        if j == 0 || xs[j] == x {
            return g[j];
        }
        let t = (x - xs[j - 1]) / (xs[j] - xs[j - 1]);
        g[j - 1] + t * (g[j] - g[j - 1])
    }

    /// The posterior quantile function of the quantile; `+inf` when `p` falls in the mass
    /// beyond the last finite bound.
    pub fn inverse_cdf(&self, p: f64) -> f64 {
        let (xs, g) = (&self.xs, &self.cdf_at);
        if p > g[g.len() - 1] {
            return f64::INFINITY;
        }
        // The first tabulated point whose CDF reaches p.
        let j = g.partition_point(|&c| c < p);
        if j == 0 {
            return xs[0];
        }
        let span = g[j] - g[j - 1];
        if span <= 0.0 {
            return xs[j];
        }
        xs[j - 1] + (p - g[j - 1]) / span * (xs[j] - xs[j - 1])
    }

    /// One draw of the quantile, by inverting the posterior CDF.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let u: f64 = StandardUniform.sample(rng);
        self.inverse_cdf(u)
    }
}

/// The quantile `q` of cumulative buckets as Prometheus' `histogram_quantile` computes it;
/// `None` without observations or finite bounds.
pub fn observed_quantile_of(histogram: &HistogramObservation, q: f64) -> Option<f64> {
    let total = histogram.buckets.last()?.count;
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let first = histogram.buckets.first()?.le.value();
    let mut edges = vec![if first > 0.0 { 0.0 } else { first }];
    let mut counts = Vec::with_capacity(histogram.buckets.len());
    let mut previous = 0.0;
    for b in &histogram.buckets {
        counts.push((b.count - previous).max(0.0));
        previous = b.count;
        if b.le.value().is_finite() {
            edges.push(b.le.value());
        }
    }
    if edges.len() < 2 {
        return None;
    }
    Some(observed_quantile(&edges, &counts, total, q).0)
}

/// `histogram_quantile`: linear interpolation inside the bucket holding rank `q * total`.
fn observed_quantile(edges: &[f64], counts: &[f64], total: f64, q: f64) -> (f64, bool) {
    let rank = q * total;
    let mut below = 0.0;
    for (j, &c) in counts.iter().enumerate() {
        if below + c >= rank && c > 0.0 {
            if j + 1 >= edges.len() {
                // The +Inf bucket: report the last finite bound, as Prometheus does.
                return (edges[edges.len() - 1], true);
            }
            let (lo, hi) = (edges[j], edges[j + 1]);
            return (lo + (hi - lo) * (rank - below) / c, false);
        }
        below += c;
    }
    (edges[edges.len() - 1], false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use iter8_api::{Bucket, BucketBound, InfinityLiteral};
    use rand::SeedableRng;
    use rand_distr::Exp;
    use statrs::distribution::{Beta, ContinuousCDF};

    fn histogram(bounds: &[f64], values: &[f64]) -> HistogramObservation {
        let mut buckets: Vec<Bucket> = bounds
            .iter()
            .map(|&le| Bucket {
                le: BucketBound::Finite(le),
                count: values.iter().filter(|&&v| v <= le).count() as f64,
            })
            .collect();
        buckets.push(Bucket {
            le: BucketBound::Infinite(InfinityLiteral::PlusInf),
            count: values.len() as f64,
        });
        HistogramObservation { buckets, sum: None }
    }

    #[test]
    fn p95_of_an_exponential_is_recovered_from_fine_buckets() {
        // Exponential with mean 100: p95 = 100 * ln(20) = 299.57.
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(11);
        let exp = Exp::new(0.01).expect("valid rate");
        let values: Vec<f64> = (0..20_000).map(|_| exp.sample(&mut rng)).collect();
        let bounds: Vec<f64> = (1..=60).map(|i| f64::from(i) * 10.0).collect();
        let post = QuantilePosterior::new(&histogram(&bounds, &values), 0.95).expect("data");
        let truth = 100.0 * 20f64.ln();
        assert_abs_diff_eq!(post.value(), truth, epsilon = 10.0);
        let tail = 0.025;
        let (lo, hi) = (post.inverse_cdf(tail), post.inverse_cdf(1.0 - tail));
        assert!(lo < truth && truth < hi, "{lo} < {truth} < {hi}");
        assert!(hi - lo < 30.0, "interval too wide: {lo}..{hi}");
    }

    #[test]
    fn exceedance_at_a_bucket_bound_is_an_exact_beta_tail() {
        // 1000 values: 960 at or below 500, 40 above. P(p95 <= 500) = P(F(500) >= 0.95).
        let h = HistogramObservation {
            buckets: vec![
                Bucket {
                    le: BucketBound::Finite(100.0),
                    count: 700.0,
                },
                Bucket {
                    le: BucketBound::Finite(500.0),
                    count: 960.0,
                },
                Bucket {
                    le: BucketBound::Infinite(InfinityLiteral::PlusInf),
                    count: 1000.0,
                },
            ],
            sum: None,
        };
        let post = QuantilePosterior::new(&h, 0.95).expect("data");
        let prior = 1.0 / 3.0;
        let f = Beta::new(960.0 + 2.0 * prior, 40.0 + prior).expect("valid");
        assert_abs_diff_eq!(post.cdf(500.0), 1.0 - f.cdf(0.95), epsilon = 1e-12);
    }

    #[test]
    fn quantile_in_the_inf_bucket_reports_the_last_bound() {
        let values = vec![1000.0; 10];
        let post = QuantilePosterior::new(&histogram(&[10.0, 20.0], &values), 0.5).expect("data");
        assert_eq!(post.value(), 20.0);
        assert!(post.beyond_last_bound());
        assert!(post.cdf(20.0) < 0.01);
        assert_eq!(post.inverse_cdf(0.5), f64::INFINITY);
    }

    #[test]
    fn empty_histogram_has_no_posterior() {
        assert!(QuantilePosterior::new(&histogram(&[10.0], &[]), 0.9).is_none());
    }

    #[test]
    fn draws_follow_the_cdf() {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(3);
        let exp = Exp::new(0.02).expect("valid rate");
        let values: Vec<f64> = (0..500).map(|_| exp.sample(&mut rng)).collect();
        let bounds = [10.0, 25.0, 50.0, 100.0, 150.0, 250.0];
        let post = QuantilePosterior::new(&histogram(&bounds, &values), 0.9).expect("data");
        let n = 20_000;
        let below = (0..n).filter(|_| post.draw(&mut rng) <= 100.0).count();
        assert_abs_diff_eq!(below as f64 / n as f64, post.cdf(100.0), epsilon = 0.01);
    }
}
