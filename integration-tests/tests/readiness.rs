//! Versions ready before traffic moves, on a real kube-apiserver: the controller reads each
//! version's Service and Deployment before the start and before each weight increase. There
//! is no kube-controller-manager, so the test reports the Deployments' status itself, through
//! the status subresource, as the deployment controller would.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use iter8_api::Action;
use iter8_crd::{Experiment, Phase};
use iter8_integration_tests::create_service;
use iter8_integration_tests::workloads::{create_deployment, report_deployment};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use common::*;

/// The `VersionsReady` condition as (status, reason, message).
fn versions_ready(exp: &Experiment) -> Option<(String, String, String)> {
    exp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "VersionsReady")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `VersionsReady` is False with `reason`.
async fn wait_not_ready(api: &Api<Experiment>, name: &str, reason: &str) -> Result<Experiment> {
    let waited = wait_for(
        &format!("{name}: VersionsReady=False {reason}"),
        Duration::from_secs(30),
        async || {
            let exp = api.get(name).await?;
            let waiting =
                versions_ready(&exp).is_some_and(|(status, r, _)| status == "False" && r == reason);
            Ok(waiting.then_some(exp))
        },
    )
    .await;
    match waited {
        Ok(exp) => Ok(exp),
        Err(e) => {
            let status = api.get(name).await?.status;
            Err(e.context(format!("status: {status:?}")))
        }
    }
}

#[tokio::test]
async fn traffic_waits_for_each_versions_service_and_deployment_then_moves() -> Result<()> {
    let h = Harness::new("readiness").await?;
    let (client, ns) = (h.env.client.clone(), h.ns().to_string());
    create_http_route(&client, &ns, "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    // The candidate's Service is not there yet; its Deployment is not Available.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .delete("reviews-v2", &DeleteParams::default())
        .await?;
    for name in ["reviews-v1", "reviews-v2"] {
        create_deployment(&client, &ns, name).await?;
    }
    report_deployment(&client, &ns, "reviews-v1", true).await?;
    let mut exp = serde_json::to_value(canary("ready", "reviews", 12)?)?;
    exp["spec"]["versions"][0]["workload"] = json!({"name": "reviews-v1"});
    exp["spec"]["versions"][1]["workload"] = json!({"kind": "Deployment", "name": "reviews-v2"});
    // Enough iterations before a promotion is allowed to see a held increase first.
    exp["spec"]["duration"]["minIterations"] = json!(6);
    let api = h.experiments();
    api.create(&PostParams::default(), &serde_json::from_value(exp)?)
        .await?;

    // Before the start: no Service, then no Available Deployment. Nothing starts, the route
    // keeps all traffic on the baseline, the analytics service is never asked.
    let waiting = wait_not_ready(&api, "ready", "ServiceNotFound").await?;
    let (_, _, message) = versions_ready(&waiting).context("condition")?;
    assert_eq!(
        message,
        "version next: Service reviews-v2 not found; \
         version next: Deployment reviews-v2 has not observed its generation 1 yet (observed 0)"
    );
    let status = waiting.status.clone().context("status")?;
    assert_eq!(status.phase, Phase::Pending);
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("waiting for versions to be ready before the start")),
        "{:?}",
        status.message
    );
    create_service(&client, &ns, "reviews-v2").await?;
    let waiting = wait_not_ready(&api, "ready", "DeploymentNotAvailable").await?;
    let (_, _, message) = versions_ready(&waiting).context("condition")?;
    assert_eq!(
        message,
        "version next: Deployment reviews-v2 has not observed its generation 1 yet (observed 0)"
    );
    report_deployment(&client, &ns, "reviews-v2", false).await?;
    wait_for(
        "the wait to name the unavailable replica",
        Duration::from_secs(30),
        async || {
            let exp = api.get("ready").await?;
            let message = versions_ready(&exp).map(|(_, _, m)| m).unwrap_or_default();
            Ok(message.contains("0 of 1 replicas available").then_some(exp))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = api.get("ready").await?;
    assert_eq!(still.status.as_ref().map(|s| s.phase), Some(Phase::Pending));
    assert_eq!(reviews_split(&client, &ns).await?, [100, 0]);
    assert!(h.assessed.iterations().is_empty(), "no iteration ran");
    assert_eq!(
        still.status.as_ref().map(|s| s.consecutive_failures),
        Some(0),
        "waiting is not a failure"
    );
    assert_eq!(
        event_count(&client, &ns, "ready", "VersionsNotReady").await?,
        2,
        "one Event per reason waited for (no Service, then no Available Deployment), not one per check"
    );

    // Available: it starts, and traffic moves to the candidate.
    report_deployment(&client, &ns, "reviews-v2", true).await?;
    let moved = wait_for(
        "traffic to reach the candidate",
        Duration::from_secs(30),
        async || {
            let split = reviews_split(&client, &ns).await?;
            Ok((split[1] > 0).then_some(split))
        },
    )
    .await?;
    let exp = api.get("ready").await?;
    assert_eq!(
        versions_ready(&exp).map(|(s, r, _)| (s, r)),
        Some(("True".into(), "Ready".into()))
    );

    // The candidate becomes unavailable mid-experiment: the next increase waits, the split
    // stays, no iteration completes; once it is back, the experiment goes on to promote it.
    report_deployment(&client, &ns, "reviews-v2", false).await?;
    let held = wait_not_ready(&api, "ready", "DeploymentNotAvailable").await?;
    let held_status = held.status.clone().context("status")?;
    let held_split = reviews_split(&client, &ns).await?;
    assert!(held_split[1] >= moved[1], "{held_split:?} after {moved:?}");
    assert!(
        held_status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("before iteration")),
        "{:?}",
        held_status.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = api.get("ready").await?;
    let later_status = later.status.clone().context("status")?;
    assert_eq!(reviews_split(&client, &ns).await?, held_split);
    assert_eq!(
        later_status.completed_iterations,
        held_status.completed_iterations
    );
    assert_eq!(later_status.pending, None, "nothing waits half-applied");
    assert_eq!(later_status.phase, Phase::Running);

    report_deployment(&client, &ns, "reviews-v2", true).await?;
    let done = wait_for_phase(&api, "ready", Phase::Completed).await?;
    let status = done.status.clone().context("status")?;
    assert_eq!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Promote)
    );
    assert_eq!(reviews_split(&client, &ns).await?, [0, 100]);
    assert_eq!(
        versions_ready(&done).map(|(s, _, _)| s),
        Some("True".into())
    );
    h.finish().await
}
