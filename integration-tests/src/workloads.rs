//! Deployments as the tests need them. No kube-controller-manager runs, so a test reports a
//! Deployment's status itself, through the status subresource, as the deployment controller
//! would.

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// A Deployment of one replica; with no deployment controller it reports no status.
pub async fn create_deployment(client: &Client, ns: &str, name: &str) -> Result<()> {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
            }
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("creating Deployment {name}"))?;
    Ok(())
}

/// Reports Deployment `name` as the deployment controller would: its generation observed, its
/// one replica updated, and available (or not).
pub async fn report_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    available: bool,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let generation = api.get(name).await?.metadata.generation;
    let (count, condition) = if available {
        (
            1,
            json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                   "message": "Deployment has minimum availability."}),
        )
    } else {
        (
            0,
            json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                   "message": "Deployment does not have minimum availability."}),
        )
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": count, "availableReplicas": count,
            "unavailableReplicas": 1 - count, "conditions": [condition]
        }})),
    )
    .await
    .with_context(|| format!("reporting the status of Deployment {name}"))?;
    Ok(())
}
