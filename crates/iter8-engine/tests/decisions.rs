//! Decisions, winners, estimates and determinism, through the public request/response types.

use approx::assert_abs_diff_eq;
use iter8_api::{Action, AssessmentRequest, AssessmentResponse};
use serde_json::{Value, json};
use statrs::distribution::{Beta, ContinuousCDF};

fn assess(request: Value) -> AssessmentResponse {
    let request: AssessmentRequest = serde_json::from_value(request).expect("request decodes");
    iter8_engine::assess(&request).expect("request is valid")
}

fn split(response: &AssessmentResponse) -> Vec<u32> {
    response.split.iter().map(|w| w.weight).collect()
}

/// Latency buckets (ms) with `slow` of 1000 requests above 500 ms.
fn latency(slow: f64) -> Value {
    json!({"histogram": {"buckets": [
        {"le": 100, "count": 600.0},
        {"le": 250, "count": 900.0 - slow.min(100.0)},
        {"le": 500, "count": 1000.0 - slow},
        {"le": "+Inf", "count": 1000.0}
    ]}})
}

fn version(name: &str, weight: u32, errors: f64, conversions: f64, slow: f64) -> Value {
    json!({
        "name": name, "weight": weight,
        "metrics": {
            "requests": {"counter": 1000.0},
            "errors": {"counter": errors},
            "conversions": {"counter": conversions},
            "latency": latency(slow)
        }
    })
}

fn ratios() -> Value {
    json!([
        {"name": "error-rate", "numerator": "errors", "denominator": "requests"},
        {"name": "conversion-rate", "numerator": "conversions", "denominator": "requests"}
    ])
}

fn slo() -> Value {
    json!([
        {"metric": "error-rate", "upperLimit": 0.02},
        {"metric": "latency", "quantile": 0.95, "upperLimit": 500}
    ])
}

#[test]
fn canary_meeting_the_criteria_is_promoted_with_all_traffic() {
    let response = assess(json!({
        "kind": "canary", "iteration": 3, "strategy": {"algorithm": "progressive"},
        "versions": [version("stable", 80, 5.0, 0.0, 10.0), version("next", 20, 4.0, 0.0, 10.0)],
        "ratios": ratios(), "criteria": {"objectives": slo()}
    }));
    assert_eq!(response.decision.action, Action::Promote);
    assert_eq!(response.decision.version.as_deref(), Some("next"));
    assert_eq!(
        response.winner.as_ref().map(|w| w.version.as_str()),
        Some("next")
    );
    assert_eq!(split(&response), vec![0, 100]);
}

#[test]
fn canary_breaking_an_objective_is_rolled_back_naming_the_criterion() {
    let response = assess(json!({
        "kind": "canary", "iteration": 1, "strategy": {"algorithm": "progressive"}, "minIterations": 5,
        "versions": [version("stable", 90, 5.0, 0.0, 10.0), version("next", 10, 60.0, 0.0, 10.0)],
        "ratios": ratios(), "criteria": {"objectives": slo()}
    }));
    assert_eq!(response.decision.action, Action::Rollback);
    assert!(
        response.decision.reason.contains("error-rate <= 0.02"),
        "{}",
        response.decision.reason
    );
    assert_eq!(split(&response), vec![100, 0]);
}

#[test]
fn abn_promotes_the_best_feasible_version_not_the_best_reward() {
    // "fast" converts best but breaks the p95 objective (80 of 1000 above 500 ms).
    let response = assess(json!({
        "kind": "abn", "iteration": 4, "strategy": {"algorithm": "progressive"},
        "versions": [version("v1", 40, 5.0, 100.0, 10.0),
                     version("v2", 20, 5.0, 200.0, 10.0),
                     version("v3", 20, 5.0, 120.0, 10.0),
                     version("fast", 20, 5.0, 250.0, 80.0)],
        "ratios": ratios(),
        "criteria": {"objectives": slo(),
                     "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
    }));
    assert_eq!(
        response.decision.action,
        Action::Promote,
        "{}",
        response.decision.reason
    );
    assert_eq!(response.decision.version.as_deref(), Some("v2"));
    let fast = &response.versions[3];
    assert!(fast.probability_all_criteria < 0.01);
    assert_eq!(fast.win_probability, 0.0);
    let v2 = &response.versions[1];
    assert!(v2.probability_beats_baseline.expect("reward") > 0.99);
    let total_win: f64 = response.versions.iter().map(|v| v.win_probability).sum();
    assert!(total_win <= 1.0 + 1e-9);
}

#[test]
fn baseline_that_wins_an_ab_test_means_rollback() {
    let response = assess(json!({
        "kind": "ab", "iteration": 2, "strategy": {"algorithm": "progressive"},
        "versions": [version("a", 50, 5.0, 200.0, 10.0), version("b", 50, 5.0, 100.0, 10.0)],
        "ratios": ratios(),
        "criteria": {"rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
    }));
    assert_eq!(response.decision.action, Action::Rollback);
    assert_eq!(
        response.winner.as_ref().map(|w| w.version.as_str()),
        Some("a")
    );
}

#[test]
fn performance_test_passes_or_fails_on_its_slo() {
    let run = |errors: f64| {
        assess(json!({
            "kind": "performanceTest", "iteration": 1, "strategy": {"algorithm": "progressive"},
            "versions": [version("svc", 100, errors, 0.0, 10.0)],
            "ratios": ratios(), "criteria": {"objectives": slo()}
        }))
    };
    let pass = run(2.0);
    assert_eq!(pass.decision.action, Action::Promote);
    assert_eq!(split(&pass), vec![100]);
    let fail = run(80.0);
    assert_eq!(fail.decision.action, Action::Rollback);
    assert!(
        fail.decision.reason.starts_with("svc breaks error-rate"),
        "{}",
        fail.decision.reason
    );
}

#[test]
fn undecided_experiment_at_its_last_iteration_is_inconclusive_on_the_baseline() {
    let response = assess(json!({
        "kind": "ab", "iteration": 10, "strategy": {"algorithm": "progressive"}, "maxIterations": 10,
        "versions": [version("a", 50, 5.0, 100.0, 10.0), version("b", 50, 5.0, 101.0, 10.0)],
        "ratios": ratios(),
        "criteria": {"rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
    }));
    assert_eq!(response.decision.action, Action::Inconclusive);
    assert!(response.winner.is_none());
    assert_eq!(split(&response), vec![100, 0]);
}

#[test]
fn a_small_dip_from_prometheus_extrapolation_is_not_a_counter_reset() {
    // increase() over a growing window shrinks the count of a version with no new events.
    let mut next = version("next", 20, 4.0, 0.0, 10.0);
    next["history"] = json!([{"iteration": 2, "metrics": {
        "requests": {"counter": 1040.0}, "errors": {"counter": 4.2}}}]);
    let response = assess(json!({
        "kind": "canary", "iteration": 3, "strategy": {"algorithm": "progressive"},
        "versions": [version("stable", 80, 5.0, 0.0, 10.0), next],
        "ratios": ratios(), "criteria": {"objectives": slo()}
    }));
    assert!(
        !response.decision.reason.contains("went backwards"),
        "{}",
        response.decision.reason
    );
    assert!(
        response
            .warnings
            .iter()
            .all(|w| !w.message.contains("went backwards"))
    );
}

#[test]
fn a_counter_that_went_backwards_blocks_promotion_with_a_warning() {
    let mut next = version("next", 20, 4.0, 0.0, 10.0);
    next["history"] = json!([{"iteration": 2, "metrics": {"requests": {"counter": 5000.0}}}]);
    let response = assess(json!({
        "kind": "canary", "iteration": 3, "strategy": {"algorithm": "progressive"},
        "versions": [version("stable", 80, 5.0, 0.0, 10.0), next],
        "ratios": ratios(), "criteria": {"objectives": slo()}
    }));
    assert_eq!(response.decision.action, Action::Continue);
    assert!(response.decision.reason.contains("went backwards"));
    assert!(
        response
            .warnings
            .iter()
            .any(|w| w.field.as_deref() == Some("versions[1].metrics.requests"))
    );
}

#[test]
fn a_version_without_data_cannot_meet_its_criteria() {
    let response = assess(json!({
        "kind": "canary", "iteration": 1, "strategy": {"algorithm": "progressive"}, "minIterations": 3,
        "versions": [version("stable", 100, 5.0, 0.0, 10.0),
                     {"name": "next", "weight": 0, "metrics": {}}],
        "ratios": ratios(), "criteria": {"objectives": slo()}
    }));
    let next = &response.versions[1];
    assert!(next.criteria.iter().all(|c| c.probability == 0.0));
    assert!(next.metrics.iter().all(|m| m.value.is_none()));
    assert!(
        response
            .warnings
            .iter()
            .any(|w| w.message.contains("no data"))
    );
    assert_ne!(response.decision.action, Action::Promote);
}

#[test]
fn rate_estimates_carry_the_beta_credible_interval_and_tail_probability() {
    let response = assess(json!({
        "kind": "performanceTest", "iteration": 1, "strategy": {"algorithm": "progressive"},
        "versions": [version("svc", 100, 7.0, 0.0, 10.0)],
        "ratios": ratios(),
        "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}]}
    }));
    let beta = Beta::new(7.5, 993.5).expect("valid");
    let estimate = &response.versions[0].metrics[0];
    assert_eq!(estimate.value, Some(0.007));
    let interval = estimate.credible_interval.expect("data");
    assert_abs_diff_eq!(interval.lower, beta.inverse_cdf(0.025), epsilon = 1e-12);
    assert_abs_diff_eq!(interval.upper, beta.inverse_cdf(0.975), epsilon = 1e-12);
    assert_abs_diff_eq!(
        response.versions[0].criteria[0].probability,
        beta.cdf(0.01),
        epsilon = 1e-12
    );
}

#[test]
fn the_same_request_gives_the_same_bytes() {
    let request = json!({
        "kind": "abn", "iteration": 2, "strategy": {"algorithm": "progressive"}, "minIterations": 4,
        "versions": [version("v1", 40, 5.0, 100.0, 10.0),
                     version("v2", 30, 6.0, 110.0, 20.0),
                     version("v3", 30, 4.0, 105.0, 30.0)],
        "ratios": ratios(),
        "criteria": {"objectives": slo(),
                     "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
    });
    let first = serde_json::to_vec(&assess(request.clone())).expect("serializes");
    let second = serde_json::to_vec(&assess(request.clone())).expect("serializes");
    assert_eq!(first, second);
    // A different seed gives different draws, which shows the seed is what makes it stable.
    let mut reseeded = request;
    reseeded["strategy"] = json!({"algorithm": "progressive", "seed": 42});
    let third = assess(reseeded);
    assert_eq!(third.seed, 42);
    assert_ne!(serde_json::to_vec(&third).expect("serializes"), first);
}

#[test]
fn a_promotion_names_its_version_the_winner_even_when_a_removed_version_has_no_data() {
    // "gone" was removed for good at an earlier iteration (the evidence remembers it) and
    // its metrics are no longer reported: it is out of the race, so its missing data
    // neither blocks the promotion of v2 nor leaves that promotion without a winner.
    let request = json!({
        "kind": "abn", "iteration": 4, "strategy": {"algorithm": "progressive"},
        "versions": [version("v1", 50, 5.0, 100.0, 10.0),
                     version("v2", 50, 5.0, 200.0, 10.0),
                     {"name": "gone", "weight": 0}],
        "ratios": ratios(),
        "criteria": {"objectives": slo(),
                     "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]},
        "evidence": {"iteration": 3, "versions": [
            {"name": "v1"}, {"name": "v2"},
            {"name": "gone", "removed": "shown to break error-rate <= 0.02 at iteration 2"}
        ]}
    });
    let response = assess(request);
    assert_eq!(
        response.decision.action,
        Action::Promote,
        "{}",
        response.decision.reason
    );
    assert_eq!(response.decision.version.as_deref(), Some("v2"));
    assert_eq!(
        response.winner.as_ref().map(|w| w.version.as_str()),
        Some("v2")
    );
}
