//! `iter8 pause|resume|terminate|split`: a person's instruction, written where the controller
//! reads it (`spec.manualOverride`, see `iter8-controller/src/plan.rs`):
//!
//! | command | `spec.manualOverride` | the controller |
//! | --- | --- | --- |
//! | `pause NAME` | `{action: pause}` | stops iterating, holds the current split |
//! | `split NAME 70 30` | `{action: pause, split: [70, 30]}` | applies the split and holds it |
//! | `resume NAME` | `{action: resume}` | iterates again from where it stopped |
//! | `terminate NAME [W...]` | `{action: terminate, split?}` | ends now: the given split, else the termination policy |

use iter8_crd::{Experiment, ManualOverride, OverrideAction, Phase};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Cluster, EXPERIMENTS, Error};

/// The field manager named in `metadata.managedFields` for what the CLI writes.
pub const FIELD_MANAGER: &str = "iter8-cli";

/// Checks `weights` against the experiment's versions and writes `action` (with the split,
/// if any) into `spec.manualOverride`. Returns a one-line account for the user.
pub async fn run(
    cluster: &Cluster,
    name: &str,
    action: OverrideAction,
    weights: Option<Vec<u32>>,
) -> Result<String, Error> {
    let experiment = cluster.experiment(name).await?;
    let verb = verb(action, weights.is_some());
    if let Some(phase) = experiment
        .status
        .as_ref()
        .map(|s| s.phase)
        .filter(|p| p.is_terminal())
    {
        return Err(Error::Ended {
            namespace: cluster.namespace.clone(),
            name: name.into(),
            phase,
            verb: verb.into(),
        });
    }
    if let Some(weights) = &weights {
        check_weights(&experiment, weights)?;
    }
    let manual_override = ManualOverride {
        action,
        split: weights,
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    if action == OverrideAction::Resume && held_by_failure_policy(&experiment, &manual_override) {
        // The override already says resume, so writing it again would change nothing and the
        // generation the failure policy waits past would not move: clear it first.
        let clear = json!({"spec": {"manualOverride": null}});
        cluster
            .experiments()
            .patch(name, &params, &Patch::Merge(&clear))
            .await
            .map_err(|e| cluster.api_error(e, "patch", EXPERIMENTS, Some(name)))?;
    }
    // Both fields are written: a merge patch keeps what it does not name, so `split: null`
    // is what removes a split left by an earlier command.
    let patch = json!({"spec": {"manualOverride": {
        "action": manual_override.action,
        "split": manual_override.split,
    }}});
    cluster
        .experiments()
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| cluster.api_error(e, "patch", EXPERIMENTS, Some(name)))?;
    Ok(account(&experiment, &manual_override, &cluster.namespace))
}

/// The verb for messages: `pause`, `split`, `resume` or `terminate`.
fn verb(action: OverrideAction, with_split: bool) -> &'static str {
    match (action, with_split) {
        (OverrideAction::Pause, true) => "split",
        (OverrideAction::Pause, false) => "pause",
        (OverrideAction::Resume, _) => "resume",
        (OverrideAction::Terminate, _) => "terminate",
    }
}

/// Whether the failure policy holds `experiment` paused until its spec changes
/// (`status.pausedAtGeneration`) while `spec.manualOverride` already is `wanted`.
fn held_by_failure_policy(experiment: &Experiment, wanted: &ManualOverride) -> bool {
    let generation = experiment.metadata.generation;
    let held = experiment.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Paused
            && s.paused_at_generation
                .is_some_and(|at| generation.is_none_or(|g| g <= at))
    });
    held && experiment.spec.manual_override.as_ref() == Some(wanted)
}

/// One weight per version, summing to 100; the error names the versions.
pub fn check_weights(experiment: &Experiment, weights: &[u32]) -> Result<(), Error> {
    let versions: Vec<&str> = experiment
        .spec
        .versions
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    if weights.len() != versions.len() {
        return Err(Error::Weights(format!(
            "experiment {} has {} versions ({}): give one weight per version, in that order; got {}",
            experiment.name_any(),
            versions.len(),
            versions.join(", "),
            weights.len()
        )));
    }
    let sum: u32 = weights.iter().sum();
    if sum != 100 {
        let terms: Vec<String> = versions
            .iter()
            .zip(weights)
            .map(|(v, w)| format!("{v}={w}"))
            .collect();
        return Err(Error::Weights(format!(
            "the weights must sum to 100: {} sums to {sum}",
            terms.join(" + ")
        )));
    }
    Ok(())
}

fn account(experiment: &Experiment, o: &ManualOverride, namespace: &str) -> String {
    let name = format!("{namespace}/{}", experiment.name_any());
    let split = |s: &Vec<u32>| iter8_crd::weights_summary(&experiment.spec.versions, s);
    match (o.action, &o.split) {
        (OverrideAction::Pause, None) => {
            format!("experiment {name} pause requested: the controller holds the current split\n")
        }
        (OverrideAction::Pause, Some(s)) => format!(
            "experiment {name} split requested: the controller applies {} and holds it (iter8 resume {} to hand back to the analytics)\n",
            split(s),
            experiment.name_any()
        ),
        (OverrideAction::Resume, _) => {
            format!("experiment {name} resume requested: the controller iterates again\n")
        }
        (OverrideAction::Terminate, Some(s)) => format!(
            "experiment {name} terminate requested: the controller ends it with {}\n",
            split(s)
        ),
        (OverrideAction::Terminate, None) => format!(
            "experiment {name} terminate requested: the controller ends it by its termination policy\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Experiment {
        serde_yaml::from_str(
            "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\nmetadata: {name: reviews}\n\
             spec:\n  kind: canary\n  versions: [{name: v1}, {name: v2}]\n",
        )
        .expect("experiment")
    }

    #[test]
    fn a_wrong_number_of_weights_names_the_versions() {
        let err = check_weights(&canary(), &[50, 30, 20]).expect_err("three weights for two");
        assert_eq!(
            err.to_string(),
            "experiment reviews has 2 versions (v1, v2): give one weight per version, in that order; got 3"
        );
    }

    #[test]
    fn weights_not_summing_to_100_are_refused_with_each_version_named() {
        let err = check_weights(&canary(), &[70, 20]).expect_err("90");
        assert_eq!(
            err.to_string(),
            "the weights must sum to 100: v1=70 + v2=20 sums to 90"
        );
        check_weights(&canary(), &[70, 30]).expect("a valid split");
    }
}
