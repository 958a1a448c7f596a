//! Every refusal names the field at fault and says why.

use iter8_api::{AssessmentRequest, InvalidRequest};
use serde_json::{Value, json};

fn valid() -> Value {
    json!({
        "kind": "canary",
        "iteration": 1,
        "versions": [
            {"name": "a", "weight": 90, "metrics": {
                "requests": {"counter": 100.0}, "errors": {"counter": 1.0},
                "latency": {"histogram": {"buckets": [{"le": 100, "count": 90}, {"le": "+Inf", "count": 100}]}}}},
            {"name": "b", "weight": 10, "metrics": {
                "requests": {"counter": 10.0}, "errors": {"counter": 0.0}}}
        ],
        "ratios": [{"name": "error-rate", "numerator": "errors", "denominator": "requests"}],
        "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01},
                                    {"metric": "latency", "quantile": 0.95, "upperLimit": 200}]}
    })
}

fn refusal(edit: impl FnOnce(&mut Value)) -> InvalidRequest {
    let mut body = valid();
    edit(&mut body);
    let request: AssessmentRequest = serde_json::from_value(body).expect("decodes");
    request.validate().expect_err("must be refused")
}

fn decode_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut body = valid();
    edit(&mut body);
    serde_json::from_value::<AssessmentRequest>(body)
        .expect_err("must not decode")
        .to_string()
}

#[test]
fn the_valid_request_passes() {
    let request: AssessmentRequest = serde_json::from_value(valid()).expect("decodes");
    assert_eq!(request.validate(), Ok(()));
}

#[test]
fn weights_that_do_not_sum_to_100_are_refused() {
    let e = refusal(|b| b["versions"][1]["weight"] = json!(20));
    assert_eq!(e.field, "versions[].weight");
    assert!(e.reason.contains("sum to 100, got 110"), "{}", e.reason);
}

#[test]
fn negative_counts_are_refused() {
    let e = refusal(|b| b["versions"][1]["metrics"]["errors"] = json!({"counter": -1.0}));
    assert_eq!(e.field, "versions[1].metrics.errors.counter");
    assert!(e.reason.contains("non-negative"));
}

#[test]
fn decreasing_cumulative_buckets_are_refused() {
    let e = refusal(|b| {
        b["versions"][0]["metrics"]["latency"]["histogram"]["buckets"][1]["count"] = json!(50)
    });
    assert_eq!(
        e.field,
        "versions[0].metrics.latency.histogram.buckets[1].count"
    );
    assert!(e.reason.contains("must not decrease"));
}

#[test]
fn a_criterion_on_a_metric_without_data_is_a_data_state_unless_the_client_reports_all() {
    let mut body = valid();
    body["criteria"]["objectives"][0]["metric"] = json!("nope");
    let request: AssessmentRequest = serde_json::from_value(body).expect("decodes");
    request
        .validate()
        .expect("no data yet is not a fault of the request");
    let e = request.check_metrics_known().expect_err("unknown metric");
    assert_eq!(e.field, "criteria.objectives[0].metric");
    assert!(e.reason.contains("no version has data"));
}

#[test]
fn a_histogram_criterion_needs_a_quantile() {
    let e = refusal(|b| {
        b["criteria"]["objectives"][1]
            .as_object_mut()
            .expect("object")
            .remove("quantile");
    });
    assert_eq!(e.field, "criteria.objectives[1].quantile");
}

#[test]
fn too_many_versions_are_refused() {
    let e = refusal(|b| {
        b["kind"] = json!("abn");
        let versions: Vec<Value> = (0..17)
            .map(|i| json!({"name": format!("v{i}"), "weight": if i == 0 { 100 } else { 0 }}))
            .collect();
        b["versions"] = json!(versions);
        b["criteria"] = json!({});
    });
    assert_eq!(e.field, "versions");
    assert!(e.reason.contains("at most 16"));
}

#[test]
fn too_many_buckets_are_refused() {
    let e = refusal(|b| {
        let buckets: Vec<Value> = (1..=257).map(|i| json!({"le": i, "count": i})).collect();
        b["versions"][0]["metrics"]["latency"]["histogram"]["buckets"] = json!(buckets);
    });
    assert_eq!(e.field, "versions[0].metrics.latency.histogram.buckets");
    assert!(e.reason.contains("at most 256"));
}

#[test]
fn a_ratio_numerator_above_its_denominator_is_not_a_refusal_of_the_request() {
    // Review m11: a data problem of one version (the engine treats its rate as no data).
    let mut body = valid();
    body["versions"][1]["metrics"]["errors"] = json!({"counter": 11.0});
    let request: AssessmentRequest = serde_json::from_value(body).expect("decodes");
    request.validate().expect("accepted");
}

#[test]
fn experiment_kind_and_version_count_must_agree() {
    let e = refusal(|b| b["kind"] = json!("performanceTest"));
    assert_eq!(e.field, "versions");
    assert!(e.reason.contains("exactly one version"));
}

#[test]
fn ab_tests_need_a_reward() {
    let e = refusal(|b| b["kind"] = json!("ab"));
    assert_eq!(e.field, "criteria.rewards");
}

#[test]
fn fixed_split_needs_a_split_that_sums_to_100() {
    let e = refusal(|b| b["strategy"] = json!({"algorithm": "fixed_split"}));
    assert_eq!(e.field, "strategy.split");
    let e = refusal(|b| b["strategy"] = json!({"algorithm": "fixed_split", "split": [50, 40]}));
    assert_eq!(e.field, "strategy.split");
    assert!(e.reason.contains("got 90"));
}

#[test]
fn strategy_limits_are_checked() {
    let e = refusal(|b| b["strategy"] = json!({"winnerProbability": 1.5}));
    assert_eq!(e.field, "strategy.winnerProbability");
    let e = refusal(|b| b["strategy"] = json!({"draws": 10}));
    assert_eq!(e.field, "strategy.draws");
    let e = refusal(|b| b["strategy"] = json!({"maxCandidateWeightIncrement": 0}));
    assert_eq!(e.field, "strategy.maxCandidateWeightIncrement");
}

#[test]
fn alpha_must_be_a_small_error_rate() {
    for alpha in [0.0, 0.6, -0.1] {
        let e = refusal(|b| b["strategy"] = json!({"alpha": alpha}));
        assert_eq!(e.field, "strategy.alpha");
    }
    let e = refusal(|b| b["strategy"] = json!({"maxFailedChecks": 0}));
    assert_eq!(e.field, "strategy.maxFailedChecks");
}

#[test]
fn safe_is_the_default_algorithm_with_alpha_five_percent() {
    let s = iter8_api::Strategy::default();
    assert_eq!(s.algorithm, iter8_api::Algorithm::Safe);
    assert_eq!(s.alpha, 0.05);
}

#[test]
fn duplicate_version_names_are_refused() {
    let e = refusal(|b| b["versions"][1]["name"] = json!("a"));
    assert_eq!(e.field, "versions[1].name");
}

#[test]
fn unknown_algorithms_and_fields_fail_to_decode_with_their_name() {
    let e = decode_error(|b| b["strategy"] = json!({"algorithm": "magic"}));
    assert!(e.contains("unknown variant `magic`"), "{e}");
    let e = decode_error(|b| b["surprise"] = json!(1));
    assert!(e.contains("unknown field `surprise`"), "{e}");
    let e = decode_error(|b| b["criteria"]["objectives"][1]["quantile"] = json!(1.5));
    assert!(e.contains("quantile must be between 0 and 1"), "{e}");
}

/// Evidence as an answer to `valid()` at iteration 1 would carry it.
fn evidence() -> Value {
    json!({"iteration": 1, "versions": [
        {"name": "a", "last": {"requests": {"counter": 100.0}, "latency": {"histogram": {
            "buckets": [{"le": 100, "count": 90}, {"le": "+Inf", "count": 100}]}}}},
        {"name": "b", "last": {"requests": {"counter": 10.0}}}
    ]})
}

#[test]
fn evidence_from_an_earlier_iteration_of_the_same_versions_passes() {
    let mut body = valid();
    body["iteration"] = json!(2);
    body["evidence"] = evidence();
    let request: AssessmentRequest = serde_json::from_value(body).expect("decodes");
    request.validate().expect("valid");
}

#[test]
fn evidence_of_other_versions_or_a_later_iteration_is_refused_naming_the_field() {
    let e = refusal(|b| {
        b["iteration"] = json!(2);
        b["evidence"] = evidence();
        b["evidence"]["versions"][1]["name"] = json!("c");
    });
    assert_eq!(e.field, "evidence.versions[1].name");
    let e = refusal(|b| {
        b["evidence"] = evidence();
    });
    assert_eq!(e.field, "evidence.iteration");
    let e = refusal(|b| {
        b["iteration"] = json!(2);
        b["evidence"] = evidence();
        b["evidence"]["versions"]
            .as_array_mut()
            .expect("array")
            .pop();
    });
    assert_eq!(e.field, "evidence.versions");
    let e = refusal(|b| {
        b["iteration"] = json!(2);
        b["evidence"] = evidence();
        b["evidence"]["versions"][0]["last"]["latency"] =
            json!({"mean": {"sum": 1.0, "count": 1.0}});
    });
    assert_eq!(e.field, "versions[0].metrics.latency");
    assert!(e.reason.contains("keeps its kind"), "{}", e.reason);
    let e = refusal(|b| {
        b["iteration"] = json!(2);
        b["evidence"] = evidence();
        b["versions"][1]["history"] = json!([{"iteration": 1, "metrics": {}}]);
    });
    assert_eq!(e.field, "versions[1].history");
}

/// The refusal of `valid()` at iteration 3 carrying `evidence()` at iteration 2, with two
/// recent intervals per version, after `edit` changed the evidence.
fn evidence_refusal(edit: impl FnOnce(&mut Value)) -> iter8_api::InvalidRequest {
    refusal(|b| {
        b["iteration"] = json!(3);
        let mut e = evidence();
        e["iteration"] = json!(2);
        for v in e["versions"].as_array_mut().expect("array") {
            v["recent"] = json!([
                {"iteration": 1, "weight": 90, "traffic": 90.0},
                {"iteration": 2, "weight": 90, "traffic": 10.0}
            ]);
        }
        edit(&mut e);
        b["evidence"] = e;
    })
}

#[test]
fn evidence_out_of_range_is_refused_naming_the_field() {
    type Case = (fn(&mut Value), &'static str);
    let cases: [Case; 9] = [
        (
            |e| e["versions"][1]["recent"][1]["weight"] = json!(101),
            "evidence.versions[1].recent[1].weight",
        ),
        (
            |e| e["versions"][0]["recent"][0]["traffic"] = json!(-1e300),
            "evidence.versions[0].recent[0].traffic",
        ),
        (
            |e| e["versions"][0]["recent"][1]["iteration"] = json!(1),
            "evidence.versions[0].recent[1].iteration",
        ),
        (
            |e| e["versions"][0]["recent"][1]["iteration"] = json!(3),
            "evidence.versions[0].recent[1].iteration",
        ),
        (
            |e| e["versions"][1]["recent"][0]["values"] = json!([0.1]),
            "evidence.versions[1].recent[0].values",
        ),
        (
            |e| e["versions"][1]["failedChecks"] = json!(3),
            "evidence.versions[1].failedChecks",
        ),
        (
            |e| e["versions"][0]["resetAt"] = json!(7),
            "evidence.versions[0].resetAt",
        ),
        (|e| e["finalLook"] = json!(0), "evidence.finalLook"),
        (
            |e| {
                e["versions"][0]["batches"] = json!({"latency": {"batches": 5, "reference": 1.0,
                    "sum": 0.0, "count": 10.0, "sumSq": 0.0, "cross": 0.0, "countSq": 50.0}});
            },
            "evidence.versions[0].batches.latency.batches",
        ),
    ];
    for (edit, field) in cases {
        let e = evidence_refusal(edit);
        assert_eq!(e.field, field, "{}", e.reason);
    }
    let e = evidence_refusal(|e| {
        e["versions"][0]["batches"] = json!({"latency": {"batches": 2, "reference": 1.0,
            "sum": 0.0, "count": 10.0, "sumSq": 0.0, "cross": 0.0, "countSq": -1.0}});
    });
    assert_eq!(e.field, "evidence.versions[0].batches.latency");
}

#[test]
fn evidence_in_range_passes() {
    let mut body = valid();
    body["iteration"] = json!(3);
    let mut e = evidence();
    e["iteration"] = json!(2);
    e["finalLook"] = json!(2);
    for v in e["versions"].as_array_mut().expect("array") {
        v["recent"] = json!([
            {"iteration": 1, "weight": 100, "traffic": 90.0},
            {"iteration": 2, "weight": 0, "traffic": 0.0}
        ]);
        v["failedChecks"] = json!(2);
        v["resetAt"] = json!(2);
    }
    body["evidence"] = e;
    let request: AssessmentRequest = serde_json::from_value(body.clone()).expect("decodes");
    request.validate().expect("valid");
    // A dipped count, as engines before 2026-12-01 recorded it, is admitted (read as unknown):
    // an experiment running across an upgrade must not be refused on its own evidence.
    body["evidence"]["versions"][0]["recent"][1]["traffic"] = json!(-0.11);
    let request: AssessmentRequest = serde_json::from_value(body).expect("decodes");
    request.validate().expect("old evidence is valid");
}

#[test]
fn max_candidate_weight_is_optional_and_an_explicit_100_is_kept() {
    use iter8_api::Algorithm;
    let decode = |strategy: Value| {
        let mut body = valid();
        body["strategy"] = strategy;
        serde_json::from_value::<AssessmentRequest>(body).expect("decodes")
    };
    let absent = decode(json!({"algorithm": "fixed_thresholds"}));
    assert_eq!(absent.strategy.max_candidate_weight, None);
    assert_eq!(absent.strategy.candidate_weight_limit(), 50);
    assert_eq!(decode(json!({})).strategy.candidate_weight_limit(), 100);
    let explicit = decode(json!({"algorithm": "fixed_thresholds", "maxCandidateWeight": 100}));
    assert_eq!(explicit.strategy.candidate_weight_limit(), 100);
    assert_eq!(explicit.validate(), Ok(()));
    let wire = serde_json::to_value(&explicit.strategy).expect("encodes");
    assert_eq!(wire["maxCandidateWeight"], json!(100));
    assert_eq!(Algorithm::Safe.default_max_candidate_weight(), 100);
}

#[test]
fn a_max_candidate_weight_over_100_is_refused_naming_the_field() {
    let e = refusal(|b| b["strategy"] = json!({"maxCandidateWeight": 101}));
    assert_eq!(e.field, "strategy.maxCandidateWeight");
    assert!(
        e.reason.contains("between 0 and 100, got 101"),
        "{}",
        e.reason
    );
}
