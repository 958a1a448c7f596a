//! The Experiment controller end to end, on a real kube-apiserver with the official Gateway
//! API and Istio CRDs, the real analytics server on a loopback port, and metrics from a test
//! implementation of the metrics trait (the Prometheus backend has tests of its own).

mod common;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use iter8_api::Action;
use iter8_controller::analytics::AnalyticsClient;
use iter8_controller::notifier::{Notifier, NotifierConfig};
use iter8_controller::router::KubeRouter;
use iter8_controller::telemetry::Telemetry;
use iter8_controller::{Context, Settings};
use iter8_crd::{Experiment, Metric, Phase};
use iter8_integration_tests::TestEnv;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use common::*;

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn canary_meeting_its_slo_ends_with_all_traffic_on_the_candidate() -> Result<()> {
    let h = Harness::new("canary-promote").await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    h.experiments()
        .create(&PostParams::default(), &canary("good", "reviews", 10)?)
        .await?;

    let exp = wait_for_phase(&h.experiments(), "good", Phase::Completed).await?;
    let status = exp.status.expect("status");
    let decision = status.decision.expect("decision");
    assert_eq!(decision.action, Action::Promote);
    assert_eq!(decision.version.as_deref(), Some("next"));
    assert_eq!(status.recommended_version.as_deref(), Some("next"));
    assert!(
        status.completed_iterations >= 2,
        "no promotion before minIterations"
    );
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [0, 100]);
    let completed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Completed")
        .expect("Completed");
    assert_eq!(
        (completed.status.as_str(), completed.reason.as_str()),
        ("True", "Promoted")
    );
    assert_eq!(status.weights_summary.as_deref(), Some("stable=0,next=100"));
    // The ledger keeps what the engine needs, for the whole life: the evidence of every
    // completed iteration, with the split each interval was served under; the history is
    // only for display.
    let ledger = status.ledger.as_ref().expect("ledger");
    assert_eq!(ledger.completed, status.completed_iterations);
    let evidence = ledger.evidence.as_ref().expect("evidence");
    assert_eq!(evidence.iteration, status.completed_iterations);
    assert_eq!(evidence.versions.len(), 2);
    assert!(
        evidence.versions[1].last.contains_key("requests"),
        "{evidence:?}"
    );
    for (k, interval) in evidence.versions[1].recent.iter().enumerate() {
        let served = if k == 0 {
            0
        } else {
            status.history[k - 1].weights[1]
        };
        assert_eq!(interval.weight, Some(served), "interval {k}");
    }
    // Events are published after the status write that ends the experiment: wait for them.
    let reasons: Vec<String> = wait_for("a Promoted event", Duration::from_secs(15), async || {
        let reasons: Vec<String> = events_for(&h.env.client, h.ns(), "good")
            .await?
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        Ok(reasons.iter().any(|r| r == "Promoted").then_some(reasons))
    })
    .await?;
    assert!(reasons.iter().any(|r| r == "Started"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Iteration"), "{reasons:?}");

    // The controller's own /metrics saw the iterations and the promotion.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, h.telemetry.router()).into_future());
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        text.contains("iter8_controller_iterations_total{action=\"promote\"} 1"),
        "{text}"
    );
    assert!(text.contains("iter8_controller_iteration_duration_seconds_count{kind=\"canary\"}"));
    assert!(text.contains("iter8_controller_reconciles_total{outcome=\"ok\"}"));
    h.finish().await
}

#[tokio::test]
async fn an_iterations_metric_queries_run_concurrently() -> Result<()> {
    // Each query takes 12.5-50 ms, as over a network: one at a time, an iteration's queries
    // (every metric of every version) would add up; run together, they overlap.
    let h = Harness::new("concurrent-queries").await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    h.metrics.set_latency(Duration::from_millis(25));
    let exp = canary("overlap", "reviews", 10)?;
    let queries = exp.spec.versions.len() * exp.spec.metrics.len();
    h.experiments().create(&PostParams::default(), &exp).await?;
    wait_for_phase(&h.experiments(), "overlap", Phase::Completed).await?;
    assert_eq!(
        h.metrics.most_in_flight(),
        queries,
        "every query of an iteration is in flight at once"
    );
    h.finish().await
}

#[tokio::test]
async fn status_writes_keep_every_field_managers_entry() -> Result<()> {
    // The controller caches Experiments with only `iter8 approve`'s managedFields entries;
    // its status writes must not hand that partial list to the API server as the whole.
    let h = Harness::new("managed-fields").await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    let mut exp = canary("kept", "reviews", 10)?;
    exp.spec.duration.min_iterations = 4;
    let creator = PostParams {
        field_manager: Some("gitops-sync".into()),
        ..PostParams::default()
    };
    h.experiments().create(&creator, &exp).await?;
    let iterations = async |n: u32| {
        wait_for(
            &format!("{n} iterations"),
            Duration::from_secs(60),
            async || {
                let e = h.experiments().get("kept").await?;
                let done = e.status.as_ref().map_or(0, |s| s.completed_iterations);
                Ok((done >= n).then_some(()))
            },
        )
        .await
    };
    iterations(1).await?;
    let approver = PatchParams {
        field_manager: Some(iter8_crd::APPROVAL_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let note = json!({"metadata": {"annotations": {"example.com/reviewed": "yes"}}});
    h.experiments()
        .patch("kept", &approver, &Patch::Merge(&note))
        .await?;
    // Two more iterations: status writes made on a cached copy holding the approver's entry.
    let approved_at = h.experiments().get("kept").await?;
    let after = approved_at.status.map_or(0, |s| s.completed_iterations) + 2;
    iterations(after).await?;
    let e = h.experiments().get("kept").await?;
    let managers: Vec<&str> = e
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    for manager in ["gitops-sync", iter8_crd::APPROVAL_FIELD_MANAGER] {
        assert!(managers.contains(&manager), "{manager} lost: {managers:?}");
    }
    h.finish().await
}

#[tokio::test]
async fn canary_breaking_its_slo_ends_with_traffic_back_on_the_baseline() -> Result<()> {
    let h = Harness::new("canary-rollback").await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 250.0, 0.0);
    h.experiments()
        .create(&PostParams::default(), &canary("bad", "reviews", 10)?)
        .await?;

    let exp = wait_for_phase(&h.experiments(), "bad", Phase::Completed).await?;
    let status = exp.status.expect("status");
    assert_eq!(status.decision.expect("decision").action, Action::Rollback);
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [100, 0]);
    let completed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Completed")
        .expect("Completed");
    assert_eq!(completed.reason, "RolledBack");
    h.finish().await
}

#[tokio::test]
async fn abn_with_three_candidates_promotes_the_best_feasible_one_on_a_virtual_service()
-> Result<()> {
    let h = Harness::new("abn-istio").await?;
    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(h.env.client.clone(), h.ns(), &virtual_service_resource());
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}
        ]}]}
    }))?;
    vs_api.create(&PostParams::default(), &vs).await?;
    h.metrics.set("v1", 5000.0, 5.0, 500.0);
    h.metrics.set("v2", 5000.0, 5.0, 650.0); // best feasible
    h.metrics.set("v3", 5000.0, 150.0, 720.0); // converts best, breaks the error SLO
    h.metrics.set("v4", 5000.0, 5.0, 540.0);
    let versions: Vec<Value> = (1..=4)
        .map(|i| {
            json!({"name": format!("v{i}"), "labels": {"version": format!("v{i}")},
                   "backend": {"name": "reviews", "subset": format!("v{i}")}})
        })
        .collect();
    let exp: Experiment = serde_json::from_value(json!({
        "apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
        "metadata": {"name": "abn"},
        "spec": {
            "kind": "abn", "versions": versions,
            "router": {"virtualService": {"name": "reviews"}},
            "metrics": counter_metrics(), "ratios": ratios(),
            "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}],
                         "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]},
            "duration": {"interval": "1s", "minIterations": 2, "maxIterations": 10}
        }
    }))?;
    h.experiments().create(&PostParams::default(), &exp).await?;

    let exp = wait_for_phase(&h.experiments(), "abn", Phase::Completed).await?;
    let status = exp.status.expect("status");
    assert_eq!(
        status.winner.as_ref().map(|w| w.version.as_str()),
        Some("v2")
    );
    assert_eq!(status.decision.expect("decision").action, Action::Promote);
    let route = vs_api.get("reviews").await?.data["spec"]["http"][0]["route"].clone();
    let weights: Vec<(String, u64)> = route
        .as_array()
        .expect("route list")
        .iter()
        .map(|r| {
            (
                r["destination"]["subset"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        weights,
        vec![
            ("v1".into(), 0),
            ("v2".into(), 100),
            ("v3".into(), 0),
            ("v4".into(), 0)
        ]
    );
    let v3 = status
        .versions
        .iter()
        .find(|v| v.name == "v3")
        .expect("v3 assessed");
    assert!(v3.probability_all_criteria < 0.05);
    h.finish().await
}

#[tokio::test]
async fn performance_test_ends_with_a_verdict_and_touches_no_traffic() -> Result<()> {
    let h = Harness::new("perf").await?;
    h.metrics.set("v1", 8000.0, 4.0, 0.0);
    let exp: Experiment = serde_json::from_value(json!({
        "apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
        "metadata": {"name": "perf"},
        "spec": {
            "kind": "performanceTest",
            "versions": [{"name": "svc", "labels": {"version": "v1"}}],
            "metrics": counter_metrics(), "ratios": ratios(),
            "criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.01}]},
            "duration": {"interval": "1s", "maxIterations": 3}
        }
    }))?;
    h.experiments().create(&PostParams::default(), &exp).await?;
    let exp = wait_for_phase(&h.experiments(), "perf", Phase::Completed).await?;
    let status = exp.status.expect("status");
    let decision = status.decision.expect("decision");
    assert_eq!(decision.action, Action::Promote, "{}", decision.reason);
    assert!(decision.reason.contains("meets all criteria"));
    assert_eq!(status.weights_summary.as_deref(), Some("svc=100"));
    let routes: Api<DynamicObject> =
        Api::namespaced_with(h.env.client.clone(), h.ns(), &http_route_resource());
    assert!(routes.list(&ListParams::default()).await?.items.is_empty());
    h.finish().await
}

#[tokio::test]
async fn pause_resume_and_terminate_with_a_manual_split_act_as_documented() -> Result<()> {
    let h = Harness::new("overrides").await?;
    // Too little data to decide either way: the experiment keeps iterating.
    let api = h.undecided_canary("manual").await?;
    wait_for_iterations(&api, "manual", 1).await?;

    merge_spec(
        &api,
        "manual",
        json!({"manualOverride": {"action": "pause", "split": [70, 30]}}),
    )
    .await?;
    let paused = wait_for_phase(&api, "manual", Phase::Paused).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [70, 30]);
    let held = paused.status.expect("status").completed_iterations;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = api.get("manual").await?.status.expect("status");
    assert_eq!(
        still.completed_iterations, held,
        "no iteration runs while paused"
    );
    assert_eq!(still.phase, Phase::Paused);

    merge_spec(
        &api,
        "manual",
        json!({"manualOverride": {"action": "resume"}}),
    )
    .await?;
    wait_for_iterations(&api, "manual", held + 1).await?;

    merge_spec(
        &api,
        "manual",
        json!({"manualOverride": {"action": "terminate", "split": [90, 10]}}),
    )
    .await?;
    let ended = wait_for_phase(&api, "manual", Phase::Aborted).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [90, 10]);
    let completed = ended
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Completed")
        .expect("Completed");
    assert_eq!(completed.reason, "Terminated");
    h.finish().await
}

#[tokio::test]
async fn a_killed_controller_resumes_at_the_right_iteration() -> Result<()> {
    let mut h = Harness::new("restart").await?;
    let api = h.undecided_canary("restart").await?;
    let before = wait_for_iterations(&api, "restart", 2).await?;
    h.controller.abort();
    let _ = (&mut h.controller).await;
    let stopped_at = api
        .get("restart")
        .await?
        .status
        .expect("status")
        .completed_iterations;
    assert!(stopped_at >= before.status.expect("status").completed_iterations);
    // Several intervals pass with no controller at all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.get("restart")
            .await?
            .status
            .expect("status")
            .completed_iterations,
        stopped_at
    );

    (h.controller, h.telemetry) =
        start_controller(&h.env.client, h.ns(), h.analytics, h.metrics.clone()).await?;
    let after = wait_for_iterations(&api, "restart", stopped_at + 2).await?;
    let history: Vec<u32> = after
        .status
        .expect("status")
        .history
        .iter()
        .map(|r| r.iteration)
        .collect();
    let expected: Vec<u32> = (history[0]..history[0] + history.len() as u32).collect();
    assert_eq!(history, expected, "iterations run once each, none skipped");
    h.finish().await
}

/// Sets the weights of HTTPRoute `reviews` as a person would (a merge patch, not iter8's
/// field manager).
async fn edit_by_hand(routes: &Api<DynamicObject>, [v1, v2]: [u32; 2]) -> Result<()> {
    routes
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"rules": [{
                "backendRefs": [{"name": "reviews-v1", "port": 9080, "weight": v1},
                                {"name": "reviews-v2", "port": 9080, "weight": v2}]
            }]}})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_route_edited_by_hand_is_reported_and_restored() -> Result<()> {
    let h = Harness::new("drift").await?;
    let api = h.undecided_canary("drift").await?;
    wait_for_iterations(&api, "drift", 1).await?;
    // Pause so the split stays put, then edit the route as a person would.
    merge_spec(
        &api,
        "drift",
        json!({"manualOverride": {"action": "pause", "split": [80, 20]}}),
    )
    .await?;
    wait_for_phase(&api, "drift", Phase::Paused).await?;
    let routes: Api<DynamicObject> =
        Api::namespaced_with(h.env.client.clone(), h.ns(), &http_route_resource());
    edit_by_hand(&routes, [10, 90]).await?;
    wait_for(
        "the route to be restored",
        Duration::from_secs(30),
        async || {
            let w = reviews_split(&h.env.client, h.ns()).await?;
            Ok((w == [80, 20]).then_some(()))
        },
    )
    .await?;
    // Published once the route is put back and the status recorded: just after the route.
    wait_for_warning(&h.env.client, h.ns(), "drift", "TrafficDrift").await?;
    let drift = events_for(&h.env.client, h.ns(), "drift")
        .await?
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("TrafficDrift"))
        .expect("a TrafficDrift event");
    assert!(
        drift
            .note
            .unwrap_or_default()
            .contains("was changed outside the experiment")
    );
    let paused = api.get("drift").await?;
    assert_eq!(
        condition_reason(&paused, "TrafficApplied").as_deref(),
        Some("DriftCorrected")
    );

    // The same edit while the experiment runs: corrected between iterations, to the split
    // the experiment recorded, and the iterations go on one by one.
    merge_spec(
        &api,
        "drift",
        json!({"manualOverride": {"action": "resume"}}),
    )
    .await?;
    let running = wait_for_iterations(
        &api,
        "drift",
        paused.status.expect("status").completed_iterations + 1,
    )
    .await?;
    let at = running.status.expect("status").completed_iterations;
    edit_by_hand(&routes, [1, 99]).await?;
    wait_for(
        "a second TrafficDrift event",
        Duration::from_secs(30),
        async || {
            Ok(
                (event_count(&h.env.client, h.ns(), "drift", "TrafficDrift").await? >= 2)
                    .then_some(()),
            )
        },
    )
    .await?;
    let after = wait_for_iterations(&api, "drift", at + 2).await?;
    assert_eq!(
        reviews_split(&h.env.client, h.ns()).await?.to_vec(),
        recorded_split(&after),
        "the route carries the experiment's split, not the hand edit"
    );
    h.controller.abort();
    let end = api.get("drift").await?;
    assert_recorded_and_assessed_once(&end, &h.assessed.iterations())?;
    h.finish().await
}

#[tokio::test]
async fn deleting_a_running_experiment_puts_traffic_back_on_the_baseline() -> Result<()> {
    let h = Harness::new("delete").await?;
    let api = h.undecided_canary("gone").await?;
    merge_spec(
        &api,
        "gone",
        json!({"manualOverride": {"action": "pause", "split": [50, 50]}}),
    )
    .await?;
    wait_for_phase(&api, "gone", Phase::Paused).await?;
    api.delete("gone", &Default::default()).await?;
    wait_for(
        "the experiment to be gone",
        Duration::from_secs(30),
        async || Ok(api.get_opt("gone").await?.is_none().then_some(())),
    )
    .await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [100, 0]);
    h.finish().await
}

#[tokio::test]
async fn invalid_experiments_are_rejected_at_admission_naming_the_field() -> Result<()> {
    let env = TestEnv::new("invalid-experiments").await?;
    install_crds(&env.client).await?;
    // Raw JSON, so that specs the Rust types cannot even express reach the API server too.
    let resource = ApiResource::erase::<Experiment>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), env.namespace.name(), &resource);
    // A valid canary with one edit.
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut spec = json!({
            "kind": "canary",
            "versions": [{"name": "a", "backend": {"name": "a"}}, {"name": "b", "backend": {"name": "b"}}],
            "router": {"httpRoute": {"name": "r"}},
            "criteria": {"objectives": [{"metric": "m", "upperLimit": 1.0}],
                         "rewards": [{"metric": "m", "preferredDirection": "higher"}]}
        });
        edit(&mut spec);
        spec
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "three-versions",
            edited(&|s| {
                s["versions"]
                    .as_array_mut()
                    .expect("list")
                    .push(json!({"name": "c", "backend": {"name": "c"}}));
            }),
            "spec.versions: Invalid value: a canary experiment needs exactly two versions (a baseline and a candidate)",
        ),
        (
            "duplicate-names",
            edited(&|s| s["versions"][1]["name"] = json!("a")),
            "version names must be unique",
        ),
        (
            "two-routers",
            edited(&|s| s["router"]["virtualService"] = json!({"name": "r"})),
            "set exactly one of httpRoute or virtualService",
        ),
        (
            "no-router",
            edited(&|s| {
                s.as_object_mut().expect("object").remove("router");
            }),
            "spec.router: Invalid value: experiments that shift traffic need a router",
        ),
        (
            "ab-without-reward",
            edited(&|s| {
                s["kind"] = json!("ab");
                s["criteria"] = json!({});
            }),
            "an A/B experiment picks its winner by a reward; name at least one",
        ),
        (
            "min-above-max",
            edited(&|s| s["duration"] = json!({"minIterations": 9, "maxIterations": 3})),
            "minIterations must not exceed maxIterations",
        ),
        (
            "bad-interval",
            edited(&|s| s["duration"] = json!({"interval": "soon"})),
            "spec.duration.interval",
        ),
        (
            "unknown-kind",
            edited(&|s| s["kind"] = json!("bluegreen")),
            "spec.kind: Unsupported value: \"bluegreen\"",
        ),
        (
            "canary-without-criteria",
            edited(&|s| {
                s["criteria"] =
                    json!({"rewards": [{"metric": "m", "preferredDirection": "higher"}]})
            }),
            "a canary experiment passes by meeting its criteria",
        ),
        (
            "weight-too-high",
            edited(&|s| s["strategy"] = json!({"maxCandidateWeight": 150})),
            "spec.strategy.maxCandidateWeight",
        ),
        (
            "perf-two-versions",
            edited(&|s| s["kind"] = json!("performanceTest")),
            "spec.versions: Invalid value: a performance test experiment needs exactly one version",
        ),
        (
            "abn-one-version",
            edited(&|s| {
                s["kind"] = json!("abn");
                s["versions"].as_array_mut().expect("list").pop();
            }),
            "spec.versions: Invalid value: an A/B/n experiment needs at least two versions",
        ),
        (
            "no-versions",
            edited(&|s| s["versions"] = json!([])),
            "should have at least 1 items",
        ),
        (
            "split-wrong-size",
            edited(&|s| s["strategy"] = json!({"algorithm": "fixed_split", "split": [100]})),
            "strategy.split needs one weight per version",
        ),
        (
            "split-not-100",
            edited(&|s| s["strategy"] = json!({"algorithm": "fixed_split", "split": [50, 40]})),
            "strategy.split must sum to 100",
        ),
        (
            "version-without-backend",
            edited(&|s| {
                s["versions"][1]
                    .as_object_mut()
                    .expect("object")
                    .remove("backend");
            }),
            "with a router, every version needs the backend it maps to",
        ),
        (
            "override-split-wrong-size",
            edited(&|s| s["manualOverride"] = json!({"action": "terminate", "split": [100]})),
            "manualOverride.split needs one weight per version",
        ),
        (
            "two-version-algorithm-with-three-versions",
            edited(&|s| {
                s["kind"] = json!("abn");
                s["versions"]
                    .as_array_mut()
                    .expect("list")
                    .push(json!({"name": "c", "backend": {"name": "c"}}));
                s["strategy"] = json!({"algorithm": "check_and_increment"});
            }),
            "spec.versions: Invalid value: check_and_increment needs exactly two versions",
        ),
        (
            "split-for-an-algorithm-that-computes-its-own",
            edited(&|s| s["strategy"] = json!({"algorithm": "safe", "split": [50, 50]})),
            "spec.strategy.split: Invalid value: safe computes its own split and takes none",
        ),
        (
            "fixed-split-without-split",
            edited(&|s| s["strategy"] = json!({"algorithm": "fixed_split"})),
            "spec.strategy.split: Invalid value: fixed_split needs the split",
        ),
        (
            "duplicate-metric-names",
            edited(&|s| {
                s["metrics"] = json!([
                    {"name": "m", "metric": {"name": "errors"}},
                    {"name": "m", "metric": {"name": "requests"}}
                ]);
            }),
            "spec.metrics[1]: Duplicate value: {\"name\":\"m\"}",
        ),
        (
            "mann-whitney-too-short-to-judge",
            edited(&|s| {
                s["strategy"] = json!({"algorithm": "mann_whitney"});
                s["duration"] = json!({"minIterations": 1, "maxIterations": 7});
            }),
            "spec.duration.maxIterations: Invalid value: mann_whitney needs at least 8 iterations",
        ),
        (
            "mann-whitney-lifetime-beyond-the-kept-intervals",
            edited(&|s| {
                s["strategy"] = json!({"algorithm": "mann_whitney"});
                s["duration"] = json!({"minIterations": 64, "maxIterations": 70});
            }),
            "spec.duration.minIterations: Invalid value: mann_whitney judges the last 32 intervals",
        ),
        (
            "unknown-algorithm",
            edited(&|s| s["strategy"] = json!({"algorithm": "thompson"})),
            "spec.strategy.algorithm: Unsupported value: \"thompson\"",
        ),
        (
            "zero-min-iterations",
            edited(&|s| s["duration"] = json!({"minIterations": 0})),
            "spec.duration.minIterations",
        ),
        (
            "too-many-iterations",
            edited(&|s| s["duration"] = json!({"maxIterations": 10001})),
            "spec.duration.maxIterations",
        ),
        (
            "zero-failures-allowed",
            edited(&|s| s["failurePolicy"] = json!({"maxConsecutiveFailures": 0})),
            "spec.failurePolicy.maxConsecutiveFailures",
        ),
        (
            "negative-interval",
            edited(&|s| s["duration"] = json!({"interval": "-5s"})),
            "spec.duration.interval",
        ),
        (
            "long-version-name",
            edited(&|s| s["versions"][1]["name"] = json!("v".repeat(64))),
            "spec.versions[1].name",
        ),
    ];
    for (name, spec, expected) in cases {
        let exp = json!({"apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
                         "metadata": {"name": name}, "spec": spec});
        let exp: DynamicObject = serde_json::from_value(exp)?;
        let err = api
            .create(&PostParams::default(), &exp)
            .await
            .err()
            .with_context(|| format!("{name} was accepted"))?;
        let message = match err {
            kube::Error::Api(e) => {
                assert_eq!(e.code, 422, "{name}: {}", e.message);
                e.message
            }
            other => bail!("{name}: unexpected error {other}"),
        };
        assert!(message.contains(expected), "{name}: {message}");
    }
    // A Metric names exactly one provider.
    let metrics: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        env.namespace.name(),
        &ApiResource::erase::<Metric>(&()),
    );
    let prometheus = json!({"query": "sum(up)"});
    let http = json!({"url": "http://m.example/q", "jsonPath": "$.v"});
    for (name, spec) in [
        (
            "two-providers",
            json!({"type": "counter", "prometheus": prometheus, "http": http}),
        ),
        ("no-provider", json!({"type": "counter"})),
    ] {
        let metric: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
            "metadata": {"name": name}, "spec": spec}))?;
        match metrics.create(&PostParams::default(), &metric).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{name}: {}", e.message);
                assert!(
                    e.message.contains("set exactly one of prometheus or http"),
                    "{name}: {}",
                    e.message
                );
            }
            other => bail!("{name}: expected a refusal, got {other:?}"),
        }
    }
    env.cleanup().await
}

#[tokio::test]
async fn a_standby_replica_takes_over_when_the_leader_dies() -> Result<()> {
    let (env, metrics, assessed) = replicas_fixture("failover").await?;
    let ns = env.namespace.name().to_string();
    let analytics = assessed.addr;
    let replica = |identity: &'static str| {
        let (client, ns, metrics) = (env.client.clone(), ns.clone(), metrics.clone());
        async move {
            let telemetry = Telemetry::new()?;
            let ctx = Arc::new(Context {
                client: client.clone(),
                router: Arc::new(KubeRouter::new(client.clone())),
                analytics: Arc::new(AnalyticsClient::new(test_client_config(
                    &[&format!("http://{analytics}")],
                    Duration::from_secs(5),
                )?)?),
                metrics,
                settings: Settings {
                    analytics_url: format!("http://{analytics}"),
                    retry_after: Duration::from_millis(500),
                    shared_metric_namespaces: Vec::new(),
                    gate_webhooks: Default::default(),
                    max_concurrent_reconciles: iter8_controller::DEFAULT_CONCURRENCY,
                    metric_backends: Default::default(),
                },
                telemetry: telemetry.clone(),
                recorder: Recorder::new(
                    client.clone(),
                    Reporter {
                        controller: "iter8-controller".into(),
                        instance: Some(identity.into()),
                    },
                ),
                superseded: Default::default(),
                notifier: Notifier::new(client.clone(), telemetry, NotifierConfig::default())?,
                caches: Default::default(),
            });
            let election = iter8_controller::leader::LeaderElection::new(
                client,
                &ns,
                "iter8-controller",
                identity,
                Duration::from_secs(3),
            );
            anyhow::Ok(tokio::spawn(async move {
                iter8_controller::run_elected(
                    ctx,
                    Some(&ns),
                    Some(election),
                    std::future::pending(),
                )
                .await;
            }))
        }
    };
    let a = replica("replica-a").await?;
    let b = replica("replica-b").await?;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &canary("failover", "reviews", 200)?)
        .await?;
    wait_for_iterations(&api, "failover", 2).await?;

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), &ns);
    let holder = |lease: k8s_openapi::api::coordination::v1::Lease| {
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let leader = holder(leases.get("iter8-controller").await?);
    let (dead, alive, standby) = match leader.as_str() {
        "replica-a" => (a, b, "replica-b"),
        "replica-b" => (b, a, "replica-a"),
        other => bail!("unexpected lease holder {other:?}"),
    };
    // Only the leader reconciled: every event so far comes from it.
    let instances: Vec<String> = events_for(&env.client, &ns, "failover")
        .await?
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert!(!instances.is_empty());
    assert!(instances.iter().all(|i| *i == leader), "{instances:?}");

    dead.abort();
    let stopped_at = api
        .get("failover")
        .await?
        .status
        .expect("status")
        .completed_iterations;
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(20),
        async || Ok((holder(leases.get("iter8-controller").await?) == standby).then_some(())),
    )
    .await?;
    let after = wait_for_iterations(&api, "failover", stopped_at + 2).await?;
    let history: Vec<u32> = after
        .status
        .expect("status")
        .history
        .iter()
        .map(|r| r.iteration)
        .collect();
    let expected: Vec<u32> = (history[0]..history[0] + history.len() as u32).collect();
    assert_eq!(
        history, expected,
        "iterations run once each, none skipped, across the failover"
    );
    let late: Vec<String> = events_for(&env.client, &ns, "failover")
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Iteration"))
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert!(late.iter().any(|i| i == standby), "{late:?}");
    // Each iteration was assessed once, except perhaps the one the leader was assessing when
    // it died (nothing recorded, so the standby decides it afresh).
    alive.abort();
    let _ = alive.await;
    let end = api.get("failover").await?;
    let mut once = assessed.iterations();
    let repeated: Vec<u32> = once
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(repeated.len() <= 1, "{once:?}");
    once.dedup();
    assert_recorded_and_assessed_once(&end, &once)?;
    env.cleanup().await
}

#[tokio::test]
async fn a_controller_killed_at_any_stage_of_an_iteration_resumes_without_repeating_it()
-> Result<()> {
    for stage in [
        Stage::MetricsCollected,
        Stage::AnalyticsAnswered,
        Stage::DecisionRecorded,
        Stage::TrafficApplied,
    ] {
        let env = TestEnv::new(&format!("crash-{stage:?}")).await?;
        install_crds(&env.client).await?;
        let ns = env.namespace.name().to_string();
        create_metrics(&env.client, &ns).await?;
        create_http_route(&env.client, &ns, "reviews").await?;
        let metrics = ScriptedMetrics::default();
        metrics.set("v1", 400.0, 3.0, 0.0);
        metrics.set("v2", 400.0, 3.0, 0.0);
        let assessed = AssessmentLog::start(start_analytics().await?).await?;
        let analytics = assessed.addr;
        let gate = Arc::new(StageGate::new(stage, 2));
        let url = format!("http://{analytics}");
        let (crashing, _) = start_controller_with(
            &env.client,
            &ns,
            &url,
            metrics.clone(),
            Duration::from_secs(5),
            Some(gate.clone()),
        )
        .await?;
        let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
        api.create(&PostParams::default(), &canary("crash", "reviews", 200)?)
            .await?;
        tokio::time::timeout(Duration::from_secs(30), gate.reached.notified())
            .await
            .with_context(|| format!("{stage:?} was never reached"))?;
        crashing.abort();
        let _ = crashing.await;
        let at_crash = api.get("crash").await?.status.expect("status");
        assert_eq!(at_crash.completed_iterations, 1, "{stage:?}");
        let pending = at_crash.pending.clone();
        match stage {
            Stage::MetricsCollected | Stage::AnalyticsAnswered => {
                assert!(pending.is_none(), "{stage:?}: nothing recorded yet")
            }
            Stage::DecisionRecorded | Stage::TrafficApplied => {
                assert_eq!(pending.as_ref().map(|p| p.iteration), Some(2), "{stage:?}")
            }
        }

        let (restarted, _) = start_controller(&env.client, &ns, analytics, metrics).await?;
        wait_for_iterations(&api, "crash", 4).await?;
        restarted.abort();
        let _ = restarted.await;
        let after = api.get("crash").await?;
        let status = after.status.clone().expect("status");
        // Iteration 2 is assessed again only when the crash came after its assessment and
        // before its decision was recorded: nothing durable said what had been decided.
        let reassessed = u32::from(stage == Stage::AnalyticsAnswered);
        let mut once: Vec<u32> = assessed.iterations();
        if reassessed == 1 {
            assert_eq!(once[..3], [1, 2, 2], "{stage:?}: {once:?}");
            once.remove(2);
        }
        assert_recorded_and_assessed_once(&after, &once)?;
        let history: Vec<u32> = status.history.iter().map(|r| r.iteration).collect();
        assert_eq!(
            history[..4],
            [1, 2, 3, 4],
            "{stage:?}: each iteration once, in order"
        );
        if let Some(p) = pending {
            // The decision recorded before the crash is the one applied: not decided again.
            assert_eq!(status.history[1].weights, p.weights, "{stage:?}");
        }
        let route: Vec<u64> = route_weights(&env.client, &ns, "reviews")
            .await?
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        let recorded = recorded_split(&api.get("crash").await?);
        assert!(!recorded.is_empty(), "{stage:?}: a split is recorded");
        assert_eq!(
            route, recorded,
            "{stage:?}: the router carries the recorded split"
        );
        env.cleanup().await?;
    }
    Ok(())
}
