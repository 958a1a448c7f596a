//! The scenarios: each version's true behaviour, the criteria it is judged by, the right
//! decision and why it is right.

use rand::RngExt;
use rand_distr::{Distribution, LogNormal, Pareto};

/// The error-rate objective: at most 1 %.
pub const MAX_ERROR_RATE: f64 = 0.01;
/// The mean-latency objective (ms).
pub const MAX_MEAN_LATENCY: f64 = 500.0;
/// The p95-latency objective (ms): a bucket bound, so it is tested exactly.
pub const MAX_P95_LATENCY: f64 = 800.0;
/// The share of requests a p95 objective allows above its limit.
pub const P95_EXCEEDANCE: f64 = 0.05;
/// Latency bucket bounds (ms); a `+Inf` bucket follows.
pub const BUCKETS: [f64; 13] = [
    25.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 600.0, 800.0, 1000.0, 2000.0, 5000.0,
];

/// A positive, right-skewed distribution (latencies, order values): a lognormal body with an
/// optional Pareto tail mixed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skewed {
    /// Median of the lognormal body.
    pub median: f64,
    /// Log-scale spread of the body.
    pub sigma: f64,
    /// Share of values from the tail, its scale and its shape.
    pub tail: Option<(f64, f64, f64)>,
}

impl Skewed {
    /// The baseline's latency (ms): median 200, sigma 0.6 (mean 239 ms, 1 % above 800 ms).
    pub const BASE_LATENCY: Skewed = Skewed::lognormal(200.0, 0.6);

    /// A lognormal with this median and log-scale spread.
    pub const fn lognormal(median: f64, sigma: f64) -> Skewed {
        Skewed {
            median,
            sigma,
            tail: None,
        }
    }

    /// The same distribution with every value multiplied by `factor`.
    pub fn scaled(self, factor: f64) -> Skewed {
        Skewed {
            median: self.median * factor,
            tail: self
                .tail
                .map(|(f, scale, shape)| (f, scale * factor, shape)),
            ..self
        }
    }

    /// The true mean.
    pub fn mean(&self) -> f64 {
        self.moment(1)
    }

    /// The true variance (infinite for a tail with shape <= 2).
    pub fn variance(&self) -> f64 {
        let m = self.mean();
        self.moment(2) - m * m
    }

    /// E[X^k] for k = 1, 2.
    fn moment(&self, k: i32) -> f64 {
        let kf = f64::from(k);
        let body = self.median.powi(k) * (kf * kf * self.sigma * self.sigma / 2.0).exp();
        match self.tail {
            None => body,
            Some((f, scale, shape)) => {
                let tail = if shape > kf {
                    shape * scale.powi(k) / (shape - kf)
                } else {
                    f64::INFINITY
                };
                (1.0 - f) * body + f * tail
            }
        }
    }

    /// The true P(X > x).
    pub fn exceedance(&self, x: f64) -> f64 {
        let z = (x / self.median).ln() / self.sigma;
        let body = 0.5 * erfc(z / std::f64::consts::SQRT_2);
        match self.tail {
            None => body,
            Some((f, scale, shape)) => {
                let tail = if x <= scale {
                    1.0
                } else {
                    (scale / x).powf(shape)
                };
                (1.0 - f) * body + f * tail
            }
        }
    }

    /// A sampler of single values.
    pub fn sampler(&self) -> Sampler {
        Sampler {
            body: LogNormal::new(self.median.ln(), self.sigma).ok(),
            tail: self
                .tail
                .and_then(|(f, scale, shape)| Pareto::new(scale, shape).ok().map(|p| (f, p))),
            median: self.median,
        }
    }
}

/// Draws single values of a [`Skewed`] distribution.
pub struct Sampler {
    body: Option<LogNormal<f64>>,
    tail: Option<(f64, Pareto<f64>)>,
    median: f64,
}

impl Sampler {
    /// One value.
    pub fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        if let Some((f, pareto)) = &self.tail
            && rng.random::<f64>() < *f
        {
            return pareto.sample(rng);
        }
        self.body.as_ref().map_or(self.median, |b| b.sample(rng))
    }
}

/// The truth about one version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// Conversion probability per request.
    pub conversion: f64,
    /// The value of one conversion (revenue scenarios reward revenue per request).
    pub order_value: Skewed,
    /// Error probability per request.
    pub errors: f64,
    /// From this iteration on, the error probability becomes the second value.
    pub degrades: Option<(u32, f64)>,
    /// Latency distribution (ms).
    pub latency: Skewed,
    /// From this iteration on, the latency distribution becomes the second value.
    pub slows: Option<(u32, Skewed)>,
}

impl Truth {
    /// The baseline of every scenario: conversion 5 %, errors 0.5 %, latency median 200 ms,
    /// order value lognormal with median 50 and sigma 1.5.
    pub const BASE: Truth = Truth::converting(0.05);

    /// A version like the baseline with conversion `conversion`.
    pub const fn converting(conversion: f64) -> Truth {
        Truth {
            conversion,
            order_value: Skewed::lognormal(50.0, 1.5),
            errors: 0.005,
            degrades: None,
            latency: Skewed::BASE_LATENCY,
            slows: None,
        }
    }

    /// The error probability during `iteration`.
    pub fn errors_at(&self, iteration: u32) -> f64 {
        match self.degrades {
            Some((from, e)) if iteration >= from => e,
            _ => self.errors,
        }
    }

    /// The latency distribution during `iteration`.
    pub fn latency_at(&self, iteration: u32) -> Skewed {
        match self.slows {
            Some((from, l)) if iteration >= from => l,
            _ => self.latency,
        }
    }

    /// Whether the version meets every objective during `iteration`. A version exactly at a
    /// limit does not: it sits on the null hypothesis of that criterion's test, so no valid
    /// test can show it met more often than alpha.
    pub fn feasible_at(&self, iteration: u32) -> bool {
        let latency = self.latency_at(iteration);
        self.errors_at(iteration) < MAX_ERROR_RATE
            && latency.mean() < MAX_MEAN_LATENCY
            && latency.exceedance(MAX_P95_LATENCY) < P95_EXCEEDANCE
    }

    /// Whether the version meets every objective in the long run.
    pub fn feasible(&self) -> bool {
        self.feasible_at(u32::MAX)
    }

    /// Expected revenue per request.
    pub fn revenue(&self) -> f64 {
        self.conversion * self.order_value.mean()
    }

    /// Variance of the revenue of one request (a conversion's value, or 0).
    pub fn revenue_variance(&self) -> f64 {
        let second = self.conversion * self.order_value.moment(2);
        second - self.revenue().powi(2)
    }
}

/// What the versions compete on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardMetric {
    /// Conversions per request (a rate).
    Conversion,
    /// Revenue per request (a heavy-tailed mean: most requests bring nothing).
    Revenue,
}

impl RewardMetric {
    /// The reward's wire name in the request.
    pub fn metric(self) -> &'static str {
        match self {
            RewardMetric::Conversion => "conversion-rate",
            RewardMetric::Revenue => "revenue",
        }
    }
}

/// Which targets a scenario is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A candidate is better than the baseline: the right answer is to promote it (target:
    /// correct >= 97 % wherever an oracle with the same traffic could find it).
    Winner,
    /// Every candidate sits on the null hypothesis (equal to the baseline, or exactly at a
    /// limit): any promotion is a false promotion (target: <= alpha).
    Null,
    /// Every candidate breaks a criterion, at least from some iteration on: the right answer
    /// is to keep the baseline (target: unsafe promotion <= 1 %).
    Unsafe,
}

/// One scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short id, e.g. `S1`.
    pub id: &'static str,
    /// What it tests.
    pub name: &'static str,
    /// Requests per iteration, over all versions (after the warm-up).
    pub requests: u64,
    /// A low-traffic start: the first `.0` iterations carry only `.1` requests each.
    pub warmup: Option<(u32, u64)>,
    /// The last iteration (`maxIterations`).
    pub horizon: u32,
    /// What the versions compete on.
    pub reward: RewardMetric,
    /// The versions; the first is the baseline.
    pub versions: Vec<Truth>,
    /// The right final version (0: keep the baseline).
    pub right: usize,
    /// Which targets apply.
    pub family: Family,
    /// Why `right` is the right answer.
    pub why: &'static str,
}

impl Scenario {
    /// Requests in `iteration`, over all versions.
    pub fn requests_at(&self, iteration: u32) -> u64 {
        match self.warmup {
            Some((until, few)) if iteration <= until => few,
            _ => self.requests,
        }
    }

    /// Requests over the whole horizon: the most observations any design could gather.
    pub fn total_requests(&self) -> u64 {
        (1..=self.horizon).map(|i| self.requests_at(i)).sum()
    }

    /// The true reward of version `v`.
    pub fn reward_of(&self, v: usize) -> f64 {
        let t = &self.versions[v];
        match self.reward {
            RewardMetric::Conversion => t.conversion,
            RewardMetric::Revenue => t.revenue(),
        }
    }

    /// The variance of one request's reward under version `v`.
    pub fn reward_variance(&self, v: usize) -> f64 {
        let t = &self.versions[v];
        match self.reward {
            RewardMetric::Conversion => t.conversion * (1.0 - t.conversion),
            RewardMetric::Revenue => t.revenue_variance(),
        }
    }

    /// Whether version `v` is better than the baseline: it meets every criterion in the long
    /// run, and the baseline does not or `v` has the higher reward. Rolling such a version
    /// back is a loss.
    pub fn better_than_baseline(&self, v: usize) -> bool {
        v != 0
            && self.versions[v].feasible()
            && (!self.versions[0].feasible() || self.reward_of(v) > self.reward_of(0))
    }
}

/// Every scenario, in table order.
pub fn all() -> Vec<Scenario> {
    let base = Truth::BASE;
    let scenario = |id, name, versions, right, family, why| Scenario {
        id,
        name,
        requests: 4_000,
        warmup: None,
        horizon: 48,
        reward: RewardMetric::Conversion,
        versions,
        right,
        family,
        why,
    };
    let better = Truth::converting(0.055);
    let revenue = |versions, right, family, id, name, why| Scenario {
        reward: RewardMetric::Revenue,
        ..scenario(id, name, versions, right, family, why)
    };
    vec![
        scenario(
            "S1",
            "one good candidate (+10 % conversion)",
            vec![base, better],
            1,
            Family::Winner,
            "it meets every criterion and converts better",
        ),
        scenario(
            "S2",
            "candidate converts better (6 %) but has 2 % errors",
            vec![
                base,
                Truth {
                    errors: 0.02,
                    ..Truth::converting(0.06)
                },
            ],
            0,
            Family::Unsafe,
            "the candidate breaks the error-rate limit",
        ),
        scenario(
            "S3",
            "A/B/n: 5.25 / 5.5 / 5.75 (too slow) / 6.0 %",
            vec![
                base,
                Truth::converting(0.0525),
                better,
                Truth {
                    latency: Skewed::lognormal(450.0, 0.6),
                    ..Truth::converting(0.0575)
                },
                Truth::converting(0.06),
            ],
            4,
            Family::Winner,
            "the best reward among the versions that meet the criteria",
        ),
        scenario(
            "S4",
            "A/A: no difference",
            vec![base, base],
            0,
            Family::Null,
            "the candidate is not better",
        ),
        scenario(
            "S5",
            "candidate +10 %, errors 0.5 % -> 4 % from iteration 6",
            vec![
                base,
                Truth {
                    degrades: Some((6, 0.04)),
                    ..better
                },
            ],
            0,
            Family::Unsafe,
            "the candidate breaks the error-rate limit from iteration 6 on",
        ),
        scenario(
            "S6",
            "candidate +10 %, 8 % Pareto tail: mean passes, p95 fails",
            vec![
                base,
                Truth {
                    latency: Skewed {
                        tail: Some((0.08, 600.0, 1.3)),
                        ..Skewed::BASE_LATENCY
                    },
                    ..better
                },
            ],
            0,
            Family::Unsafe,
            "6.5 % of its requests take longer than 800 ms: it breaks the p95 limit",
        ),
        scenario(
            "S7",
            "benign 3 % Pareto tail in both, candidate +10 %",
            {
                let latency = Skewed {
                    tail: Some((0.03, 600.0, 1.5)),
                    ..Skewed::BASE_LATENCY
                };
                vec![Truth { latency, ..base }, Truth { latency, ..better }]
            },
            1,
            Family::Winner,
            "both meet the criteria (mean 286 ms, 3 % above 800 ms) and it converts better",
        ),
        Scenario {
            requests: 200,
            ..scenario(
                "S8",
                "low traffic (200/iteration), candidate +10 %",
                vec![base, better],
                1,
                Family::Winner,
                "it is better, but 9,600 requests cannot show it (the oracle cannot either)",
            )
        },
        scenario(
            "S9",
            "failing baseline (2 % errors) fixed by a candidate, same conversion",
            vec![
                Truth {
                    errors: 0.02,
                    ..base
                },
                base,
            ],
            1,
            Family::Winner,
            "feasibility first: the only version that meets the criteria",
        ),
        scenario(
            "S10",
            "candidate +10 %, errors 0.5 % -> 2 % from iteration 10",
            vec![
                base,
                Truth {
                    degrades: Some((10, 0.02)),
                    ..better
                },
            ],
            0,
            Family::Unsafe,
            "it breaks the error-rate limit from iteration 10 on: a regression that starts \
             mid-run, before the bake time (iteration 12) ends",
        ),
        scenario(
            "S11",
            "candidate +10 %, p95 latency rises from iteration 10 (mean stays under)",
            vec![
                base,
                Truth {
                    slows: Some((10, Skewed::lognormal(371.0, 0.6))),
                    ..better
                },
            ],
            0,
            Family::Unsafe,
            "from iteration 10 on 10 % of its requests take longer than 800 ms (mean 444 ms)",
        ),
        scenario(
            "S12",
            "feasible candidate near a limit: errors 0.8 %, +10 % conversion",
            vec![
                base,
                Truth {
                    errors: 0.008,
                    ..better
                },
            ],
            1,
            Family::Winner,
            "it meets every criterion and converts better",
        ),
        scenario(
            "S13",
            "feasible candidate at the edge: errors 0.95 %, +10 % conversion",
            vec![
                base,
                Truth {
                    errors: 0.0095,
                    ..better
                },
            ],
            1,
            Family::Winner,
            "it meets every criterion and converts better, but the oracle cannot show both \
             within the horizon",
        ),
        scenario(
            "S14",
            "A/A/A: two candidates equal to the baseline",
            vec![base; 3],
            0,
            Family::Null,
            "no candidate is better",
        ),
        scenario(
            "S15",
            "A/A/A/A/A: four candidates equal to the baseline",
            vec![base; 5],
            0,
            Family::Null,
            "no candidate is better",
        ),
        revenue(
            vec![base, base],
            0,
            Family::Null,
            "S16",
            "A/A on revenue per request (5 % convert, lognormal order value, sigma 1.5)",
            "the candidate is not better",
        ),
        revenue(
            {
                let base = Truth {
                    order_value: Skewed::lognormal(50.0, 1.2),
                    ..base
                };
                let richer = Truth {
                    order_value: base.order_value.scaled(1.2),
                    ..base
                };
                vec![base, richer]
            },
            1,
            Family::Winner,
            "S17",
            "revenue per request +20 % (order value lognormal, sigma 1.2)",
            "it meets every criterion and earns more per request",
        ),
        revenue(
            {
                let base = Truth {
                    order_value: Skewed {
                        tail: Some((1.0, 20.0, 1.8)),
                        ..Skewed::lognormal(20.0, 0.1)
                    },
                    ..base
                };
                vec![base, base]
            },
            0,
            Family::Null,
            "S18",
            "A/A on revenue, Pareto(20, 1.8) order values (infinite variance)",
            "the candidate is not better",
        ),
        Scenario {
            warmup: Some((6, 100)),
            ..scenario(
                "S19",
                "low-traffic start (100 requests in each of the first 6 iterations), +10 %",
                vec![base, better],
                1,
                Family::Winner,
                "it is better; the first intervals hold too little data to judge it",
            )
        },
        scenario(
            "S20",
            "candidate +10 %, mean latency exactly at its 500 ms limit",
            vec![
                base,
                Truth {
                    latency: Skewed::lognormal(500.0 / (0.25_f64 * 0.25 / 2.0).exp(), 0.25),
                    ..better
                },
            ],
            0,
            Family::Null,
            "a version at its limit does not meet it: no test may show it met more often \
             than alpha",
        ),
    ]
}

/// The complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_id(id: &str) -> Scenario {
        all()
            .into_iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no scenario {id}"))
    }

    #[test]
    fn scenario_truths_match_the_research_notes() {
        assert!((Skewed::BASE_LATENCY.mean() - 239.4).abs() < 0.5);
        assert!((Skewed::BASE_LATENCY.exceedance(800.0) - 0.0105).abs() < 0.0005);
        let s6 = by_id("S6").versions[1].latency;
        assert!((s6.mean() - 428.0).abs() < 1.0, "{}", s6.mean());
        assert!((s6.exceedance(800.0) - 0.065).abs() < 0.001);
        assert!(!by_id("S3").versions[3].feasible());
        let s5 = by_id("S5").versions[1];
        assert!(s5.feasible_at(5) && !s5.feasible());
        assert!(by_id("S7").versions[1].feasible());
    }

    #[test]
    fn every_right_answer_follows_from_the_truth() {
        for s in all() {
            let better: Vec<usize> = (1..s.versions.len())
                .filter(|&v| s.better_than_baseline(v))
                .collect();
            match s.family {
                Family::Winner => {
                    assert!(better.contains(&s.right), "{}", s.id);
                    let best = better
                        .iter()
                        .map(|&v| s.reward_of(v))
                        .fold(f64::MIN, f64::max);
                    assert_eq!(s.reward_of(s.right), best, "{}", s.id);
                }
                Family::Null => assert!(better.is_empty() && s.right == 0, "{}", s.id),
                Family::Unsafe => {
                    assert!(s.right == 0, "{}", s.id);
                    assert!(
                        s.versions[1..].iter().all(|t| !t.feasible()),
                        "{}: every candidate breaks a criterion",
                        s.id
                    );
                }
            }
        }
    }

    #[test]
    fn delayed_regressions_start_after_the_first_intervals() {
        let s10 = by_id("S10").versions[1];
        assert!(s10.feasible_at(9) && !s10.feasible_at(10));
        let s11 = by_id("S11").versions[1];
        assert!(s11.feasible_at(9) && !s11.feasible_at(10));
        let late = s11.latency_at(10);
        assert!(late.mean() < MAX_MEAN_LATENCY, "only the p95 breaks");
        assert!((late.exceedance(MAX_P95_LATENCY) - 0.10).abs() < 0.002);
    }

    #[test]
    fn the_boundary_candidate_sits_exactly_at_its_mean_limit() {
        let t = by_id("S20").versions[1];
        assert!((t.latency.mean() - MAX_MEAN_LATENCY).abs() < 1e-9);
        assert!(t.latency.exceedance(MAX_P95_LATENCY) < P95_EXCEEDANCE);
        assert!(!t.feasible());
    }

    #[test]
    fn revenue_moments_match_the_lognormal_formulas() {
        let t = Truth::BASE;
        let mean = 50.0 * (1.5_f64 * 1.5 / 2.0).exp();
        assert!((t.revenue() - 0.05 * mean).abs() < 1e-9);
        let second = 0.05 * 2500.0 * (2.0 * 1.5_f64 * 1.5).exp();
        assert!((t.revenue_variance() - (second - t.revenue().powi(2))).abs() < 1e-6);
        let pareto = by_id("S18").versions[0].order_value;
        assert!((pareto.mean() - 1.8 * 20.0 / 0.8).abs() < 1e-9);
        assert!(pareto.variance().is_infinite());
    }

    #[test]
    fn a_low_traffic_start_carries_few_requests_first() {
        let s = by_id("S19");
        assert_eq!(s.requests_at(6), 100);
        assert_eq!(s.requests_at(7), 4_000);
        assert_eq!(s.total_requests(), 6 * 100 + 42 * 4_000);
    }
}
