//! Approval gates: promotion, and optionally each increase of a candidate's weight, waits for
//! a person (`iter8 approve`) or a webhook before its split reaches the router.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which splits wait for approval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// The promotion (the split that ends the experiment on a winner) waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Gate>,
    /// Every split that raises a candidate's weight waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_increase: Option<Gate>,
}

/// How one gate opens, and what happens when nobody opens it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// A webhook that opens the gate by answering 2xx to a POST (Flagger's confirm-promotion
    /// shape); it must be under a URL the controller allows (`--gate-webhook-allowed-urls`).
    /// `iter8 approve` opens the gate too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<GateWebhook>,
    /// How long to wait, e.g. `30m`; without it the gate waits for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
    /// What to do when the timeout passes: `hold` (keep the split and go on waiting) or
    /// `rollback` (all traffic back on the baseline; the experiment ends Failed).
    #[serde(default)]
    pub on_timeout: GateTimeoutAction,
}

/// A webhook asked whether a gate may open.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateWebhook {
    /// The URL POSTed to, e.g. `http://approver.ops:8080/confirm-promotion`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
}

/// The actions on a gate's timeout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GateTimeoutAction {
    /// Keep the current split and go on waiting; say that the timeout passed.
    #[default]
    Hold,
    /// Put all traffic on the baseline and end the experiment (phase Failed).
    Rollback,
}

/// An approval given by `iter8 approve`: it opens the gate it names and no other.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The gate instance approved, as `status.gate.name` gave it (e.g. `promotion@7`).
    #[schemars(length(min = 1, max = 128))]
    pub gate: String,
    /// Who approved, as the API server authenticated them (a SelfSubjectReview).
    #[schemars(length(min = 1, max = 512))]
    pub by: String,
}

/// The field manager `iter8 approve` writes `spec.approval` with; the time of its entry in
/// `metadata.managedFields` is the API server's time of the approval.
pub const APPROVAL_FIELD_MANAGER: &str = "iter8-approve";

/// A gate the experiment waits at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// The gate instance: `promotion@ITERATION` or `weightIncrease@ITERATION`.
    pub name: String,
    /// When the wait started.
    pub since: Time,
    /// The timeout passed with `onTimeout: hold`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

/// An opened gate, for the record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// The gate instance opened.
    pub gate: String,
    /// Who approved, as the API server authenticated them.
    pub by: String,
    /// When, by the API server's clock (the approval write's managedFields time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// The name of a gate instance: the same gate at another iteration is another instance, so
/// an approval never carries over.
pub fn gate_name(kind: &str, iteration: u32) -> String {
    format!("{kind}@{iteration}")
}

/// When the API server last saw `spec.approval` written by `iter8 approve`: the time of the
/// [`APPROVAL_FIELD_MANAGER`]'s managedFields entry that owns it.
pub fn approval_time(meta: &ObjectMeta) -> Option<Time> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(APPROVAL_FIELD_MANAGER))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some_and(|s| s.get("f:approval").is_some())
        })
        .filter_map(|m| m.time.clone())
        .max_by_key(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use k8s_openapi::jiff::Timestamp;

    fn entry(manager: &str, fields: serde_json::Value, second: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(fields)),
            time: Some(Time(Timestamp::from_second(second).expect("time"))),
            ..Default::default()
        }
    }

    #[test]
    fn the_approval_time_is_the_servers_time_of_the_approve_write() {
        let meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(
                    "kubectl",
                    serde_json::json!({"f:spec": {"f:approval": {}}}),
                    50,
                ),
                entry(
                    APPROVAL_FIELD_MANAGER,
                    serde_json::json!({"f:metadata": {"f:labels": {}}}),
                    60,
                ),
                entry(
                    APPROVAL_FIELD_MANAGER,
                    serde_json::json!({"f:spec": {"f:approval": {"f:gate": {}}}}),
                    40,
                ),
            ]),
            ..Default::default()
        };
        assert_eq!(
            approval_time(&meta).map(|t| t.0.as_second()),
            Some(40),
            "only the approve manager's entry owning spec.approval counts"
        );
        assert_eq!(approval_time(&ObjectMeta::default()), None);
        assert_eq!(gate_name("promotion", 7), "promotion@7");
    }
}
