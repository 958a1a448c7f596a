//! What an oracle with the same traffic could decide: whether a winner can be found at all
//! within `maxIterations`, so that the "correct" target applies only where it could.
//!
//! The oracle knows the truth: which candidate is the winner, every variance, and which tests
//! it needs. It splits the scenario's whole traffic once, between the baseline and the winner
//! only, in the best fixed proportion, and runs one fixed-horizon one-sided z-test per
//! question at level alpha, looking once at the end: the winner meets each criterion, and
//! (unless the baseline breaks a criterion) its reward is higher than the baseline's. It pays
//! no price for sequential looks, for other candidates or for a ramp from 100 % baseline, so
//! its power is an upper bound on what any valid procedure could reach; a scenario whose
//! oracle power is below the correct-decision target is marked, and that target does not
//! apply to it.

use crate::scenario::{
    Family, MAX_ERROR_RATE, MAX_MEAN_LATENCY, MAX_P95_LATENCY, P95_EXCEEDANCE, Scenario, Truth,
    erfc,
};

/// The engine's default error rate of its anytime-valid tests.
pub const ALPHA: f64 = 0.05;
/// The correct-decision target where a winner exists and the oracle can find it.
pub const CORRECT_TARGET: f64 = 0.97;
/// The unsafe-promotion target in every scenario.
pub const UNSAFE_TARGET: f64 = 0.01;

/// The oracle's power to find the scenario's winner (None for scenarios without one).
pub fn power(scenario: &Scenario) -> Option<f64> {
    if scenario.family != Family::Winner {
        return None;
    }
    let n = scenario.total_requests() as f64;
    let winner = scenario.right;
    let needs_reward = scenario.versions[0].feasible();
    let best = (1..100)
        .map(|pct| {
            let share = f64::from(pct) / 100.0;
            let on_winner = share * n;
            let criteria = criteria_power(&scenario.versions[winner], on_winner);
            if needs_reward {
                criteria * reward_power(scenario, winner, on_winner, n - on_winner)
            } else {
                criteria
            }
        })
        .fold(0.0, f64::max);
    Some(best)
}

/// Whether the oracle finds the winner at least as often as the correct-decision target
/// (None for scenarios without a winner).
pub fn can_find_winner(scenario: &Scenario) -> Option<bool> {
    power(scenario).map(|p| p >= CORRECT_TARGET)
}

/// The power of showing every criterion met with `n` observations of `truth`: the product of
/// the per-criterion powers (the tests look at nearly independent data). A mean without a
/// finite variance has no fixed-sample z-test; the oracle is then given that criterion.
fn criteria_power(truth: &Truth, n: f64) -> f64 {
    let p = truth.errors;
    let errors = one_sided_power(MAX_ERROR_RATE - p, (p * (1.0 - p) / n).sqrt());
    let latency = truth.latency;
    let variance = latency.variance();
    let mean = if variance.is_finite() {
        one_sided_power(MAX_MEAN_LATENCY - latency.mean(), (variance / n).sqrt())
    } else {
        1.0
    };
    let q = latency.exceedance(MAX_P95_LATENCY);
    let p95 = one_sided_power(P95_EXCEEDANCE - q, (q * (1.0 - q) / n).sqrt());
    errors * mean * p95
}

/// The power of showing the winner's reward higher than the baseline's.
fn reward_power(scenario: &Scenario, winner: usize, on_winner: f64, on_baseline: f64) -> f64 {
    let effect = scenario.reward_of(winner) - scenario.reward_of(0);
    let se = (scenario.reward_variance(winner) / on_winner
        + scenario.reward_variance(0) / on_baseline)
        .sqrt();
    one_sided_power(effect, se)
}

/// P(a one-sided z-test at level alpha rejects) when the true effect is `effect` and the
/// estimate's standard error is `se`.
fn one_sided_power(effect: f64, se: f64) -> f64 {
    if !se.is_finite() || se <= 0.0 {
        return if effect > 0.0 && se == 0.0 { 1.0 } else { 0.0 };
    }
    normal_cdf(effect / se - Z_ALPHA)
}

/// The one-sided 95 % normal quantile (for `ALPHA` = 0.05).
const Z_ALPHA: f64 = 1.644_853_626_951_472_2;

fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::all;

    fn power_of(id: &str) -> Option<f64> {
        all().iter().find(|s| s.id == id).and_then(power)
    }

    #[test]
    fn the_oracle_finds_an_ordinary_winner_and_not_one_hidden_by_low_traffic() {
        assert!(power_of("S1").is_some_and(|p| p > 0.999));
        assert!(
            power_of("S8").is_some_and(|p| p < 0.5),
            "{:?}",
            power_of("S8")
        );
    }

    #[test]
    fn the_oracle_reaches_a_candidate_near_a_limit_but_not_one_at_its_edge() {
        assert!(power_of("S12").is_some_and(|p| p >= CORRECT_TARGET));
        assert!(power_of("S13").is_some_and(|p| p < CORRECT_TARGET));
    }

    #[test]
    fn scenarios_without_a_winner_have_no_oracle_power() {
        for id in ["S2", "S4", "S5", "S14", "S20"] {
            assert_eq!(power_of(id), None, "{id}");
        }
    }

    #[test]
    fn the_power_of_a_z_test_matches_the_normal_tables() {
        // An effect of 2.486 standard errors has 80 % power at one-sided 5 %.
        assert!((one_sided_power(2.486_4, 1.0) - 0.80).abs() < 1e-3);
        assert!((one_sided_power(0.0, 1.0) - ALPHA).abs() < 1e-6);
    }
}
