//! What the controller does when its dependencies fail: the split is held, the failure is
//! reported (condition and Event), nothing is promoted, and after `failurePolicy`'s limit the
//! experiment rolls back or pauses. Real API server, real analytics server; the broken
//! analytics answers (500, garbage, too slow) come from a small misbehaving HTTP server.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use iter8_api::Action;
use iter8_crd::{Experiment, Phase};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use common::*;

/// How a broken analytics service answers.
#[derive(Clone, Copy)]
enum Broken {
    ServerError,
    Garbage,
    TooSlow,
}

/// A broken analytics service; the second value lists the iteration of every call it got.
async fn start_broken_analytics(how: Broken) -> Result<(SocketAddr, Arc<Mutex<Vec<u64>>>)> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let handler = move |body: axum::body::Bytes| {
        let seen = seen.clone();
        async move {
            let iteration = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["iteration"].as_u64())
                .unwrap_or_default();
            seen.lock().expect("not poisoned").push(iteration);
            match how {
                Broken::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
                Broken::Garbage => (StatusCode::OK, "{\"surprise\": true").into_response(),
                Broken::TooSlow => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (StatusCode::OK, "{}").into_response()
                }
            }
        }
    };
    let app = Router::new().route("/v1/assessments", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, app).into_future());
    Ok((addr, calls))
}

/// Every call asked about the same iteration (the one held), `per_attempt` calls (the
/// first and its retries) for each of at least `attempts` attempts.
fn assert_same_iteration_retried(calls: &Mutex<Vec<u64>>, attempts: usize, per_attempt: usize) {
    let calls = calls.lock().expect("not poisoned").clone();
    assert!(calls.len() >= attempts * per_attempt, "{calls:?}");
    assert!(calls.iter().all(|&i| i == calls[0]), "{calls:?}");
}

/// A loopback address nothing listens on.
async fn dead_address() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

fn condition(exp: &Experiment, type_: &str) -> Option<(String, String)> {
    exp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Runs a canary until it has moved traffic, then points it at `analytics` (through
/// `spec.analytics.url`) with a failure policy of `limit` and `action`; returns the split it
/// had when the analytics broke.
async fn break_analytics_mid_run(
    h: &Harness,
    name: &str,
    analytics: SocketAddr,
    limit: u32,
    action: &str,
) -> Result<Vec<(String, u64)>> {
    let api = h.undecided_canary(name).await?;
    wait_for_iterations(&api, name, 1).await?;
    merge_spec(
        &api,
        name,
        json!({"manualOverride": {"action": "pause", "split": [60, 40]}}),
    )
    .await?;
    wait_for_phase(&api, name, Phase::Paused).await?;
    let before = route_weights(&h.env.client, h.ns(), "reviews").await?;
    merge_spec(
        &api,
        name,
        json!({
            "analytics": {"url": format!("http://{analytics}")},
            "failurePolicy": {"maxConsecutiveFailures": limit, "action": action},
            "manualOverride": {"action": "resume"}
        }),
    )
    .await?;
    Ok(before)
}

/// The three proofs for a failing analytics service: the split it had when the analytics
/// broke is held (no iteration completes) until the failure policy rolls everything back to
/// the baseline; nothing is promoted; each iteration ran once. And what the user sees:
/// `AnalyticsAvailable=False` with `reason`, `Completed` with `FailurePolicy`, and Warning
/// Events of both reasons.
async fn assert_held_then_rolled_back(
    h: &Harness,
    name: &str,
    reason: &str,
    before: &[(String, u64)],
) -> Result<()> {
    let (held, failed) = held_until_phase(&h.env.client, h.ns(), name, Phase::Failed).await?;
    assert_eq!(held, [60, 40], "{before:?}");
    let status = failed.status.clone().expect("status");
    assert!(status.consecutive_failures >= failed.spec.failure_policy.max_consecutive_failures);
    assert_eq!(
        condition(&failed, "AnalyticsAvailable"),
        Some(("False".into(), reason.into()))
    );
    assert_ne!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Promote)
    );
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [100, 0]);
    assert_eq!(
        condition_reason(&failed, "Completed").as_deref(),
        Some("FailurePolicy")
    );
    let warned = wait_for_warning(&h.env.client, h.ns(), name, "FailurePolicy").await?;
    assert!(
        warned.iter().any(|w| w == reason),
        "a {reason} event: {warned:?}"
    );
    assert_each_iteration_once(&h.env.client, h.ns(), &failed, &h.assessed.iterations()).await
}

/// The analytics timeout of the harnesses that need no other.
const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_analytics_url_nobody_allowed_is_never_called() -> Result<()> {
    // A working service, but not one the controller was told it may call (or send its token to).
    let (foreign, calls) = start_broken_analytics(Broken::Garbage).await?;
    let h = Harness::new("fault-analytics-not-allowed").await?;
    let before = break_analytics_mid_run(&h, "foreign", foreign, 2, "rollback").await?;
    assert_held_then_rolled_back(&h, "foreign", "AnalyticsNotAllowed", &before).await?;
    assert!(
        calls.lock().expect("not poisoned").is_empty(),
        "no request reached the address nobody allowed"
    );
    h.finish().await
}

#[tokio::test]
async fn analytics_down_holds_the_split_then_rolls_back() -> Result<()> {
    let dead = dead_address().await?;
    let h = Harness::allowing("fault-analytics-down", TIMEOUT, &[dead]).await?;
    let before = break_analytics_mid_run(&h, "down", dead, 4, "rollback").await?;
    assert_held_then_rolled_back(&h, "down", "AnalyticsUnavailable", &before).await?;
    h.finish().await
}

#[tokio::test]
async fn analytics_answering_500_is_retried_then_rolled_back() -> Result<()> {
    let (broken, calls) = start_broken_analytics(Broken::ServerError).await?;
    let h = Harness::allowing("fault-analytics-500", TIMEOUT, &[broken]).await?;
    let before = break_analytics_mid_run(&h, "e500", broken, 3, "rollback").await?;
    assert_held_then_rolled_back(&h, "e500", "AnalyticsUnavailable", &before).await?;
    // Each of the 3 attempts was retried once by the client (with backoff) before it failed.
    assert_same_iteration_retried(&calls, 3, 2);
    h.finish().await
}

#[tokio::test]
async fn analytics_answering_garbage_never_moves_traffic() -> Result<()> {
    let (broken, calls) = start_broken_analytics(Broken::Garbage).await?;
    let h = Harness::allowing("fault-analytics-garbage", TIMEOUT, &[broken]).await?;
    let before = break_analytics_mid_run(&h, "garbage", broken, 3, "rollback").await?;
    assert_held_then_rolled_back(&h, "garbage", "AnalyticsGarbage", &before).await?;
    // Garbage is not retried within an attempt: the same answer would come back.
    assert_same_iteration_retried(&calls, 3, 1);
    h.finish().await
}

#[tokio::test]
async fn analytics_slower_than_the_timeout_counts_as_down() -> Result<()> {
    // A 1 s analytics timeout against a service that takes 5 s.
    let (slow, calls) = start_broken_analytics(Broken::TooSlow).await?;
    let h = Harness::allowing("fault-analytics-slow", Duration::from_secs(1), &[slow]).await?;
    let before = break_analytics_mid_run(&h, "slow", slow, 2, "rollback").await?;
    assert_held_then_rolled_back(&h, "slow", "AnalyticsUnavailable", &before).await?;
    assert_same_iteration_retried(&calls, 2, 2);
    h.finish().await
}

#[tokio::test]
async fn the_pause_policy_holds_until_the_spec_is_fixed() -> Result<()> {
    let dead = dead_address().await?;
    let h = Harness::allowing("fault-pause-policy", TIMEOUT, &[dead]).await?;
    break_analytics_mid_run(&h, "pausing", dead, 2, "pause").await?;
    let api = h.experiments();
    let before = api.get("pausing").await?.status.expect("status");
    let paused = wait_for(
        "the failure policy to pause",
        Duration::from_secs(30),
        async || {
            let exp = api.get("pausing").await?;
            Ok(
                (condition(&exp, "Ready") == Some(("False".into(), "TooManyFailures".into())))
                    .then_some(exp),
            )
        },
    )
    .await?;
    let status = paused.status.expect("status");
    assert_eq!(status.phase, Phase::Paused);
    let held_at = status.completed_iterations;
    assert_eq!(
        held_at, before.completed_iterations,
        "no iteration while failing"
    );
    assert_ne!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Promote)
    );
    // Paused for good: no retries, no iteration, the split held, until the spec changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = api.get("pausing").await?.status.expect("status");
    assert_eq!(
        (
            still.phase,
            still.completed_iterations,
            still.consecutive_failures
        ),
        (Phase::Paused, held_at, status.consecutive_failures)
    );
    assert_eq!(
        reviews_split(&h.env.client, h.ns()).await?,
        [60, 40],
        "the split is held while paused"
    );
    let warned = wait_for_warning(&h.env.client, h.ns(), "pausing", "FailurePolicy").await?;
    assert!(
        warned.iter().any(|w| w == "AnalyticsUnavailable"),
        "{warned:?}"
    );
    // Pointing the experiment back at a working analytics service resumes it.
    merge_spec(
        &api,
        "pausing",
        json!({"analytics": {"url": format!("http://{}", h.analytics)}}),
    )
    .await?;
    let resumed = wait_for_iterations(&api, "pausing", held_at + 1).await?;
    assert_eq!(resumed.status.expect("status").consecutive_failures, 0);
    h.controller.abort();
    let stopped = api.get("pausing").await?;
    assert_each_iteration_once(&h.env.client, h.ns(), &stopped, &h.assessed.iterations()).await?;
    h.finish().await
}

#[tokio::test]
async fn metrics_backend_down_holds_and_never_promotes() -> Result<()> {
    let h = Harness::new("fault-metrics-down").await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    // Data that would promote the candidate at once, behind a backend that is down.
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    h.metrics.set_down(true);
    let api = h.experiments();
    let mut exp = canary("blind", "reviews", 10)?;
    // The outage is shorter than the failure policy's patience.
    exp.spec.failure_policy.max_consecutive_failures = 1000;
    api.create(&PostParams::default(), &exp).await?;
    let held = wait_for(
        "MetricsAvailable=False",
        Duration::from_secs(30),
        async || {
            let exp = api.get("blind").await?;
            Ok((condition(&exp, "MetricsAvailable")
                == Some(("False".into(), "BackendUnavailable".into())))
            .then_some(exp))
        },
    )
    .await?;
    // Held through several retries: no iteration, no decision, no assessment, the split
    // unchanged.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = api.get("blind").await?.status.expect("status");
    assert!(
        status.consecutive_failures >= 3,
        "{}",
        status.consecutive_failures
    );
    assert_eq!(status.completed_iterations, 0);
    assert!(status.decision.is_none());
    assert!(h.assessed.iterations().is_empty());
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [100, 0]);
    let warned = warning_reasons(&h.env.client, h.ns(), "blind").await?;
    assert!(
        warned.iter().any(|w| w == "BackendUnavailable"),
        "{warned:?}"
    );
    assert!(held.status.is_some());
    // The backend comes back: the experiment goes on and promotes on real data.
    h.metrics.set_down(false);
    let done = wait_for_phase(&api, "blind", Phase::Completed).await?;
    assert_eq!(
        done.status
            .as_ref()
            .and_then(|s| s.decision.as_ref())
            .map(|d| d.action),
        Some(Action::Promote)
    );
    assert_each_iteration_once(&h.env.client, h.ns(), &done, &h.assessed.iterations()).await?;
    h.finish().await
}

#[tokio::test]
async fn a_deleted_route_is_reported_and_ends_the_experiment_by_policy() -> Result<()> {
    let h = Harness::new("fault-route-deleted").await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    h.metrics.set("v1", 400.0, 3.0, 0.0);
    h.metrics.set("v2", 400.0, 3.0, 0.0);
    let api = h.experiments();
    let mut exp = canary("orphan", "reviews", 200)?;
    exp.spec.failure_policy.max_consecutive_failures = 3;
    api.create(&PostParams::default(), &exp).await?;
    wait_for_iterations(&api, "orphan", 1).await?;
    let routes: Api<DynamicObject> =
        Api::namespaced_with(h.env.client.clone(), h.ns(), &http_route_resource());
    routes.delete("reviews", &Default::default()).await?;
    let reported = wait_for(
        "TrafficApplied=False, reason RouterNotFound",
        Duration::from_secs(30),
        async || {
            let exp = api.get("orphan").await?;
            Ok((condition(&exp, "TrafficApplied")
                == Some(("False".into(), "RouterNotFound".into())))
            .then_some(exp))
        },
    )
    .await?;
    let failed = wait_for_phase(&api, "orphan", Phase::Failed).await?;
    assert_ended_by_failure_policy(&failed, &reported);
    let warned = wait_for_warning(&h.env.client, h.ns(), "orphan", "FailurePolicy").await?;
    assert!(warned.iter().any(|w| w == "RouterNotFound"), "{warned:?}");
    assert_each_iteration_once(&h.env.client, h.ns(), &failed, &h.assessed.iterations()).await?;
    h.finish().await
}

#[tokio::test]
async fn a_metric_edited_mid_run_pauses_the_experiment_until_it_is_restored() -> Result<()> {
    let h = Harness::new("fault-metric-edited").await?;
    let api = h.undecided_canary("edited").await?;
    wait_for_iterations(&api, "edited", 2).await?;
    let metrics: Api<iter8_crd::Metric> = Api::namespaced(h.env.client.clone(), h.ns());
    let original = metrics.get("errors").await?.spec;
    let recorded = api.get("edited").await?.status.expect("status");
    assert_eq!(
        recorded.metric_digests.keys().collect::<Vec<_>>(),
        ["conversions", "errors", "requests"],
        "each Metric's digest is recorded when first read"
    );
    // Someone makes `errors` count something else while the experiment runs.
    let patch = json!({"spec": {"prometheus": {"query": "sum(increase(http_4xx_total{ {{labels}} }[{{elapsed}}s]))"}}});
    metrics
        .patch("errors", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let paused = wait_for(
        "Ready=False, reason MetricChanged",
        Duration::from_secs(30),
        async || {
            let exp = api.get("edited").await?;
            Ok(
                (condition(&exp, "Ready") == Some(("False".into(), "MetricChanged".into())))
                    .then_some(exp),
            )
        },
    )
    .await?;
    let status = paused.status.clone().expect("status");
    assert_eq!(status.phase, Phase::Paused);
    assert_eq!(
        condition(&paused, "MetricsAvailable"),
        Some(("False".into(), "MetricChanged".into()))
    );
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("Metric {}/errors (`errors`) changed", h.ns())),
        "{message}"
    );
    assert!(message.contains("iter8 resume"), "{message}");
    let held_at = status.completed_iterations;
    let held = recorded_split(&paused);
    // Held: no iteration, no assessment on the new definition, the route's split untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = api.get("edited").await?;
    let still_status = still.status.clone().expect("status");
    assert_eq!(
        (still_status.phase, still_status.completed_iterations),
        (Phase::Paused, held_at)
    );
    assert!(
        h.assessed.iterations().iter().all(|&i| i <= held_at),
        "nothing assessed after the edit: {:?}",
        h.assessed.iterations()
    );
    assert_eq!(
        reviews_split(&h.env.client, h.ns()).await?.to_vec(),
        held,
        "the route keeps the split in force when the Metric changed"
    );
    wait_for_warning(&h.env.client, h.ns(), "edited", "MetricChanged").await?;
    // Restored to what the experiment first read, and resumed: it goes on.
    metrics
        .patch(
            "errors",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": original})),
        )
        .await?;
    merge_spec(
        &api,
        "edited",
        json!({"manualOverride": {"action": "resume"}}),
    )
    .await?;
    let resumed = wait_for_iterations(&api, "edited", held_at + 1).await?;
    assert_eq!(
        resumed.status.expect("status").metric_digests,
        recorded.metric_digests
    );
    h.finish().await
}
