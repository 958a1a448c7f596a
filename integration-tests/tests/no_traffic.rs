//! An experiment created before load starts (review M6): while no version has data, for a
//! mean criterion too, the iterations run with the values absent, nothing is counted as a
//! failure and the baseline keeps its traffic; once load appears, the experiment decides. It is also the
//! integration test with a criterion on a mean metric through the controller (review m8).

mod common;

use anyhow::{Context as _, Result};
use iter8_api::Action;
use iter8_crd::{Experiment, Metric, Phase};
use kube::api::{Api, PostParams};
use serde_json::json;

use common::*;

#[tokio::test]
async fn an_experiment_created_before_load_keeps_running_and_decides_when_load_appears()
-> Result<()> {
    let h = Harness::new("no-traffic").await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    let latency: Metric = serde_json::from_value(json!({
        "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
        "metadata": {"name": "latency"},
        "spec": {"type": "mean",
                 "prometheus": {"sumQuery": "sum(latency_sum{ {{labels}} })",
                                "countQuery": "sum(latency_count{ {{labels}} })"}}
    }))?;
    Api::<Metric>::namespaced(h.env.client.clone(), h.ns())
        .create(&PostParams::default(), &latency)
        .await?;
    let mut exp = serde_json::to_value(canary("quiet", "reviews", 40)?)?;
    exp["spec"]["metrics"]
        .as_array_mut()
        .context("metrics")?
        .push(json!({"name": "latency", "metric": {"name": "latency"}}));
    exp["spec"]["criteria"]["objectives"] = json!([
        {"metric": "error-rate", "upperLimit": 0.01},
        {"metric": "latency", "upperLimit": 500}
    ]);
    let api = h.experiments();
    api.create(
        &PostParams::default(),
        &serde_json::from_value::<Experiment>(exp)?,
    )
    .await?;

    // No load: no version has data for any metric. Iterations go on with the values absent.
    let quiet = wait_for_iterations(&api, "quiet", 3).await?;
    let status = quiet.status.clone().context("status")?;
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(
        status.consecutive_failures, 0,
        "absent data is not a failure"
    );
    assert_eq!(
        condition_reason(&quiet, "MetricsAvailable").as_deref(),
        Some("NoData")
    );
    assert_eq!(
        condition_reason(&quiet, "AnalyticsAvailable").as_deref(),
        Some("Assessed")
    );
    // Nothing is decided about a version without data: the candidate is only offered a small
    // exploration share (so that data can appear), the baseline keeps the rest.
    let split = reviews_split(&h.env.client, h.ns()).await?;
    assert!(split[0] >= 90 && split[1] <= 10, "{split:?}");

    // Load appears: a good candidate is promoted.
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    h.metrics.set_mean_latency("v1", 5000.0, 120.0);
    h.metrics.set_mean_latency("v2", 5000.0, 110.0);
    let done = wait_for_phase(&api, "quiet", Phase::Completed).await?;
    let decision = done.status.as_ref().and_then(|s| s.decision.clone());
    assert_eq!(decision.map(|d| d.action), Some(Action::Promote));
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [0, 100]);
    h.finish().await
}
