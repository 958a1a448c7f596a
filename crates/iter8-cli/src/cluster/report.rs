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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_takes_the_splits_from_history_and_the_latest_assessment() {
        let e: Experiment = serde_yaml::from_str(
            "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\n\
             metadata: {name: reviews, namespace: shop}\n\
             spec:\n  kind: canary\n  versions: [{name: v1}, {name: v2}]\n\
             status:\n  phase: Running\n  completedIterations: 2\n\
             \x20 weights: [{version: v1, weight: 60}, {version: v2, weight: 40}]\n\
             \x20 decision: {action: continue, reason: learning}\n\
             \x20 versions:\n\
             \x20 - {name: v1, metrics: [], criteria: [], probabilityAllCriteria: 1, winProbability: 0.4}\n\
             \x20 - {name: v2, metrics: [], criteria: [], probabilityAllCriteria: 1, winProbability: 0.6}\n\
             \x20 history:\n\
             \x20 - {iteration: 1, time: '2026-11-30T10:00:00Z', weights: [80, 20], action: continue}\n\
             \x20 - {iteration: 2, time: '2026-11-30T10:01:00Z', weights: [60, 40], action: continue}\n",
        )
        .expect("experiment");
        let report = from_experiment(&e);
        assert_eq!(report.splits, vec![(1, vec![80, 20]), (2, vec![60, 40])]);
        assert_eq!(report.split, vec![60, 40]);
        assert_eq!(report.split_label, "Current split");
        assert_eq!(report.assessments.len(), 1);
        assert_eq!(report.last().map(|(i, v)| (i, v.len())), Some((2, 2)));
        assert!(
            report.load.is_empty(),
            "a cluster has no load generator counts"
        );
        let html = crate::report::html::page(&report);
        assert!(html.contains("Current split: v1=60,v2=40"));
        assert!(html.contains("Experiment shop/reviews on a cluster"));
    }
}
