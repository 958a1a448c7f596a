//! The state an experiment keeps between iterations, and the one way to turn it into an
//! assessment request and to fold an answer back into it.
//!
//! The controller keeps a [`Ledger`] in `status.ledger`; `iter8 run` and the simulator keep
//! one in memory. All three call [`Ledger::request`] and [`Ledger::record`], so the engine is
//! always asked the same question from the same state: the start split
//! (`spec.initial_weights()`), the first iteration in which a candidate has no data yet, and
//! the evidence kept between iterations.

use std::collections::BTreeMap;

use iter8_api::{Action, AssessmentRequest, AssessmentResponse, Evidence, Observation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::experiment::ExperimentSpec;

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
    pub fn start(spec: &ExperimentSpec) -> Ledger {
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
        spec: &ExperimentSpec,
        observations: Vec<BTreeMap<String, Observation>>,
    ) -> AssessmentRequest {
        let versions = spec
            .versions
            .iter()
            .zip(
                observations
                    .into_iter()
                    .chain(std::iter::repeat_with(BTreeMap::new)),
            )
            .enumerate()
            .map(|(i, (v, metrics))| iter8_api::Version {
                name: v.name.clone(),
                weight: self.weights.get(i).copied().unwrap_or(0),
                metrics,
                history: Vec::new(),
            })
            .collect();
        AssessmentRequest {
            kind: spec.kind,
            iteration: self.completed + 1,
            min_iterations: spec.duration.min_iterations,
            max_iterations: Some(spec.duration.max_iterations),
            versions,
            ratios: spec.ratios.clone(),
            criteria: spec.criteria.clone(),
            strategy: spec.strategy.clone(),
            evidence: self.evidence.clone(),
        }
    }

    /// The state after `response` (already validated): one more iteration completed, its
    /// evidence kept, and the split in force becomes the answer's split, or the final split
    /// (`spec.final_weights`) when the decision ends the experiment.
    pub fn record(&self, spec: &ExperimentSpec, response: &AssessmentResponse) -> Ledger {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExperimentSpec {
        serde_json::from_value(serde_json::json!({
            "kind": "canary",
            "versions": [{"name": "stable"}, {"name": "next"}],
            "duration": {"maxIterations": 5}
        }))
        .expect("spec")
    }

    #[test]
    fn the_first_request_is_iteration_1_at_the_start_split_without_evidence() {
        let spec = spec();
        let request = Ledger::start(&spec).request(&spec, Vec::new());
        assert_eq!(request.iteration, 1);
        let weights: Vec<u32> = request.versions.iter().map(|v| v.weight).collect();
        assert_eq!(weights, vec![100, 0]);
        assert!(request.evidence.is_none());
        assert!(request.versions.iter().all(|v| v.history.is_empty()));
    }
}
