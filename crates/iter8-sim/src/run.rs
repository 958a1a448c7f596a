//! One simulated experiment: the simulator routes traffic and draws outcomes from the truth,
//! and asks the engine, through its public request and response types, what to do next.

use std::collections::BTreeMap;

use iter8_api::{
    Action, Algorithm, Bucket, BucketBound, Criteria, ExperimentKind, HistogramObservation,
    InfinityLiteral, MeanObservation, Objective, Observation, Quantile, RatioMetric, Reward,
    Strategy,
};
use iter8_crd::{Duration, ExperimentSpec, FailurePolicy, Ledger, TerminationPolicy, VersionSpec};
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};
use rand_pcg::Pcg64Mcg;

use crate::scenario::{
    BUCKETS, MAX_ERROR_RATE, MAX_MEAN_LATENCY, MAX_P95_LATENCY, RewardMetric, Scenario, Truth,
};

/// The fewest observations of a better-than-baseline candidate on which a rollback is
/// acceptable: the minimum the engine states before any test may show a version worse or
/// broken.
pub use iter8_engine::MIN_OBSERVATIONS_TO_REJECT;

/// A strategy as the benchmark configures it: the algorithm, with the product's defaults for
/// every parameter (`maxCandidateWeight`, `minIterations`, ...), as a user who names only the
/// algorithm gets them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Monte-Carlo draws per request.
    pub draws: u32,
}

impl Policy {
    /// The benchmark's settings for an algorithm: engine defaults but for the draws.
    pub fn for_algorithm(algorithm: Algorithm, draws: u32) -> Policy {
        Policy { algorithm, draws }
    }

    /// Whether the algorithm can run a scenario with this many versions.
    pub fn supports(&self, versions: usize) -> bool {
        self.algorithm.requirements().versions.admits(versions)
    }
}

/// What happened in one experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The promoted version, if any.
    pub promoted: Option<usize>,
    /// The iteration of the promotion or rollback; `None` when undecided at the horizon.
    pub decided_at: Option<u32>,
    /// When the experiment rolled back while a candidate better than the baseline existed:
    /// the fewest observations (requests) any such candidate had then.
    pub better_rolled_back: Option<f64>,
    /// Requests served by versions that broke an objective at the time, over the horizon.
    pub bad_requests: f64,
    /// Reward lost against always serving the right version, over the horizon.
    pub lost_reward: f64,
    /// The largest weight any candidate held while an interval was served, before the
    /// decision.
    pub candidate_peak: u32,
    /// The decision reason of the last response.
    pub reason: String,
    /// The engine refused a request built by the shared request path: a defect of the product
    /// (it refused its own evidence), never an outcome to score.
    pub refused: bool,
    /// Per iteration, the split in force and the engine's answer (only when traced).
    pub trace: Vec<String>,
}

/// Cumulative observations of one version.
#[derive(Debug, Clone, Default)]
struct Cumulative {
    requests: f64,
    errors: f64,
    conversions: f64,
    revenue: f64,
    latency_sum: f64,
    /// Count of latencies in each bucket (not cumulative); the last is `+Inf`.
    buckets: Vec<f64>,
}

impl Cumulative {
    /// The observations as the metrics collector reports them: counters, a cumulative
    /// histogram with `+Inf`, and means as a sum and a count (no sum of squares).
    fn metrics(&self, reward: RewardMetric) -> BTreeMap<String, Observation> {
        let mut running = 0.0;
        let mut buckets: Vec<Bucket> = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, &c)| {
                running += c;
                Bucket {
                    le: BucketBound::Finite(le),
                    count: running,
                }
            })
            .collect();
        buckets.push(Bucket {
            le: BucketBound::Infinite(InfinityLiteral::PlusInf),
            count: self.requests,
        });
        let mean = |sum| {
            Observation::Mean(MeanObservation {
                sum,
                count: self.requests,
                sum_of_squares: None,
            })
        };
        let mut metrics = BTreeMap::from([
            ("requests".to_string(), Observation::Counter(self.requests)),
            ("errors".to_string(), Observation::Counter(self.errors)),
            (
                "conversions".to_string(),
                Observation::Counter(self.conversions),
            ),
            (
                "latency".to_string(),
                Observation::Histogram(HistogramObservation {
                    buckets,
                    sum: Some(self.latency_sum),
                }),
            ),
            ("latency-mean".to_string(), mean(self.latency_sum)),
        ]);
        if reward == RewardMetric::Revenue {
            metrics.insert(
                RewardMetric::Revenue.metric().to_string(),
                mean(self.revenue),
            );
        }
        metrics
    }
}

/// The experiment a user would write for this scenario and policy: the criteria, the reward,
/// the strategy and `maxIterations`, with the product's defaults everywhere else (so the start
/// split is `initial_weights()`: everything on the baseline).
pub fn experiment(scenario: &Scenario, policy: &Policy) -> ExperimentSpec {
    let objective = |metric: &str, quantile: Option<f64>, upper: f64| Objective {
        metric: metric.to_string(),
        quantile: quantile.and_then(|q| Quantile::try_from(q).ok()),
        upper_limit: Some(upper),
        lower_limit: None,
    };
    let ratio = |name: &str, numerator: &str| RatioMetric {
        name: name.to_string(),
        numerator: numerator.to_string(),
        denominator: "requests".to_string(),
    };
    ExperimentSpec {
        kind: if scenario.versions.len() > 2 {
            ExperimentKind::ABn
        } else {
            ExperimentKind::AB
        },
        versions: (0..scenario.versions.len())
            .map(|v| VersionSpec {
                name: format!("v{v}"),
                backend: None,
                labels: BTreeMap::new(),
                url: None,
                workload: None,
            })
            .collect(),
        router: None,
        metrics: Vec::new(),
        ratios: vec![
            ratio("error-rate", "errors"),
            ratio("conversion-rate", "conversions"),
        ],
        criteria: Criteria {
            objectives: vec![
                objective("error-rate", None, MAX_ERROR_RATE),
                objective("latency-mean", None, MAX_MEAN_LATENCY),
                objective("latency", Some(0.95), MAX_P95_LATENCY),
            ],
            relative_objectives: Vec::new(),
            rewards: vec![Reward {
                metric: scenario.reward.metric().to_string(),
                quantile: None,
                preferred_direction: iter8_api::Direction::Higher,
            }],
        },
        strategy: Strategy {
            algorithm: policy.algorithm,
            draws: policy.draws,
            ..Strategy::default()
        },
        on_termination: TerminationPolicy::default(),
        duration: Duration {
            max_iterations: scenario.horizon,
            ..Duration::default()
        },
        analytics: None,
        failure_policy: FailurePolicy::default(),
        manual_override: None,
        load: None,
        notifications: None,
        gates: None,
        approval: None,
    }
}

/// Runs one experiment with a seeded generator.
pub fn simulate(scenario: &Scenario, policy: &Policy, seed: u64) -> Outcome {
    simulate_traced(scenario, policy, seed, false)
}

/// Runs one experiment, recording every iteration's split and answer when `trace` is set.
pub fn simulate_traced(scenario: &Scenario, policy: &Policy, seed: u64, trace: bool) -> Outcome {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let n = scenario.versions.len();
    let spec = experiment(scenario, policy);
    let reference = scenario.reward_of(scenario.right);
    let mut totals = vec![
        Cumulative {
            buckets: vec![0.0; BUCKETS.len() + 1],
            ..Cumulative::default()
        };
        n
    ];
    // The same state, request building and answer folding as the controller and `iter8 run`:
    // the experiment starts at the spec's initial split (all traffic on the baseline).
    let mut ledger = Ledger::start(&spec);
    let mut outcome = Outcome::default();
    for iteration in 1..=scenario.horizon {
        // Route this interval's requests by the split, and draw what they do.
        let split = ledger.weights.clone();
        let peak = split.iter().skip(1).copied().max().unwrap_or(0);
        outcome.candidate_peak = outcome.candidate_peak.max(peak);
        let mut remaining = scenario.requests_at(iteration);
        let mut weight_left: u32 = split.iter().sum();
        for v in 0..n {
            let share = if weight_left == 0 {
                0.0
            } else {
                f64::from(split[v]) / f64::from(weight_left)
            };
            let k = binomial(&mut rng, remaining, share);
            remaining -= k;
            weight_left -= split[v];
            let truth = &scenario.versions[v];
            serve(&mut totals[v], truth, iteration, k, &mut rng);
            let kf = k as f64;
            if !truth.feasible_at(iteration) {
                outcome.bad_requests += kf;
            }
            outcome.lost_reward += kf * (reference - scenario.reward_of(v));
        }

        let observations = totals.iter().map(|t| t.metrics(scenario.reward)).collect();
        let request = ledger.request(&spec, observations);
        let response = match iter8_engine::assess(&request) {
            Ok(r) => r,
            Err(e) => {
                outcome.reason = format!("invalid request: {e:?}");
                outcome.refused = true;
                return outcome;
            }
        };
        ledger = ledger.record(&spec, &response);
        outcome.reason = response.decision.reason.clone();
        if trace {
            let requests: Vec<f64> = totals.iter().map(|t| t.requests).collect();
            outcome.trace.push(format!(
                "{iteration:>2} {split:?} requests {requests:?} -> {}: {}",
                response.decision, response.decision.reason
            ));
        }
        let chosen = match response.decision.action {
            Action::Continue => continue,
            Action::Promote => {
                let name = response.decision.version.as_deref();
                let v = request
                    .versions
                    .iter()
                    .position(|x| Some(x.name.as_str()) == name)
                    .unwrap_or(0);
                outcome.promoted = Some(v);
                outcome.decided_at = Some(iteration);
                v
            }
            Action::Rollback => {
                outcome.decided_at = Some(iteration);
                outcome.better_rolled_back = (1..n)
                    .filter(|&v| scenario.better_than_baseline(v))
                    .map(|v| totals[v].requests)
                    .reduce(f64::min);
                0
            }
            Action::Inconclusive => break,
        };
        // The rest of the horizon runs on the chosen version: charge its consequences.
        let truth = &scenario.versions[chosen];
        for later in iteration + 1..=scenario.horizon {
            let requests = scenario.requests_at(later) as f64;
            if !truth.feasible_at(later) {
                outcome.bad_requests += requests;
            }
            outcome.lost_reward += requests * (reference - scenario.reward_of(chosen));
        }
        break;
    }
    outcome
}

/// Draws what `k` requests served by a version with this truth do in `iteration`.
fn serve(total: &mut Cumulative, truth: &Truth, iteration: u32, k: u64, rng: &mut Pcg64Mcg) {
    total.requests += k as f64;
    total.errors += binomial(rng, k, truth.errors_at(iteration)) as f64;
    let conversions = binomial(rng, k, truth.conversion);
    total.conversions += conversions as f64;
    let order_value = truth.order_value.sampler();
    for _ in 0..conversions {
        total.revenue += order_value.sample(rng);
    }
    let latency = truth.latency_at(iteration).sampler();
    for _ in 0..k {
        let x = latency.sample(rng);
        total.latency_sum += x;
        let b = BUCKETS.partition_point(|&le| le < x);
        total.buckets[b] += 1.0;
    }
}

fn binomial(rng: &mut Pcg64Mcg, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    Binomial::new(n, p).map_or(0, |b| b.sample(rng))
}
