//! The scenarios: each version's true behaviour, the criteria it is judged by, and the right
//! decision.

use rand::RngExt;
use rand_distr::{Distribution, LogNormal, Pareto};

/// The error-rate objective: at most 1 %.
pub const MAX_ERROR_RATE: f64 = 0.01;
/// The mean-latency objective (ms).
pub const MAX_MEAN_LATENCY: f64 = 500.0;
/// The p95-latency objective (ms): a bucket bound, so it is tested exactly.
pub const MAX_P95_LATENCY: f64 = 800.0;
/// Latency bucket bounds (ms); a `+Inf` bucket follows.
pub const BUCKETS: [f64; 13] = [
    25.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 600.0, 800.0, 1000.0, 2000.0, 5000.0,
];

/// A latency distribution: lognormal, with an optional Pareto tail mixed in.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median of the lognormal body (ms).
    pub median: f64,
    /// Log-scale spread of the body.
    pub sigma: f64,
    /// Share of requests from the tail, its scale (ms) and its shape.
    pub tail: Option<(f64, f64, f64)>,
}

impl Latency {
    /// The baseline's latency: median 200 ms, sigma 0.6 (mean 239 ms, 1 % above 800 ms).
    pub const BASE: Latency = Latency {
        median: 200.0,
        sigma: 0.6,
        tail: None,
    };

    /// The true mean.
    pub fn mean(&self) -> f64 {
        let body = self.median * (self.sigma * self.sigma / 2.0).exp();
        match self.tail {
            None => body,
            Some((f, scale, shape)) => {
                let tail = if shape > 1.0 {
                    shape * scale / (shape - 1.0)
                } else {
                    f64::INFINITY
                };
                (1.0 - f) * body + f * tail
            }
        }
    }

    /// The true P(latency > x).
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

    /// A sampler of single latencies.
    pub fn sampler(&self) -> LatencySampler {
        LatencySampler {
            body: LogNormal::new(self.median.ln(), self.sigma).ok(),
            tail: self
                .tail
                .and_then(|(f, scale, shape)| Pareto::new(scale, shape).ok().map(|p| (f, p))),
            median: self.median,
        }
    }
}

/// Draws latencies of one version.
pub struct LatencySampler {
    body: Option<LogNormal<f64>>,
    tail: Option<(f64, Pareto<f64>)>,
    median: f64,
}

impl LatencySampler {
    /// One request's latency (ms).
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
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    /// Conversion probability per request (the reward).
    pub conversion: f64,
    /// Error probability per request.
    pub errors: f64,
    /// From this iteration on, the error probability becomes the second value.
    pub degrades: Option<(u32, f64)>,
    /// Latency distribution.
    pub latency: Latency,
}

impl Truth {
    /// A version like the baseline with conversion `conversion`.
    pub const fn converting(conversion: f64) -> Truth {
        Truth {
            conversion,
            errors: 0.005,
            degrades: None,
            latency: Latency::BASE,
        }
    }

    /// The error probability during `iteration`.
    pub fn errors_at(&self, iteration: u32) -> f64 {
        match self.degrades {
            Some((from, e)) if iteration >= from => e,
            _ => self.errors,
        }
    }

    /// Whether the version meets every objective during `iteration`.
    pub fn feasible_at(&self, iteration: u32) -> bool {
        self.errors_at(iteration) <= MAX_ERROR_RATE
            && self.latency.mean() <= MAX_MEAN_LATENCY
            && self.latency.exceedance(MAX_P95_LATENCY) <= 0.05
    }

    /// Whether the version meets every objective in the long run.
    pub fn feasible(&self) -> bool {
        self.feasible_at(u32::MAX)
    }
}

/// One scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short id, e.g. `S1`.
    pub id: &'static str,
    /// What it tests.
    pub name: &'static str,
    /// Requests per iteration, over all versions.
    pub requests: u64,
    /// The last iteration.
    pub horizon: u32,
    /// The versions; the first is the baseline.
    pub versions: Vec<Truth>,
    /// The right final version; `None` means "nothing can be proven: do not promote".
    pub correct: Option<usize>,
}

impl Scenario {
    /// The version whose reward the lost reward is measured against.
    pub fn reference(&self) -> usize {
        self.correct.unwrap_or(0)
    }
}

/// Every scenario, in table order.
pub fn all() -> Vec<Scenario> {
    let base = Truth::converting(0.05);
    let scenario = |id, name, versions, correct| Scenario {
        id,
        name,
        requests: 4_000,
        horizon: 48,
        versions,
        correct,
    };
    vec![
        scenario(
            "S1",
            "one good candidate (+10 % conversion)",
            vec![base, Truth::converting(0.055)],
            Some(1),
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
            Some(0),
        ),
        scenario(
            "S3",
            "A/B/n: 5.25 / 5.5 / 5.75 (too slow) / 6.0 %",
            vec![
                base,
                Truth::converting(0.0525),
                Truth::converting(0.055),
                Truth {
                    latency: Latency {
                        median: 450.0,
                        ..Latency::BASE
                    },
                    ..Truth::converting(0.0575)
                },
                Truth::converting(0.06),
            ],
            Some(4),
        ),
        scenario("S4", "A/A: no difference", vec![base, base], Some(0)),
        scenario(
            "S5",
            "candidate +10 %, errors 0.5 % -> 4 % from iteration 6",
            vec![
                base,
                Truth {
                    degrades: Some((6, 0.04)),
                    ..Truth::converting(0.055)
                },
            ],
            Some(0),
        ),
        scenario(
            "S6",
            "candidate +10 %, 8 % Pareto tail: mean passes, p95 fails",
            vec![
                base,
                Truth {
                    latency: Latency {
                        tail: Some((0.08, 600.0, 1.3)),
                        ..Latency::BASE
                    },
                    ..Truth::converting(0.055)
                },
            ],
            Some(0),
        ),
        scenario(
            "S7",
            "benign 3 % Pareto tail in both, candidate +10 %",
            {
                let tail = Latency {
                    tail: Some((0.03, 600.0, 1.5)),
                    ..Latency::BASE
                };
                vec![
                    Truth {
                        latency: tail,
                        ..base
                    },
                    Truth {
                        latency: tail,
                        ..Truth::converting(0.055)
                    },
                ]
            },
            Some(1),
        ),
        Scenario {
            requests: 200,
            ..scenario(
                "S8",
                "low traffic (200/iteration), candidate +10 %",
                vec![base, Truth::converting(0.055)],
                None,
            )
        },
    ]
}

/// The complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
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

    #[test]
    fn scenario_truths_match_the_research_notes() {
        assert!((Latency::BASE.mean() - 239.4).abs() < 0.5);
        assert!((Latency::BASE.exceedance(800.0) - 0.0105).abs() < 0.0005);
        let s = all();
        let s6 = s[5].versions[1].latency;
        assert!((s6.mean() - 428.0).abs() < 1.0, "{}", s6.mean());
        assert!((s6.exceedance(800.0) - 0.065).abs() < 0.001);
        assert!(!s[5].versions[1].feasible());
        assert!(!s[2].versions[3].feasible());
        assert!(s[4].versions[1].feasible_at(5) && !s[4].versions[1].feasible());
        assert!(s[6].versions[1].feasible());
    }
}
