//! The findings of the 2026-11-30 review (M2-M6, m2, m3, m7, m9, m11) and issue 13's decision
//! rules, each on data shaped as the controller produces it: traffic starts 100/0 on the
//! baseline, a candidate has no data at iteration 1, and each request carries the previous
//! answer's evidence.

use iter8_api::{Action, Algorithm, AssessmentRequest, AssessmentResponse, InvalidRequest};
use serde_json::{Value, json};

fn request(body: Value) -> AssessmentRequest {
    serde_json::from_value(body).expect("request decodes")
}

fn assess(body: Value) -> AssessmentResponse {
    iter8_engine::assess(&request(body)).expect("request is valid")
}

fn refuse(body: Value) -> InvalidRequest {
    iter8_engine::assess(&request(body)).expect_err("request is refused")
}

fn split(response: &AssessmentResponse) -> Vec<u32> {
    response.split.iter().map(|w| w.weight).collect()
}

fn ratios() -> Value {
    json!([
        {"name": "error-rate", "numerator": "errors", "denominator": "requests"},
        {"name": "conversion-rate", "numerator": "conversions", "denominator": "requests"}
    ])
}

fn counters(requests: f64, errors: f64, conversions: f64) -> Value {
    json!({"requests": {"counter": requests}, "errors": {"counter": errors},
           "conversions": {"counter": conversions}})
}

const CLASSIC: [Algorithm; 4] = [
    Algorithm::Safe,
    Algorithm::Progressive,
    Algorithm::Top2,
    Algorithm::Uniform,
];

#[test]
fn a_candidate_without_data_at_iteration_1_gets_traffic_and_no_verdict_in_any_strategy() {
    for algorithm in CLASSIC {
        for kind in ["canary", "ab"] {
            let response = assess(json!({
                "kind": kind, "iteration": 1, "maxIterations": 20,
                "strategy": {"algorithm": algorithm.name()},
                "versions": [
                    {"name": "stable", "weight": 100, "metrics": counters(4000.0, 20.0, 200.0)},
                    {"name": "next", "weight": 0, "metrics": {}}
                ],
                "ratios": ratios(),
                "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}],
                             "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
            }));
            assert_eq!(
                response.decision.action,
                Action::Continue,
                "{} {kind}: {}",
                algorithm.name(),
                response.decision.reason
            );
            assert!(
                response.winner.is_none(),
                "{} {kind}: a winner named before the candidate has data: {:?}",
                algorithm.name(),
                response.winner
            );
            assert!(
                split(&response)[1] > 0,
                "{} {kind}: the candidate gets no traffic: {:?}",
                algorithm.name(),
                split(&response)
            );
        }
    }
}

#[test]
fn a_missing_baseline_reward_blocks_promotion_in_every_strategy() {
    for algorithm in CLASSIC {
        let baseline = json!({"requests": {"counter": 4000.0}, "errors": {"counter": 20.0}});
        let response = assess(json!({
            "kind": "ab", "iteration": 20, "maxIterations": 40,
            "strategy": {"algorithm": algorithm.name()},
            "versions": [
                {"name": "stable", "weight": 50, "metrics": baseline},
                {"name": "next", "weight": 50, "metrics": counters(40000.0, 20.0, 4000.0)}
            ],
            "ratios": ratios(),
            "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}],
                         "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
        }));
        assert_ne!(
            response.decision.action,
            Action::Promote,
            "{}: {}",
            algorithm.name(),
            response.decision.reason
        );
    }
}

#[test]
fn canary_and_performance_test_without_criteria_are_refused_naming_the_field() {
    for (kind, versions) in [
        (
            "canary",
            json!([{"name": "a", "weight": 100, "metrics": counters(10.0, 0.0, 0.0)},
                          {"name": "b", "weight": 0, "metrics": {}}]),
        ),
        (
            "performanceTest",
            json!([{"name": "a", "weight": 100, "metrics": counters(10.0, 0.0, 0.0)}]),
        ),
    ] {
        let e = refuse(json!({"kind": kind, "iteration": 1, "versions": versions}));
        assert_eq!(e.field, "criteria.objectives", "{kind}: {e}");
    }
}

#[test]
fn a_histogram_without_inf_bucket_is_no_data_not_a_pass() {
    let response = assess(json!({
        "kind": "performanceTest", "iteration": 30, "maxIterations": 30,
        "strategy": {"algorithm": "progressive"},
        "versions": [{"name": "a", "weight": 100, "metrics": {"latency": {"histogram": {"buckets": [
            {"le": 100, "count": 9000.0}, {"le": 800, "count": 10000.0}]}}}}],
        "criteria": {"objectives": [{"metric": "latency", "quantile": 0.95, "upperLimit": 800}]}
    }));
    assert_ne!(
        response.decision.action,
        Action::Promote,
        "{}",
        response.decision.reason
    );
    assert!(
        response.warnings.iter().any(|w| w.message.contains("+Inf")),
        "{:?}",
        response.warnings
    );
}

#[test]
fn mixed_metric_kinds_across_versions_are_refused() {
    let e = refuse(json!({
        "kind": "canary", "iteration": 2,
        "versions": [
            {"name": "a", "weight": 90, "metrics": {"latency": {"histogram": {"buckets": [
                {"le": 100, "count": 90.0}, {"le": "+Inf", "count": 100.0}]}}}},
            {"name": "b", "weight": 10, "metrics": {"latency": {"mean": {"sum": 50.0, "count": 10.0}}}}
        ],
        "criteria": {"objectives": [{"metric": "latency", "quantile": 0.95, "upperLimit": 200}]}
    }));
    assert_eq!(e.field, "versions[1].metrics.latency", "{e}");
}

#[test]
fn a_quantile_that_rounds_to_0_or_1_is_refused_and_the_schema_excludes_both() {
    assert!(iter8_api::Quantile::try_from(0.999_999_6).is_err());
    assert!(iter8_api::Quantile::try_from(0.000_000_4).is_err());
    assert!(iter8_api::Quantile::try_from(0.95).is_ok());
    let schema = serde_json::to_value(schemars::schema_for!(iter8_api::Quantile)).expect("schema");
    // 0 and 1 are out: the schema's bounds are the nearest quantiles the API holds (it keeps
    // parts per million), which both JSON Schema and the Kubernetes schema can state.
    assert_eq!(schema["minimum"], json!(0.000001), "{schema}");
    assert_eq!(schema["maximum"], json!(0.999999), "{schema}");
    assert!(iter8_api::Quantile::try_from(0.000_001).is_ok());
    assert!(iter8_api::Quantile::try_from(0.999_999).is_ok());
}

#[test]
fn a_ratio_numerator_above_its_denominator_is_a_data_problem_of_that_version() {
    let response = assess(json!({
        "kind": "canary", "iteration": 5, "maxIterations": 20,
        "versions": [
            {"name": "a", "weight": 90, "metrics": counters(4000.0, 10.0, 0.0)},
            {"name": "b", "weight": 10, "metrics": counters(400.0, 500.0, 0.0)}
        ],
        "ratios": ratios(),
        "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}]}
    }));
    assert_eq!(
        response.decision.action,
        Action::Continue,
        "{}",
        response.decision.reason
    );
    assert!(
        response
            .warnings
            .iter()
            .any(|w| w.field.as_deref() == Some("versions[1].metrics.errors")),
        "{:?}",
        response.warnings
    );
}

#[test]
fn a_criterion_no_version_has_data_for_yet_is_no_data_not_a_refusal() {
    for metric in [
        json!({"metric": "latency", "quantile": 0.95, "upperLimit": 500}),
        json!({"metric": "latency-mean", "upperLimit": 500}),
    ] {
        let response = assess(json!({
            "kind": "canary", "iteration": 1, "maxIterations": 20,
            "versions": [
                {"name": "a", "weight": 100, "metrics": {}},
                {"name": "b", "weight": 0, "metrics": {}}
            ],
            "criteria": {"objectives": [metric]}
        }));
        assert_eq!(
            response.decision.action,
            Action::Continue,
            "{}",
            response.decision.reason
        );
    }
}

/// iter8's classic allocations, which keep their own split but decide with `safe`'s rule.
const CLASSIC_ALLOCATIONS: [Algorithm; 5] = [
    Algorithm::Progressive,
    Algorithm::Top2,
    Algorithm::Uniform,
    Algorithm::CheckAndIncrement,
    Algorithm::EpsilonTGreedy,
];

#[test]
fn the_classic_algorithms_promote_only_on_anytime_valid_evidence_like_safe() {
    // 6 % against 5 % conversions on 4,000 requests each: the posterior is sure enough
    // (P(better) about 0.98), the mSPRT at alpha is not yet, so no strategy promotes.
    let body = |algorithm: Algorithm| {
        json!({
            "kind": "ab", "iteration": 20, "maxIterations": 40,
            "strategy": {"algorithm": algorithm.name()},
            "versions": [
                {"name": "stable", "weight": 50, "metrics": counters(4000.0, 20.0, 200.0)},
                {"name": "next", "weight": 50, "metrics": counters(4000.0, 20.0, 240.0)}
            ],
            "ratios": ratios(),
            "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}],
                         "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
        })
    };
    let safe = assess(body(Algorithm::Safe));
    assert_eq!(safe.decision.action, Action::Continue);
    for algorithm in CLASSIC_ALLOCATIONS {
        let response = assess(body(algorithm));
        assert!(
            response.versions[1].probability_beats_baseline > Some(0.95),
            "{}: the posterior alone would promote",
            algorithm.name()
        );
        assert_eq!(
            response.decision,
            safe.decision,
            "{}: decides as safe does",
            algorithm.name()
        );
        assert!(
            response
                .decision
                .reason
                .contains("not yet shown better than the baseline"),
            "{}: {}",
            algorithm.name(),
            response.decision.reason
        );
    }
}

#[test]
fn the_classic_algorithms_roll_back_only_on_a_shown_breach_like_safe() {
    // 150 requests with 6 errors (4 % against a 1 % limit): too few observations to end
    // the candidate, however bad its posterior looks.
    for algorithm in CLASSIC_ALLOCATIONS {
        let response = assess(json!({
            "kind": "canary", "iteration": 3, "maxIterations": 40,
            "strategy": {"algorithm": algorithm.name()},
            "versions": [
                {"name": "stable", "weight": 90, "metrics": counters(4000.0, 20.0, 200.0)},
                {"name": "next", "weight": 10, "metrics": counters(150.0, 6.0, 8.0)}
            ],
            "ratios": ratios(),
            "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}]}
        }));
        assert_eq!(
            response.decision.action,
            Action::Continue,
            "{}: {}",
            algorithm.name(),
            response.decision.reason
        );
    }
}

#[test]
fn a_candidate_shown_to_break_a_criterion_gets_no_traffic_in_the_classic_allocations() {
    for algorithm in [Algorithm::Progressive, Algorithm::Top2, Algorithm::Uniform] {
        let response = assess(json!({
            "kind": "abn", "iteration": 5, "maxIterations": 40,
            "strategy": {"algorithm": algorithm.name()},
            "versions": [
                {"name": "stable", "weight": 40, "metrics": counters(4000.0, 20.0, 200.0)},
                {"name": "broken", "weight": 30, "metrics": counters(4000.0, 200.0, 240.0)},
                {"name": "next", "weight": 30, "metrics": counters(4000.0, 20.0, 210.0)}
            ],
            "ratios": ratios(),
            "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}],
                         "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
        }));
        assert_eq!(response.decision.action, Action::Continue);
        assert!(
            response.evidence.versions[1].removed.is_some(),
            "{}: the breach is remembered",
            algorithm.name()
        );
        assert_eq!(
            split(&response)[1],
            0,
            "{}: {:?}",
            algorithm.name(),
            split(&response)
        );
    }
}

#[test]
fn a_version_removed_for_good_is_never_promoted_nor_named_the_winner() {
    // c1 is shown to break the error limit at iteration 5 (5 % errors on 4,000 requests) and
    // removed for good. Its later data looks excellent (under fixed_split it keeps its
    // traffic; under the others a removed version's data can still change): it must stay out.
    for algorithm in [
        Algorithm::FixedSplit,
        Algorithm::Progressive,
        Algorithm::Safe,
    ] {
        let body = |iteration: u32, versions: [Value; 3], evidence: Option<Value>| {
            let mut body = json!({
                "kind": "abn", "iteration": iteration, "maxIterations": 48,
                "strategy": {"algorithm": algorithm.name()},
                "versions": [
                    {"name": "base", "weight": 34, "metrics": versions[0]},
                    {"name": "c1", "weight": 33, "metrics": versions[1]},
                    {"name": "c2", "weight": 33, "metrics": versions[2]}
                ],
                "ratios": ratios(),
                "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}],
                             "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
            });
            if algorithm == Algorithm::FixedSplit {
                body["strategy"]["split"] = json!([34, 33, 33]);
            }
            if let Some(evidence) = evidence {
                body["evidence"] = evidence;
            }
            body
        };
        let first = assess(body(
            5,
            [
                counters(4000.0, 20.0, 200.0),
                counters(4000.0, 200.0, 200.0),
                counters(4000.0, 20.0, 200.0),
            ],
            None,
        ));
        assert!(
            first.evidence.versions[1].removed.is_some(),
            "{}: {}",
            algorithm.name(),
            first.decision.reason
        );
        let evidence = serde_json::to_value(&first.evidence).expect("evidence encodes");
        // 400,000 more requests each, following the split; c1 now 0.35 % errors, 8 % conversion.
        let later = assess(body(
            13,
            [
                counters(412_000.0, 2060.0, 20_600.0),
                counters(400_000.0, 1400.0, 32_000.0),
                counters(400_000.0, 2000.0, 20_000.0),
            ],
            Some(evidence),
        ));
        assert_ne!(
            later.decision.version.as_deref(),
            Some("c1"),
            "{}: {}",
            algorithm.name(),
            later.decision.reason
        );
        assert!(
            later.winner.as_ref().is_none_or(|w| w.version != "c1"),
            "{}: {:?}",
            algorithm.name(),
            later.winner
        );
        assert!(
            later
                .decision
                .reason
                .contains("c1 was shown to break a criterion at iteration 5"),
            "{}: {}",
            algorithm.name(),
            later.decision.reason
        );
    }
}
