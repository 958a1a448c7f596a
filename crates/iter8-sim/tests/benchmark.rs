//! The short form of the benchmark that CI runs on the default strategy, `safe`, with a fresh
//! seed every run. The seed is printed (to stderr, outside the test harness's capture) and is
//! in every failure message; `ITER8_SIM_SEED=<seed> cargo test -p iter8-sim --test benchmark`
//! reproduces a run.
//!
//! Margins come from the number of runs, not from a fixed seed: a check fails only when the
//! observed rate is shown to miss its target by a one-sided test at level 0.5 % (the Wilson
//! score bound with z = 2.576). An engine sitting exactly on every target fails one of these
//! checks with probability at most 0.5 % per check.

use std::io::Write;
use std::sync::OnceLock;

use iter8_api::Algorithm;
use iter8_sim::oracle::{ALPHA, CORRECT_TARGET, UNSAFE_TARGET};
use iter8_sim::run::MIN_OBSERVATIONS_TO_REJECT;
use iter8_sim::scenario::Family;
use iter8_sim::{Policy, Summary, run_all, scenario, wilson};

/// Draws per request, as in the published benchmark.
const DRAWS: u32 = 2000;
/// The normal quantile of a one-sided test at level 0.5 %.
const Z: f64 = 2.575_829_303_548_900_4;

/// The seed of this test run: `ITER8_SIM_SEED` if set, otherwise the clock.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = std::env::var("ITER8_SIM_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        // Written to the process's stderr directly, so the seed shows even when the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "iter8-sim benchmark seed {seed}: reproduce with ITER8_SIM_SEED={seed} \
             cargo test -p iter8-sim --test benchmark"
        );
        seed
    })
}

fn run(ids: &[&str], replicates: usize) -> Vec<Summary> {
    let scenarios: Vec<_> = scenario::all()
        .into_iter()
        .enumerate()
        .filter(|(_, s)| ids.contains(&s.id))
        .collect();
    assert_eq!(scenarios.len(), ids.len(), "unknown scenario in {ids:?}");
    let policies = [(0, Policy::for_algorithm(Algorithm::Safe, DRAWS))];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    run_all(&scenarios, &policies, replicates, seed(), threads)
}

/// Fails if any better-than-baseline candidate was rolled back on too few observations: a
/// rule, not a rate, so a single run breaks it.
fn assert_no_early_rollback(s: &Summary) {
    assert_eq!(
        s.rolled_back_early,
        0,
        "{} (seed {}): a better candidate rolled back on {:?} observations (< {})",
        s.scenario,
        seed(),
        s.fewest_rolled_back,
        MIN_OBSERVATIONS_TO_REJECT
    );
}

#[test]
fn safe_promotes_in_null_scenarios_at_most_alpha() {
    // A/A, A/A/A, A/A/A/A/A, A/A on heavy-tailed revenue (lognormal and infinite-variance
    // Pareto), and a candidate exactly at its mean-latency limit.
    for s in run(&["S4", "S14", "S15", "S16", "S18", "S20"], 300) {
        assert_eq!(s.family, Family::Null);
        let (lower, _) = wilson(s.false_promotions, s.runs, Z);
        assert!(
            lower <= ALPHA,
            "{} (seed {}): {} false promotions in {} runs: the rate is above alpha = {ALPHA} \
             (Wilson lower bound {lower:.4})",
            s.scenario,
            seed(),
            s.false_promotions,
            s.runs
        );
    }
}

#[test]
fn safe_rarely_promotes_a_version_that_breaks_an_objective() {
    // A broken SLO, delayed error regressions, a p95 break by a heavy tail and a delayed p95
    // regression.
    for s in run(&["S2", "S5", "S6", "S10", "S11"], 100) {
        assert_eq!(s.family, Family::Unsafe);
        let (lower, _) = wilson(s.unsafe_promotions, s.runs, Z);
        assert!(
            lower <= UNSAFE_TARGET,
            "{} (seed {}): {} unsafe promotions in {} runs: the rate is above {UNSAFE_TARGET} \
             (Wilson lower bound {lower:.4})",
            s.scenario,
            seed(),
            s.unsafe_promotions,
            s.runs
        );
    }
}

#[test]
fn safe_finds_the_winner_wherever_an_oracle_could() {
    // An ordinary winner, A/B/n, a failing baseline fixed by a candidate, a candidate near a
    // limit, a heavy-tailed revenue winner and a low-traffic start.
    for s in run(&["S1", "S3", "S9", "S12", "S17", "S19"], 100) {
        assert!(
            s.correct_applies(),
            "{}: the oracle must find its winner",
            s.scenario
        );
        let (_, upper) = wilson(s.correct, s.runs, Z);
        assert!(
            upper >= CORRECT_TARGET,
            "{} (seed {}): {} correct decisions in {} runs: the rate is below {CORRECT_TARGET} \
             (Wilson upper bound {upper:.4})",
            s.scenario,
            seed(),
            s.correct,
            s.runs
        );
        assert_no_early_rollback(&s);
    }
}

#[test]
fn safe_never_rolls_back_a_better_candidate_on_too_little_data() {
    // Better candidates that cannot be shown better in time: low traffic throughout, and a
    // candidate whose error rate sits just under its limit.
    for s in run(&["S8", "S13"], 100) {
        assert_eq!(s.family, Family::Winner);
        assert_no_early_rollback(&s);
    }
}
