//! Running many replicates in parallel and summarising them per scenario and strategy.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::oracle::{self, ALPHA, CORRECT_TARGET, UNSAFE_TARGET};
use crate::run::{MIN_OBSERVATIONS_TO_REJECT, Outcome, Policy, simulate};
use crate::scenario::{Family, Scenario};

/// The measures of one (scenario, strategy) cell over its replicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Scenario id.
    pub scenario: &'static str,
    /// Which targets the scenario is judged by.
    pub family: Family,
    /// The oracle's power to find the scenario's winner (None without a winner).
    pub oracle: Option<f64>,
    /// Strategy name.
    pub strategy: &'static str,
    /// Replicates run.
    pub runs: usize,
    /// Runs whose final version (the promoted one, else the baseline) is the right one.
    pub correct: usize,
    /// Runs promoting a candidate that is not better than the baseline (breaks a criterion,
    /// or does not have the higher reward while the baseline meets the criteria).
    pub false_promotions: usize,
    /// Runs promoting a candidate that breaks a criterion in the long run.
    pub unsafe_promotions: usize,
    /// Runs that rolled back while a candidate better than the baseline existed.
    pub better_rolled_back: usize,
    /// The fewest observations such a candidate had when it was rolled back.
    pub fewest_rolled_back: Option<f64>,
    /// Runs that rolled back a better candidate on fewer than [`MIN_OBSERVATIONS_TO_REJECT`].
    pub rolled_back_early: usize,
    /// Mean requests served by versions breaking an objective at the time, over the horizon.
    pub bad_requests: f64,
    /// Mean reward lost against always serving the right version, over the horizon.
    pub lost_reward: f64,
    /// Mean iteration of the decision, among decided runs.
    pub iterations: f64,
    /// Runs undecided at the horizon.
    pub undecided: usize,
    /// Runs in which the engine refused a request of the shared request path (counted as
    /// neither correct nor undecided: the benchmark and its CI form fail on any).
    pub refused: usize,
}

impl Summary {
    /// A count of runs as a share of all runs.
    pub fn share(&self, count: usize) -> f64 {
        count as f64 / self.runs.max(1) as f64
    }

    /// Whether the correct-decision target applies: a winner exists and the oracle finds it.
    pub fn correct_applies(&self) -> bool {
        self.oracle.is_some_and(|p| p >= CORRECT_TARGET)
    }

    /// The targets this cell is judged by, with the observed rate and whether it is met (by
    /// the point estimate over the runs).
    pub fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let mut check = |target, rate, met| out.push(Check::new(self, target, rate, met));
        if self.correct_applies() {
            let rate = self.share(self.correct);
            check("correct >= 97 %", rate, rate >= CORRECT_TARGET);
        }
        if self.family == Family::Null {
            let rate = self.share(self.false_promotions);
            check("false promotion <= alpha", rate, rate <= ALPHA);
        } else {
            // In a null scenario a candidate at a limit sits on the boundary of its
            // criterion's test, where only alpha bounds a promotion: the false-promotion
            // target covers it.
            let rate = self.share(self.unsafe_promotions);
            check("unsafe promotion <= 1 %", rate, rate <= UNSAFE_TARGET);
        }
        check(
            "no better version rolled back on too few observations",
            self.share(self.rolled_back_early),
            self.rolled_back_early == 0,
        );
        out
    }
}

/// One target of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Scenario id.
    pub scenario: &'static str,
    /// Strategy name.
    pub strategy: &'static str,
    /// The target.
    pub target: &'static str,
    /// The observed rate.
    pub observed: f64,
    /// Runs behind it.
    pub runs: usize,
    /// Whether the observed rate meets the target.
    pub met: bool,
}

impl Check {
    fn new(s: &Summary, target: &'static str, observed: f64, met: bool) -> Check {
        Check {
            scenario: s.scenario,
            strategy: s.strategy,
            target,
            observed,
            runs: s.runs,
            met,
        }
    }
}

/// The Wilson score interval of `successes` in `runs` at normal quantile `z` (1.96 for a
/// two-sided 95 % interval): (lower, upper).
pub fn wilson(successes: usize, runs: usize, z: f64) -> (f64, f64) {
    if runs == 0 {
        return (0.0, 1.0);
    }
    let n = runs as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let scale = 1.0 + z2 / n;
    (
        ((centre - spread) / scale).max(0.0),
        ((centre + spread) / scale).min(1.0),
    )
}

/// P(X >= k) for X ~ Binomial(n, p): the p-value of an exact one-sided test that the rate
/// is above `p`, having seen `k` of `n`.
pub fn binomial_at_least(k: usize, n: usize, p: f64) -> f64 {
    (k..=n).map(|i| binomial_pmf(i, n, p)).sum::<f64>().min(1.0)
}

/// P(X <= k) for X ~ Binomial(n, p): the p-value of an exact one-sided test that the rate
/// is below `p`, having seen `k` of `n`.
pub fn binomial_at_most(k: usize, n: usize, p: f64) -> f64 {
    (0..=k.min(n))
        .map(|i| binomial_pmf(i, n, p))
        .sum::<f64>()
        .min(1.0)
}

fn binomial_pmf(i: usize, n: usize, p: f64) -> f64 {
    let ln_choose: f64 = (0..i)
        .map(|j| ((n - j) as f64).ln() - ((j + 1) as f64).ln())
        .sum();
    (ln_choose + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp()
}

/// The normal quantile of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The seed of one replicate: SplitMix64 of the base seed and the cell's coordinates.
pub fn replicate_seed(base: u64, scenario: usize, strategy: usize, replicate: usize) -> u64 {
    let mut z = base
        ^ (scenario as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (strategy as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (replicate as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A scenario and a policy, each with its index in the full lists (which the seeds use).
type Cell<'a> = (&'a (usize, Scenario), &'a (usize, Policy));

/// Runs `replicates` experiments of every supported (scenario, policy) pair on `threads`
/// threads and summarises them, in scenario-then-policy order. The result does not depend on
/// the number of threads.
pub fn run_all(
    scenarios: &[(usize, Scenario)],
    policies: &[(usize, Policy)],
    replicates: usize,
    seed: u64,
    threads: usize,
) -> Vec<Summary> {
    let cells: Vec<Cell<'_>> = scenarios
        .iter()
        .flat_map(|s| policies.iter().map(move |p| (s, p)))
        .filter(|(s, p)| p.1.supports(s.1.versions.len()))
        .collect();
    let jobs = cells.len() * replicates;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; jobs]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    if job >= jobs {
                        break;
                    }
                    let ((si, scenario), (pi, policy)) = cells[job / replicates];
                    let r = job % replicates;
                    let outcome = simulate(scenario, policy, replicate_seed(seed, *si, *pi, r));
                    if let Ok(mut all) = results.lock() {
                        all[job] = Some(outcome);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    cells
        .iter()
        .enumerate()
        .map(|(c, ((_, scenario), (_, policy)))| {
            let outcomes: Vec<&Outcome> = results[c * replicates..(c + 1) * replicates]
                .iter()
                .flatten()
                .collect();
            summarize(scenario, policy, &outcomes)
        })
        .collect()
}

fn summarize(scenario: &Scenario, policy: &Policy, outcomes: &[&Outcome]) -> Summary {
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let decided: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.decided_at.map(f64::from))
        .collect();
    let n = outcomes.len().max(1) as f64;
    Summary {
        scenario: scenario.id,
        family: scenario.family,
        oracle: oracle::power(scenario),
        strategy: policy.algorithm.name(),
        runs: outcomes.len(),
        correct: count(&|o| !o.refused && o.promoted.unwrap_or(0) == scenario.right),
        false_promotions: count(&|o| {
            o.promoted
                .is_some_and(|v| v != 0 && !scenario.better_than_baseline(v))
        }),
        unsafe_promotions: count(&|o| {
            o.promoted
                .is_some_and(|v| v != 0 && !scenario.versions[v].feasible())
        }),
        better_rolled_back: count(&|o| o.better_rolled_back.is_some()),
        fewest_rolled_back: outcomes
            .iter()
            .filter_map(|o| o.better_rolled_back)
            .reduce(f64::min),
        rolled_back_early: count(&|o| {
            o.better_rolled_back
                .is_some_and(|obs| obs < MIN_OBSERVATIONS_TO_REJECT)
        }),
        bad_requests: outcomes.iter().map(|o| o.bad_requests).sum::<f64>() / n,
        lost_reward: outcomes.iter().map(|o| o.lost_reward).sum::<f64>() / n,
        iterations: if decided.is_empty() {
            f64::NAN
        } else {
            decided.iter().sum::<f64>() / decided.len() as f64
        },
        undecided: count(&|o| !o.refused && o.decided_at.is_none()),
        refused: count(&|o| o.refused),
    }
}

/// The summaries as a Markdown table.
pub fn markdown(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| scenario | strategy | correct | false promotion (Wilson 95 % upper) | \
         unsafe promotion | better version rolled back (fewest observations) | \
         iterations to decision | no decision | bad requests | lost reward |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let pct = |x: f64| format!("{:.1} %", 100.0 * x);
    for s in summaries {
        let correct = if s.family == Family::Winner && !s.correct_applies() {
            format!("({}, no target)", pct(s.share(s.correct)))
        } else {
            pct(s.share(s.correct))
        };
        let (_, upper) = wilson(s.false_promotions, s.runs, Z95);
        let rolled_back = match s.fewest_rolled_back {
            Some(obs) => format!("{} ({obs:.0})", pct(s.share(s.better_rolled_back))),
            None => "-".to_string(),
        };
        let iterations = if s.iterations.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}", s.iterations)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} ({}) | {} | {} | {} | {} | {:.0} | {:.1} |\n",
            s.scenario,
            s.strategy,
            correct,
            pct(s.share(s.false_promotions)),
            pct(upper),
            pct(s.share(s.unsafe_promotions)),
            rolled_back,
            iterations,
            pct(s.share(s.undecided)),
            s.bad_requests,
            s.lost_reward,
        ));
    }
    out
}

/// Every target of every cell, as a Markdown table, missed ones first.
pub fn targets_markdown(summaries: &[Summary]) -> String {
    let mut checks: Vec<Check> = summaries.iter().flat_map(Summary::checks).collect();
    checks.sort_by_key(|c| c.met);
    let met = checks.iter().filter(|c| c.met).count();
    let mut out = format!(
        "{met} of {} targets met.\n\n| scenario | strategy | target | observed | runs | verdict |\n\
         |---|---|---|---:|---:|---|\n",
        checks.len()
    );
    for c in checks.iter().filter(|c| !c.met) {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} % | {} | **missed** |\n",
            c.scenario,
            c.strategy,
            c.target,
            100.0 * c.observed,
            c.runs
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bounds_match_published_values() {
        // 0 of 500 at 95 %: upper 0.76 %; 10 of 100: (5.5 %, 17.4 %).
        let (lower, upper) = wilson(0, 500, Z95);
        assert!(lower.abs() < 1e-12, "{lower}");
        assert!((upper - 0.00762).abs() < 1e-4, "{upper}");
        let (lower, upper) = wilson(10, 100, Z95);
        assert!((lower - 0.0552).abs() < 1e-3, "{lower}");
        assert!((upper - 0.1744).abs() < 1e-3, "{upper}");
    }

    #[test]
    fn binomial_tails_match_published_values() {
        // Binomial(100, 0.01): P(X >= 4) = 0.0184; Binomial(100, 0.97): P(X <= 92) = 0.0106.
        assert!((binomial_at_least(4, 100, 0.01) - 0.0184).abs() < 1e-4);
        assert!((binomial_at_most(92, 100, 0.97) - 0.0106).abs() < 1e-4);
        assert!((binomial_at_least(0, 10, 0.3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_refused_request_is_counted_as_refused_never_as_a_correct_or_undecided_run() {
        let scenarios = crate::scenario::all();
        // A null scenario: keeping the baseline is its right answer, which a run that ended
        // on a refusal would otherwise score as correct.
        let null = scenarios
            .iter()
            .find(|s| s.family == Family::Null)
            .expect("a null scenario");
        let policy = Policy::for_algorithm(iter8_api::Algorithm::Safe, 64);
        let refused = Outcome {
            reason: "invalid request".into(),
            refused: true,
            ..Outcome::default()
        };
        let s = summarize(null, &policy, &[&refused]);
        assert_eq!((s.refused, s.correct, s.undecided), (1, 0, 0));
    }

    #[test]
    fn seeds_differ_across_cells_and_replicates() {
        let a = replicate_seed(1, 0, 0, 0);
        assert_ne!(a, replicate_seed(1, 1, 0, 0));
        assert_ne!(a, replicate_seed(1, 0, 1, 0));
        assert_ne!(a, replicate_seed(1, 0, 0, 1));
        assert_ne!(a, replicate_seed(2, 0, 0, 0));
    }
}
