//! The short form of the benchmark that CI runs: the default strategy's error rates and
//! power, with margins for Monte-Carlo noise.

use iter8_api::Algorithm;
use iter8_sim::{DEFAULT_SEED, Policy, Summary, run_all, scenario};

/// Draws per request, as in the published benchmark.
const DRAWS: u32 = 2000;

fn run(ids: &[&str], replicates: usize) -> Vec<Summary> {
    let scenarios: Vec<_> = scenario::all()
        .into_iter()
        .enumerate()
        .filter(|(_, s)| ids.contains(&s.id))
        .collect();
    let policies = [(0, Policy::for_algorithm(Algorithm::Safe, DRAWS))];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    run_all(&scenarios, &policies, replicates, DEFAULT_SEED, threads)
}

#[test]
fn safe_promotes_in_an_aa_test_at_most_alpha_plus_noise() {
    // alpha = 5 %; 8 % is alpha plus about three standard errors over 400 runs.
    let [aa] = run(&["S4"], 400).try_into().expect("one cell");
    assert!(
        aa.false_promotion <= 0.08,
        "A/A false promotion {}",
        aa.false_promotion
    );
}

#[test]
fn safe_rarely_promotes_a_version_that_breaks_an_objective() {
    for s in run(&["S2", "S5", "S6"], 100) {
        assert!(
            s.unsafe_promotion <= 0.05,
            "{}: unsafe promotion {}",
            s.scenario,
            s.unsafe_promotion
        );
    }
}

#[test]
fn safe_finds_the_winner_when_there_is_one() {
    for s in run(&["S1", "S3", "S7"], 100) {
        assert!(
            s.correct >= 0.90,
            "{}: correct decisions {}",
            s.scenario,
            s.correct
        );
    }
}
