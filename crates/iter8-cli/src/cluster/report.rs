//! `iter8 report NAME`: local mode's HTML report, drawn from the Experiment's status: the
//! latest assessment (estimates, credible intervals, criteria, win probabilities) and the
//! splits of `status.history`.

use iter8_crd::Experiment;
use kube::ResourceExt;

use super::{Cluster, Error, get};
use crate::report::Report;

/// The report of the Experiment `name`.
pub async fn fetch(cluster: &Cluster, name: &str) -> Result<Report, Error> {
    Ok(from_experiment(&cluster.experiment(name).await?))
}

/// The report model of an Experiment as the API server returns it.
pub fn from_experiment(e: &Experiment) -> Report {
    let status = e.status.clone().unwrap_or_default();
    let namespace = e.namespace().unwrap_or_default();
    let mut splits: Vec<(u32, Vec<u32>)> = status
        .history
        .iter()
        .map(|r| (r.iteration, r.weights.clone()))
        .collect();
    let current: Vec<u32> = e
        .spec
        .versions
        .iter()
        .map(|v| {
            status
                .weights
                .iter()
                .find(|w| w.version == v.name)
                .map_or(0, |w| w.weight)
        })
        .collect();
    if splits.is_empty() && !status.weights.is_empty() {
        splits.push((status.completed_iterations, current.clone()));
    }
    let assessments = if status.versions.is_empty() {
        Vec::new()
    } else {
        vec![(status.completed_iterations, status.versions.clone())]
    };
    Report {
        name: e.name_any(),
        spec: e.spec.clone(),
        about: format!(
            "{:?} · {} versions · iteration {} of {} · phase {} · namespace {namespace}",
            e.spec.kind,
            e.spec.versions.len(),
            status.completed_iterations,
            e.spec.duration.max_iterations,
            get::phase(e),
        ),
        source: format!(
            "Experiment {namespace}/{} on a cluster (its status at iteration {})",
            e.name_any(),
            status.completed_iterations
        ),
        decision: status.decision.clone(),
        winner: status.winner.clone(),
        split_label: if status.phase.is_terminal() {
            "Final split".into()
        } else {
            "Current split".into()
        },
        split: current,
        splits,
        split_caption: "The split applied after each iteration (status.history keeps the \
                        most recent iterations)."
            .into(),
        assessments,
        load: Vec::new(),
    }
}
