//! `fixed_thresholds` and `mann_whitney` with nothing but the algorithm set, run through the
//! shared request path (`iter8_crd::Ledger`, as the controller drives the engine).
//!
//! Sensible means: with `fixed_thresholds` a candidate never gets most of the traffic before
//! it is promoted (so one that breaks a criterion never does), a good candidate is promoted
//! and a broken one is not; `mann_whitney` scores both of its runs within an experiment of
//! the default length (`maxIterations` 20) and promotes a good candidate at its end, never a
//! broken one.

use iter8_api::Algorithm;
use iter8_crd::Duration;
use iter8_sim::Policy;
use iter8_sim::report::replicate_seed;
use iter8_sim::run::{Outcome, simulate};
use iter8_sim::scenario::{self, Scenario};

/// Draws per request, as in the published benchmark.
const DRAWS: u32 = 2000;
/// A fixed base seed: the assertions below are about every run or a wide margin.
const SEED: u64 = 20261201;

fn scenario(id: &str, horizon: Option<u32>) -> Scenario {
    let mut s = scenario::all()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no scenario {id}"));
    if let Some(h) = horizon {
        s.horizon = h;
    }
    s
}

fn runs(algorithm: Algorithm, s: &Scenario, replicates: usize) -> Vec<Outcome> {
    let policy = Policy::for_algorithm(algorithm, DRAWS);
    (0..replicates)
        .map(|r| simulate(s, &policy, replicate_seed(SEED, 0, 0, r)))
        .collect()
}

fn promoted(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| o.promoted == Some(1)).count()
}

#[test]
fn fixed_thresholds_with_defaults_never_gives_a_candidate_most_of_the_traffic() {
    // S1: a good candidate; S2: one with 2 % errors against a 1 % limit.
    let good = runs(Algorithm::FixedThresholds, &scenario("S1", None), 40);
    let broken = runs(Algorithm::FixedThresholds, &scenario("S2", None), 40);
    for o in good.iter().chain(&broken) {
        assert!(
            o.candidate_peak <= 50,
            "{} % before {}",
            o.candidate_peak,
            o.reason
        );
    }
    assert!(promoted(&good) >= 38, "{} of 40 promoted", promoted(&good));
    assert_eq!(promoted(&broken), 0);
}

#[test]
fn mann_whitney_with_defaults_scores_within_a_default_length_experiment() {
    let horizon = Duration::default().max_iterations;
    let good = runs(Algorithm::MannWhitney, &scenario("S1", Some(horizon)), 40);
    for o in &good {
        // Nothing is decided before the end of the second run.
        assert!(
            o.decided_at.is_none_or(|at| at == horizon),
            "decided at {:?}: {}",
            o.decided_at,
            o.reason
        );
    }
    assert!(
        promoted(&good) >= 36,
        "{} of 40 promoted; e.g. {}",
        promoted(&good),
        good[0].reason
    );
    let broken = runs(Algorithm::MannWhitney, &scenario("S2", Some(horizon)), 40);
    assert_eq!(promoted(&broken), 0);
    assert!(broken.iter().all(|o| o.decided_at.is_some()));
}
