//! The short form of the benchmark that CI runs on the default strategy, `safe`, and on
//! iter8's classic algorithms (which decide with `safe`'s rule), with a fresh seed every run.
//! The seed is printed (to stderr, outside the test harness's capture) and is in every
//! failure message; `ITER8_SIM_SEED=<seed> cargo test -p iter8-sim --test benchmark`
//! reproduces a run.
//!
//! Margins come from the number of runs, not from a fixed seed: a check fails only when the
//! observed count shows the rate misses its target by an exact one-sided binomial test at
//! level 0.5 %. An engine sitting exactly on every target fails a given check with
//! probability at most 0.5 %.

use std::io::Write;
use std::sync::OnceLock;

use iter8_api::Algorithm;
use iter8_sim::oracle::{ALPHA, CORRECT_TARGET, UNSAFE_TARGET};
use iter8_sim::run::MIN_OBSERVATIONS_TO_REJECT;
use iter8_sim::scenario::Family;
use iter8_sim::{Policy, Summary, binomial_at_least, binomial_at_most, run_all, scenario};

/// Draws per request, as in the published benchmark.
const DRAWS: u32 = 2000;
/// The level of every check's one-sided test.
const LEVEL: f64 = 0.005;

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
    run_with(&[Algorithm::Safe], ids, replicates)
}

/// Runs every scenario of `ids` with every algorithm that fits it.
fn run_with(algorithms: &[Algorithm], ids: &[&str], replicates: usize) -> Vec<Summary> {
    let scenarios: Vec<_> = scenario::all()
        .into_iter()
        .enumerate()
        .filter(|(_, s)| ids.contains(&s.id))
        .collect();
    assert_eq!(scenarios.len(), ids.len(), "unknown scenario in {ids:?}");
    let policies: Vec<_> = algorithms
        .iter()
        .enumerate()
        .map(|(i, &a)| (i, Policy::for_algorithm(a, DRAWS)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    let summaries = run_all(&scenarios, &policies, replicates, seed(), threads);
    for s in &summaries {
        assert_eq!(
            s.refused, 0,
            "{} {}: the engine refused requests the shared path built",
            s.scenario, s.strategy
        );
    }
    summaries
}

#[test]
fn safe_promotes_in_null_scenarios_at_most_alpha() {
    // A/A, A/A/A, A/A/A/A/A, A/A on heavy-tailed revenue (lognormal and infinite-variance
    // Pareto), and a candidate exactly at its mean-latency limit.
    for s in run(&["S4", "S14", "S15", "S16", "S18", "S20"], 300) {
        assert_eq!(s.family, Family::Null);
        assert_false_promotions_at_most_alpha(&s);
    }
}

#[test]
fn safe_rarely_promotes_a_version_that_breaks_an_objective() {
    // A broken SLO, delayed error regressions and a p95 break by a heavy tail.
    for s in run(&["S2", "S5", "S6", "S10"], 100) {
        assert_eq!(s.family, Family::Unsafe);
        assert_rarely_unsafe(&s);
    }
}

/// Fails if the share of false promotions is shown to be above alpha.
fn assert_false_promotions_at_most_alpha(s: &Summary) {
    let p = binomial_at_least(s.false_promotions, s.runs, ALPHA);
    assert_not_shown_to_miss(s, "false promotions", s.false_promotions, ALPHA, p);
}

/// Fails if the share of unsafe promotions is shown to be above its target.
fn assert_rarely_unsafe(s: &Summary) {
    let p = binomial_at_least(s.unsafe_promotions, s.runs, UNSAFE_TARGET);
    assert_not_shown_to_miss(
        s,
        "unsafe promotions",
        s.unsafe_promotions,
        UNSAFE_TARGET,
        p,
    );
}

/// Fails if the share of correct decisions is shown to be below the target.
fn assert_finds_the_winner(s: &Summary) {
    assert!(
        s.correct_applies(),
        "{}: the oracle must find its winner",
        s.scenario
    );
    let p = binomial_at_most(s.correct, s.runs, CORRECT_TARGET);
    assert_not_shown_to_miss(s, "correct decisions", s.correct, CORRECT_TARGET, p);
}

/// Fails if `p`, the p-value of the one-sided test of `count` of the runs against `target`,
/// shows that the rate misses the target.
fn assert_not_shown_to_miss(s: &Summary, what: &str, count: usize, target: f64, p: f64) {
    assert!(
        p >= LEVEL,
        "{} {} (seed {}): {count} {what} in {} runs miss the target {target} \
         (one-sided binomial p = {p:.5})",
        s.scenario,
        s.strategy,
        seed(),
        s.runs
    );
}

#[test]
fn safe_finds_the_winner_wherever_an_oracle_could() {
    // An ordinary winner, A/B/n, a heavy-tailed revenue winner and a low-traffic start.
    for s in run(&["S1", "S3", "S17", "S19"], 100) {
        assert_finds_the_winner(&s);
    }
}

#[test]
fn safe_promotes_a_candidate_that_fixes_a_failing_baseline() {
    // Feasibility first: the baseline breaks the error-rate limit, the candidate meets every
    // criterion with the same conversion.
    for s in run(&["S9"], 100) {
        assert_finds_the_winner(&s);
    }
}

#[test]
fn safe_promotes_a_candidate_that_sits_near_a_limit() {
    for s in run(&["S12"], 100) {
        assert_finds_the_winner(&s);
    }
}

#[test]
fn safe_never_rolls_back_a_better_candidate_on_too_little_data() {
    // Every scenario with a better candidate, including those where it cannot be shown better
    // in time (low traffic throughout; an error rate just under its limit).
    for s in run(&["S1", "S7", "S8", "S9", "S12", "S13", "S19"], 100) {
        assert_eq!(s.family, Family::Winner);
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
}

#[test]
fn safe_rarely_promotes_a_delayed_p95_regression() {
    for s in run(&["S11"], 300) {
        assert_rarely_unsafe(&s);
    }
}

/// iter8's classic algorithms: their own allocations, `safe`'s decision rule.
const CLASSIC: [Algorithm; 4] = [
    Algorithm::Progressive,
    Algorithm::Top2,
    Algorithm::Uniform,
    Algorithm::CheckAndIncrement,
];

#[test]
fn the_classic_algorithms_promote_in_null_scenarios_at_most_alpha() {
    // A/A, A/A/A (not for check_and_increment: two versions only) and A/A on revenue.
    for s in run_with(&CLASSIC, &["S4", "S14", "S16"], 100) {
        assert_eq!(s.family, Family::Null);
        assert_false_promotions_at_most_alpha(&s);
    }
}

#[test]
fn the_classic_algorithms_rarely_ship_a_delayed_regression() {
    // Error regressions from iteration 6 and 10, a p95 regression from iteration 10.
    for s in run_with(&CLASSIC, &["S5", "S10", "S11"], 100) {
        assert_eq!(s.family, Family::Unsafe);
        assert_rarely_unsafe(&s);
    }
}

#[test]
fn the_classic_algorithms_find_the_winner_wherever_an_oracle_could() {
    // An ordinary winner, A/B/n (the cell closest to its target), a candidate near its
    // error limit, heavy-tailed revenue and a low-traffic start: the runs the classic
    // allocations used to end undecided.
    for s in run_with(&CLASSIC, &["S1", "S3", "S12", "S17", "S19"], 100) {
        assert_eq!(s.family, Family::Winner);
        assert_finds_the_winner(&s);
    }
}
