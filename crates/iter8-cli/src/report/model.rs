//! What a report shows, whatever it comes from: a saved local run (every iteration's full
//! assessment and the load generator's counts) or an Experiment on a cluster (its status: the
//! latest assessment and the recorded splits). The HTML page is drawn from this alone.

use iter8_api::{Decision, VersionAssessment, Winner};
use iter8_crd::ExperimentSpec;

use crate::record::{LoadSummary, RunRecord};

/// A report, independent of where the experiment ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The experiment's name.
    pub name: String,
    /// The experiment's spec: versions, criteria, strategy.
    pub spec: ExperimentSpec,
    /// One line under the title: kind, versions, iterations and where it ran.
    pub about: String,
    /// Where the data came from, for the footer.
    pub source: String,
    /// The last decision; `None` before the first iteration.
    pub decision: Option<Decision>,
    /// The version declared best, if any.
    pub winner: Option<Winner>,
    /// What `split` is: "Final split" once ended, "Current split" while running.
    pub split_label: String,
    /// The split now (or at the end), in version order.
    pub split: Vec<u32>,
    /// The split of each iteration, in version order, oldest first.
    pub splits: Vec<(u32, Vec<u32>)>,
    /// What a bar of the split chart means for this source.
    pub split_caption: String,
    /// The assessments known, per iteration, oldest first: every iteration for a local run,
    /// the latest one for a cluster experiment.
    pub assessments: Vec<(u32, Vec<VersionAssessment>)>,
    /// The load generator's cumulative counts at the last iteration (local runs only).
    pub load: Vec<LoadSummary>,
}

impl Report {
    /// The report of a saved local run.
    pub fn from_run(run: &RunRecord) -> Self {
        Report {
            name: run.name.clone(),
            spec: run.spec.clone(),
            about: format!(
                "{:?} · {} versions · {} iterations · {} requests · {:.1} s",
                run.spec.kind,
                run.spec.versions.len(),
                run.iterations.len(),
                run.outcome.total_requests,
                run.outcome.wall_ms as f64 / 1000.0
            ),
            source: format!("a local run; analytics {}", run.analytics),
            decision: Some(run.outcome.decision.clone()),
            winner: run.outcome.winner.clone(),
            split_label: "Final split".into(),
            split: run.outcome.final_weights.clone(),
            splits: run
                .iterations
                .iter()
                .map(|it| (it.iteration, it.weights.clone()))
                .collect(),
            split_caption: "The share of requests each version received during the iteration."
                .into(),
            assessments: run
                .iterations
                .iter()
                .map(|it| (it.iteration, it.response.versions.clone()))
                .collect(),
            load: run.last().map(|it| it.load.clone()).unwrap_or_default(),
        }
    }

    /// The version names, in order.
    pub fn version_names(&self) -> Vec<String> {
        self.spec.versions.iter().map(|v| v.name.clone()).collect()
    }

    /// The latest assessment and its iteration, if there is one.
    pub fn last(&self) -> Option<(u32, &[VersionAssessment])> {
        self.assessments
            .last()
            .map(|(iteration, versions)| (*iteration, versions.as_slice()))
    }
}
