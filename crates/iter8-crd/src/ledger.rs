//! The state an experiment keeps between iterations, and the one way to turn it into an
//! assessment request and to fold an answer back into it.
//!
//! The controller keeps a [`Ledger`] in `status.ledger`; `iter8 run` and the simulator keep
//! one in memory. All three call [`Ledger::request`] and [`Ledger::record`], so the engine is
//! always asked the same question from the same state: the start split
//! (`spec.initial_weights()`), the first iteration in which a candidate has no data yet, and
//! the evidence kept between iterations.
//!
//! The ledger reads the experiment through [`Design`], which `ExperimentSpec` implements: the
//! status that holds a ledger lives beside the spec, so naming the spec here would make the
//! two modules import each other.

use std::collections::BTreeMap;

use iter8_api::{Action, AssessmentRequest, AssessmentResponse, Decision, Evidence, Observation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a ledger needs to know of the experiment it keeps (implemented by `ExperimentSpec`).
pub trait Design {
    /// The request as the experiment fixes it: kind, versions by name in order (weight 0, no
    /// metrics), iteration limits, ratios, criteria and strategy; iteration 1, no evidence.
    /// [`Ledger::request`] fills in what changes between iterations.
    fn question(&self) -> AssessmentRequest;
    /// The split the experiment starts from.
    fn initial_weights(&self) -> Vec<u32>;
    /// The split left in place when the experiment ends with `decision` while `current` is
    /// in force.
    fn final_weights(&self, decision: &Decision, current: &[u32]) -> Vec<u32>;
}

/// What an experiment keeps between iterations: everything the next assessment needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Iterations completed; the next request is for iteration `completed + 1`.
    #[serde(default)]
    pub completed: u32,
    /// The split in force now, in version order: what the next interval is served under.
    #[serde(default)]
    pub weights: Vec<u32>,
    /// The evidence returned with the last completed iteration's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "evidence_schema")]
    pub evidence: Option<Evidence>,
}

impl Ledger {
    /// The state before the first iteration: nothing completed, `spec.initial_weights()`.
    pub fn start(spec: &impl Design) -> Ledger {
        Ledger {
            completed: 0,
            weights: spec.initial_weights(),
            evidence: None,
        }
    }

    /// The request for the next iteration, from this iteration's cumulative observations
    /// (per version, in version order; a missing entry is a version without data).
    pub fn request(
        &self,
        spec: &impl Design,
        observations: Vec<BTreeMap<String, Observation>>,
    ) -> AssessmentRequest {
        let mut request = spec.question();
        let mut observations = observations.into_iter();
        for (i, version) in request.versions.iter_mut().enumerate() {
            version.weight = self.weights.get(i).copied().unwrap_or(0);
            version.metrics = observations.next().unwrap_or_default();
        }
        request.iteration = self.completed + 1;
        request.evidence = self.evidence.clone();
        request
    }

    /// The state after `response` (already validated): one more iteration completed, its
    /// evidence kept, and the split in force becomes the answer's split, or the final split
    /// (`spec.final_weights`) when the decision ends the experiment.
    pub fn record(&self, spec: &impl Design, response: &AssessmentResponse) -> Ledger {
        let weights = if response.decision.action == Action::Continue {
            response.split.iter().map(|w| w.weight).collect()
        } else {
            spec.final_weights(&response.decision, &self.weights)
        };
        Ledger {
            completed: self.completed + 1,
            weights,
            evidence: Some(response.evidence.clone()),
        }
    }
}

/// Evidence as the API server stores it: the wire type's schema is not structural (a bucket
/// bound is a number or `"+Inf"`), and only the controller writes it, decoding it with the
/// wire type.
fn evidence_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
