//! `iter8 approve NAME`: opens the approval gate the experiment waits at (`status.gate`), by
//! writing `spec.approval` with the gate instance and who approved, as the API server
//! authenticates the caller (a SelfSubjectReview). The approval is for that gate instance
//! only: the controller never lets it open a later one. When it was given is the API
//! server's time of the write (its managedFields entry), not this machine's clock.

use iter8_crd::{APPROVAL_FIELD_MANAGER, Approval, approval_time};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{Cluster, EXPERIMENTS, Error};

/// The resource a SelfSubjectReview is created as, for messages.
const SELF_SUBJECT_REVIEWS: &str = "selfsubjectreviews.authentication.k8s.io";

/// Approves the gate experiment `name` waits at. Returns a one-line account for the user.
pub async fn run(cluster: &Cluster, name: &str) -> Result<String, Error> {
    let experiment = cluster.experiment(name).await?;
    let status = experiment.status.clone().unwrap_or_default();
    if status.phase.is_terminal() {
        return Err(Error::Ended {
            namespace: cluster.namespace.clone(),
            name: name.into(),
            phase: status.phase,
            verb: "approve".into(),
        });
    }
    let Some(gate) = status.gate else {
        return Err(Error::NotAwaitingApproval {
            namespace: cluster.namespace.clone(),
            name: name.into(),
        });
    };
    let by = who_am_i(cluster).await?;
    let approval = Approval {
        gate: gate.name.clone(),
        by,
    };
    let params = PatchParams {
        field_manager: Some(APPROVAL_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = json!({"spec": {"approval": approval}});
    let written = cluster
        .experiments()
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| cluster.api_error(e, "patch", EXPERIMENTS, Some(name)))?;
    let at = approval_time(&written.metadata)
        .map(|t| format!(" at {}", t.0))
        .unwrap_or_default();
    Ok(format!(
        "experiment {}/{} gate {} approved by {}{at}: the controller applies the split it held\n",
        cluster.namespace,
        experiment.name_any(),
        approval.gate,
        approval.by,
    ))
}

/// The caller's user name as the API server authenticated it.
async fn who_am_i(cluster: &Cluster) -> Result<String, Error> {
    let reviews: Api<SelfSubjectReview> = Api::all(cluster.client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| cluster.api_error(e, "create", SELF_SUBJECT_REVIEWS, None))?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Error::Approval(
                "the API server did not say who you are (SelfSubjectReview without a user name)"
                    .into(),
            )
        })
}
