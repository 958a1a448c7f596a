//! Running many replicates in parallel and summarising them per scenario and strategy.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::run::{Outcome, Policy, simulate};
use crate::scenario::Scenario;

/// The measures of one (scenario, strategy) cell, averaged over replicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Scenario id.
    pub scenario: &'static str,
    /// Strategy name.
    pub strategy: &'static str,
    /// Replicates run.
    pub runs: usize,
    /// Share of runs whose final version is the right one.
    pub correct: f64,
    /// Share of runs promoting a candidate that breaks an objective or is not better.
    pub false_promotion: f64,
    /// Share of runs promoting a candidate that breaks an objective.
    pub unsafe_promotion: f64,
    /// Mean requests served by versions breaking an objective at the time, over the horizon.
    pub bad_requests: f64,
    /// Mean conversions lost against always serving the right version, over the horizon.
    pub lost_conversions: f64,
    /// Mean iteration of the decision, among decided runs.
    pub iterations: f64,
    /// Share of runs undecided at the horizon.
    pub no_decision: f64,
}

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
    let n = outcomes.len().max(1) as f64;
    let share = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as f64 / n;
    let base = scenario.versions[0];
    let correct = |o: &Outcome| match scenario.correct {
        Some(v) => o.promoted.unwrap_or(0) == v,
        None => o.promoted.is_none(),
    };
    let unsafe_promotion =
        |o: &Outcome| o.promoted.is_some_and(|v| !scenario.versions[v].feasible());
    let false_promotion = |o: &Outcome| {
        o.promoted.is_some_and(|v| {
            let t = scenario.versions[v];
            v != 0 && (!t.feasible() || t.conversion <= base.conversion)
        })
    };
    let decided: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.decided_at.map(f64::from))
        .collect();
    Summary {
        scenario: scenario.id,
        strategy: policy.algorithm.name(),
        runs: outcomes.len(),
        correct: share(&correct),
        false_promotion: share(&false_promotion),
        unsafe_promotion: share(&unsafe_promotion),
        bad_requests: outcomes.iter().map(|o| o.bad_requests).sum::<f64>() / n,
        lost_conversions: outcomes.iter().map(|o| o.lost_conversions).sum::<f64>() / n,
        iterations: if decided.is_empty() {
            f64::NAN
        } else {
            decided.iter().sum::<f64>() / decided.len() as f64
        },
        no_decision: share(&|o: &Outcome| o.decided_at.is_none()),
    }
}

/// The summaries as a Markdown table.
pub fn markdown(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| scenario | strategy | correct | false promotion | unsafe promotion | bad requests | \
         lost conversions | iterations to decision | no decision |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let iterations = if s.iterations.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}", s.iterations)
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} % | {:.1} % | {:.1} % | {:.0} | {:.0} | {} | {:.1} % |\n",
            s.scenario,
            s.strategy,
            100.0 * s.correct,
            100.0 * s.false_promotion,
            100.0 * s.unsafe_promotion,
            s.bad_requests,
            s.lost_conversions,
            iterations,
            100.0 * s.no_decision
        ));
    }
    out
}
