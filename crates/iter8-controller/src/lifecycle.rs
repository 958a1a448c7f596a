//! The experiment's lifecycle as pure functions: from the status and what a reconcile
//! observed (an assessment, a router failure, a person's override, a hand edit of the route),
//! the new status, the Events to publish and when to come back. No I/O: the reconciler reads
//! and writes, this module decides, and every transition is tested directly.
//!
//! The reconciler keeps one order for every transition: the router is written first (when
//! the transition needs a new split), then the status, then the Events. A decided iteration
//! is recorded as *pending* before its split reaches the router, so a controller that stops
//! in between finishes it without deciding again.

use std::time::Duration;

use iter8_api::{Action as Decided, AssessmentResponse, Decision, VersionWeight};
use iter8_crd::{
    Approval, ApprovalRecord, ExperimentSpec, ExperimentStatus, FailureAction, Gate, GateStatus,
    GateTimeoutAction, HISTORY_LIMIT, IterationRecord, Ledger, PendingIteration, Phase, gate_name,
    weights_summary,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use crate::conditions::{
    self, ANALYTICS_AVAILABLE, COMPLETED, GATE_OPEN, METRICS_AVAILABLE, READY, TRAFFIC_APPLIED,
    VERSIONS_READY,
};
use crate::readiness::NotReady;
use crate::router::{RouteSplit, RouterError};

/// When a transition happens, and for which spec generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// The time written into conditions and records.
    pub now: Time,
    /// The Experiment's `metadata.generation`.
    pub generation: Option<i64>,
}

/// A Kubernetes Event to publish about the experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (something to act on) or Normal.
    pub warning: bool,
    /// CamelCase reason, e.g. `Iteration`, `AnalyticsUnavailable`.
    pub reason: &'static str,
    /// What the controller was doing, e.g. `Iterate`.
    pub action: &'static str,
    /// The message.
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            action,
            message: message.into(),
        }
    }

    fn warning(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            action,
            message: message.into(),
        }
    }
}

/// When to reconcile again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// When the next iteration is due by the new status.
    WhenDue,
    /// After the retry delay: an attempt failed.
    Retry,
    /// Not until the Experiment changes: it ended, or waits for a person.
    AwaitChange,
}

/// The outcome of a transition: the status to write, then the Events, then the requeue.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new status.
    pub status: ExperimentStatus,
    /// The Events, in order.
    pub notes: Vec<Note>,
    /// When to come back.
    pub requeue: Requeue,
}

/// A failed attempt: the condition it makes False, the reason and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The condition type made False.
    pub condition: &'static str,
    /// CamelCase reason, also the Event's.
    pub reason: &'static str,
    /// What failed, for the condition, the Event and `status.message`.
    pub message: String,
}

impl Failure {
    /// The router could not be read or set.
    pub fn router(e: &RouterError) -> Self {
        let reason = match e {
            RouterError::NotFound { .. } => "RouterNotFound",
            RouterError::NoRoute { .. } | RouterError::Mismatch(_) => "RouterMismatch",
            RouterError::Conflict(_) => "RouteConflict",
            RouterError::Kube(_) => "RouterUnavailable",
        };
        Self {
            condition: TRAFFIC_APPLIED,
            reason,
            message: format!("traffic not applied: {e}"),
        }
    }

    /// The metrics backend failed (not: a version has no data).
    pub fn metrics(iteration: u32, reason: &str) -> Self {
        Self {
            condition: METRICS_AVAILABLE,
            reason: "BackendUnavailable",
            message: format!("iteration {iteration} held: {reason}"),
        }
    }

    /// The Experiment names a Metric in a namespace it may not use.
    pub fn metric_not_allowed(iteration: u32, namespace: &str, name: &str) -> Self {
        Self {
            condition: METRICS_AVAILABLE,
            reason: "MetricNotAllowed",
            message: format!(
                "iteration {iteration} held: Metric {namespace}/{name} is in another namespace, \
                 which is not one the controller shares Metrics from (--shared-metric-namespaces); \
                 use a Metric of the experiment's namespace"
            ),
        }
    }

    /// A Metric names a backend address (`field`, rendered to `url`) the controller may not
    /// send queries or credentials to; its Secret was not read and nothing was sent.
    pub fn metric_backend_not_allowed(
        iteration: u32,
        metric: &MetricRead,
        field: &str,
        url: &str,
    ) -> Self {
        Self {
            condition: METRICS_AVAILABLE,
            reason: "MetricBackendNotAllowed",
            message: format!(
                "iteration {iteration} held: Metric {} (`{}`) {field} is {url}, which is not an \
                 allowed metrics backend (the controller's --prometheus-url or \
                 --metric-backend-allowed-urls; chart value metricBackends.allowedUrls); its \
                 Secret was not read and nothing was sent",
                metric.resource, metric.name
            ),
        }
    }

    /// The analytics service gave no usable answer.
    pub fn analytics(
        spec: &ExperimentSpec,
        iteration: u32,
        current: &[u32],
        e: &crate::analytics::AnalyticsError,
    ) -> Self {
        Self {
            condition: ANALYTICS_AVAILABLE,
            reason: e.reason(),
            message: format!(
                "iteration {iteration} held at {}: {e}",
                weights_summary(&spec.versions, current)
            ),
        }
    }
}

/// What a held attempt leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Below the failure policy's limit, or paused by it: write `Transition`, nothing else.
    Done(Transition),
    /// The failure policy rolls back: put all traffic on the baseline (`weights`), then
    /// [`rolled_back`] on success or [`rollback_blocked`] if the router fails. `status`
    /// carries the failure; `notes` are published whatever happens next.
    RollBack {
        /// The status with the failure counted.
        status: ExperimentStatus,
        /// The split to put on the router.
        weights: Vec<u32>,
        /// The failure's Event.
        notes: Vec<Note>,
    },
}

// ---------------------------------------------------------------------------------------------
// Transitions

/// The experiment starts with `weights` on the router; its first iteration is due one
/// interval plus `offset` ([`crate::plan::start_offset`]) from now.
pub fn started(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    weights: &[u32],
    offset: Duration,
    at: &Stamp,
) -> Transition {
    status.phase = Phase::Running;
    status.start_time = Some(at.now.clone());
    status.first_iteration_due = after(&at.now, crate::plan::interval_of(spec) + offset);
    record_weights(spec, &mut status, weights);
    let summary = weights_summary(&spec.versions, weights);
    set(
        &mut status,
        at,
        READY,
        true,
        "Started",
        "experiment started",
    );
    set(
        &mut status,
        at,
        TRAFFIC_APPLIED,
        true,
        "Applied",
        "starting split applied",
    );
    status.message = Some(format!("started with {summary}"));
    Transition {
        status,
        notes: vec![Note::normal(
            "Started",
            "Start",
            format!("starting split {summary}"),
        )],
        requeue: Requeue::WhenDue,
    }
}

/// The versions the next split moves traffic to are ready ([`crate::readiness::verdict`]
/// said so, in `account`): `VersionsReady` is True.
pub fn versions_ready(mut status: ExperimentStatus, account: &str, at: &Stamp) -> ExperimentStatus {
    set(&mut status, at, VERSIONS_READY, true, "Ready", account);
    status
}

/// A version traffic was about to move to is not ready: nothing moves (the router keeps its
/// split, nothing is recorded as pending), and the check is made again after the retry delay.
/// Waiting is not a failure: the failure policy does not count it. `before` says what waits
/// (`the start`, `iteration 3`). The `VersionsNotReady` Event is published when the wait
/// begins or its reason changes, not at every check.
pub fn awaiting_versions(
    mut status: ExperimentStatus,
    before: &str,
    not_ready: &NotReady,
    at: &Stamp,
) -> Transition {
    let already = status
        .conditions
        .iter()
        .any(|c| c.type_ == VERSIONS_READY && c.status == "False" && c.reason == not_ready.reason);
    let message = format!(
        "waiting for versions to be ready before {before}: {}",
        not_ready.message
    );
    set(
        &mut status,
        at,
        VERSIONS_READY,
        false,
        not_ready.reason,
        &not_ready.message,
    );
    status.message = Some(message.clone());
    let notes = if already {
        Vec::new()
    } else {
        vec![Note::warning("VersionsNotReady", "Iterate", message)]
    };
    Transition {
        status,
        notes,
        requeue: Requeue::Retry,
    }
}

/// A gate opened (approved, or its webhook said yes) but a version its split raises is no
/// longer ready: the split stays pending and the opening is not recorded yet (the approval
/// stays valid, `status.gate` stays set), but the status says the gate is open and what it
/// waits for, and a paused experiment resumed at its gate waits Running.
pub fn gate_open_awaiting_versions(
    mut status: ExperimentStatus,
    gate: &str,
    iteration: u32,
    not_ready: &NotReady,
    at: &Stamp,
) -> Transition {
    if status.phase == Phase::Paused {
        status = attempted(status);
        set(
            &mut status,
            at,
            READY,
            true,
            "Running",
            "resumed at its gate",
        );
    }
    let open = format!("gate {gate} is open; its split waits for its versions to be ready");
    set(&mut status, at, GATE_OPEN, false, "AwaitingVersions", &open);
    let before = format!("the split of iteration {iteration} that gate {gate} let through");
    awaiting_versions(status, &before, not_ready, at)
}

/// The status of an attempt that failed before its data were assessed, without the Metric
/// digests [`metrics_checked`] recorded in it: a digest stands for the definition data were
/// judged under, so a Metric fixed after a failed first attempt is not a change.
pub fn unassessed(
    mut status: ExperimentStatus,
    recorded: &std::collections::BTreeMap<String, String>,
) -> ExperimentStatus {
    status.metric_digests = recorded.clone();
    status
}

/// An iteration attempt begins: a paused experiment (resumed, or past the generation the
/// failure policy paused it at) runs again.
pub fn attempted(mut status: ExperimentStatus) -> ExperimentStatus {
    if status.phase == Phase::Paused {
        status.phase = Phase::Running;
        status.paused_at_generation = None;
    }
    status
}

/// A Metric the experiment names, as read for this iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRead {
    /// The name the experiment's criteria use (`spec.metrics[].name`).
    pub name: String,
    /// The Metric resource, `namespace/name`.
    pub resource: String,
    /// The digest of its spec ([`crate::digest::metric_digest`]); `None`: it does not exist.
    pub digest: Option<String>,
}

/// What the Metrics read for an iteration allow ([`metrics_checked`]).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsChecked {
    /// Each is as the experiment first read it (recorded in this status if read for the
    /// first time): go on collecting.
    Unchanged(ExperimentStatus),
    /// A Metric does not exist (never created, or deleted mid-run): a failed attempt, like a
    /// backend that does not answer, so the failure policy decides (by default, traffic back
    /// on the baseline) rather than a split held with nothing watching it.
    Missing(Failure),
    /// A Metric changed since the experiment first assessed data from it: nothing is
    /// assessed on the new definition; the experiment pauses, holding its split, until a
    /// person acts (write this, publish its Event).
    Changed(Transition),
}

/// Compares the Metrics read for `iteration` with the digests recorded when the experiment
/// first read them (`status.metricDigests`), and records those read for the first time. The
/// sequential tests assume each criterion means the same throughout: a Metric whose query,
/// backend, type or anything else changed mid-run would silently change it. So a change
/// pauses the experiment (split held, as the failure policy's pause does) with the
/// `MetricChanged` reason; restoring the Metric's spec and resuming (`iter8 resume`, or any
/// spec change) goes on, and the next iteration finds the digests equal again.
pub fn metrics_checked(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    iteration: u32,
    read: &[MetricRead],
    at: &Stamp,
) -> MetricsChecked {
    let mut changes = Vec::new();
    for metric in read {
        let recorded = status.metric_digests.get(&metric.name);
        match (recorded, &metric.digest) {
            (Some(was), Some(is)) if was == is => {}
            (Some(_), Some(_)) => changes.push(format!(
                "Metric {} (`{}`) changed",
                metric.resource, metric.name
            )),
            (Some(_), None) => {
                return MetricsChecked::Missing(Failure::metrics(
                    iteration,
                    &format!(
                        "Metric {} (`{}`) was deleted mid-run",
                        metric.resource, metric.name
                    ),
                ));
            }
            (None, Some(is)) => {
                status
                    .metric_digests
                    .insert(metric.name.clone(), is.clone());
            }
            (None, None) => {
                return MetricsChecked::Missing(Failure::metrics(
                    iteration,
                    &format!("Metric {} not found", metric.resource),
                ));
            }
        }
    }
    if changes.is_empty() {
        return MetricsChecked::Unchanged(status);
    }
    let held = current_weights(spec, &status);
    let message = format!(
        "iteration {iteration} not assessed: {} since the experiment first read it; paused, \
         holding {}. A criterion must mean the same for the whole experiment: restore the \
         Metric's spec and run `iter8 resume`, or end this experiment (`iter8 terminate`) \
         and start a new one to use the new definition",
        changes.join(", "),
        weights_summary(&spec.versions, &held)
    );
    status.phase = Phase::Paused;
    status.paused_at_generation = at.generation;
    status.pending = None;
    set(
        &mut status,
        at,
        METRICS_AVAILABLE,
        false,
        "MetricChanged",
        &message,
    );
    set(&mut status, at, READY, false, "MetricChanged", &message);
    status.message = Some(message.clone());
    MetricsChecked::Changed(Transition {
        status,
        notes: vec![Note::warning("MetricChanged", "Iterate", message)],
        requeue: Requeue::AwaitChange,
    })
}

/// Metrics were collected. `missing` says which versions had no data for which metric, if
/// any: the iteration goes on (the engine never counts missing data as a pass), but the user
/// should see why it cannot conclude.
pub fn collected(
    mut status: ExperimentStatus,
    iteration: u32,
    missing: Option<&str>,
    at: &Stamp,
) -> (ExperimentStatus, Vec<Note>) {
    let notes = match missing {
        None => {
            set(
                &mut status,
                at,
                METRICS_AVAILABLE,
                true,
                "Collected",
                "every version has data for every metric",
            );
            Vec::new()
        }
        Some(missing) => {
            set(&mut status, at, METRICS_AVAILABLE, false, "NoData", missing);
            vec![Note::warning(
                "NoData",
                "Iterate",
                format!("iteration {iteration}: {missing}"),
            )]
        }
    };
    (status, notes)
}

/// The analytics answered (an answer already checked against the request `ledger` built):
/// the decision is recorded as pending, with the split to apply next and the ledger after the
/// answer. A held or retried iteration re-sends `ledger` (the pre-answer one): the status's
/// ledger only changes once the split is applied ([`applied`]).
pub fn decided(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    iteration: u32,
    ledger: &Ledger,
    response: AssessmentResponse,
    at: &Stamp,
) -> ExperimentStatus {
    set(
        &mut status,
        at,
        ANALYTICS_AVAILABLE,
        true,
        "Assessed",
        format!("iteration {iteration} assessed"),
    );
    let mut next = ledger.record(spec, &response);
    let terminal = ends(spec, iteration, &response.decision);
    let decision = if terminal && response.decision.action == Decided::Continue {
        // The last iteration the spec allows: the controller ends it whatever a service says.
        let decision = Decision {
            action: Decided::Inconclusive,
            version: None,
            reason: format!(
                "maxIterations ({iteration}) reached without a decision; {}",
                response.decision.reason
            ),
        };
        next.weights = spec.final_weights(&decision, &ledger.weights);
        decision
    } else {
        response.decision
    };
    status.versions = response.versions;
    status.winner = response.winner;
    if decision.action == Decided::Promote {
        status.recommended_version = decision.version.clone();
    }
    status.decision = Some(decision);
    status.pending = Some(PendingIteration {
        iteration,
        weights: next.weights.clone(),
        next_phase: if terminal {
            Phase::Completed
        } else {
            Phase::Running
        },
        ledger: Some(next),
    });
    status
}

/// The pending iteration's split is on the router: the iteration is completed and recorded.
pub fn applied(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    pending: PendingIteration,
    at: &Stamp,
) -> Transition {
    let summary = weights_summary(&spec.versions, &pending.weights);
    set(
        &mut status,
        at,
        TRAFFIC_APPLIED,
        true,
        "Applied",
        format!("split {summary} applied"),
    );
    status.completed_iterations = pending.iteration;
    status.consecutive_failures = 0;
    status.paused_at_generation = None;
    status.last_iteration_time = Some(at.now.clone());
    record_weights(spec, &mut status, &pending.weights);
    let decision = status.decision.clone();
    status.history.push(IterationRecord {
        iteration: pending.iteration,
        time: at.now.clone(),
        weights: pending.weights.clone(),
        action: decision.as_ref().map_or(Decided::Continue, |d| d.action),
        version: decision.as_ref().and_then(|d| d.version.clone()),
    });
    if pending.ledger.is_some() {
        // The answer's ledger is what the next request carries, now that its split is on.
        status.ledger = pending.ledger;
    }
    let excess = status.history.len().saturating_sub(HISTORY_LIMIT);
    status.history.drain(..excess);
    status.phase = pending.next_phase;
    status.pending = None;
    let why = decision
        .as_ref()
        .map(|d| d.reason.clone())
        .unwrap_or_default();
    let headline = decision
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    status.message = Some(format!(
        "iteration {}: {headline}; {summary}",
        pending.iteration
    ));
    let mut notes = vec![Note::normal(
        "Iteration",
        "Iterate",
        format!(
            "iteration {}: {headline} ({why}); split {summary}",
            pending.iteration
        ),
    )];
    let requeue = if status.phase.is_terminal() {
        let reason = completion_reason(decision.as_ref());
        set(&mut status, at, COMPLETED, true, reason, &why);
        set(&mut status, at, READY, true, "Completed", &why);
        notes.push(Note::normal(reason, "Complete", why));
        Requeue::AwaitChange
    } else {
        set(&mut status, at, READY, true, "Running", &why);
        Requeue::WhenDue
    };
    Transition {
        status,
        notes,
        requeue,
    }
}

/// A person ended the experiment; `weights` (the final split) is on the router.
pub fn terminated(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    weights: &[u32],
    at: &Stamp,
) -> Transition {
    record_weights(spec, &mut status, weights);
    status.phase = Phase::Aborted;
    status.pending = None;
    status.gate = None;
    let message = format!(
        "terminated by manualOverride; final split {}",
        weights_summary(&spec.versions, weights)
    );
    set(&mut status, at, TRAFFIC_APPLIED, true, "Applied", &message);
    set(&mut status, at, COMPLETED, true, "Terminated", &message);
    set(&mut status, at, READY, true, "Terminated", &message);
    status.message = Some(message.clone());
    Transition {
        status,
        notes: vec![Note::normal("Terminated", "Terminate", message)],
        requeue: Requeue::AwaitChange,
    }
}

/// A person paused the experiment; `weights`, if given, is on the router.
pub fn paused(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    weights: Option<&[u32]>,
    at: &Stamp,
) -> Transition {
    if let Some(w) = weights {
        record_weights(spec, &mut status, w);
    }
    let held = current_weights(spec, &status);
    status.phase = Phase::Paused;
    let message = format!(
        "paused by manualOverride; holding {}",
        weights_summary(&spec.versions, &held)
    );
    set(&mut status, at, READY, true, "Paused", &message);
    status.message = Some(message.clone());
    Transition {
        status,
        notes: vec![Note::normal("Paused", "Pause", message)],
        requeue: Requeue::AwaitChange,
    }
}

/// The route gives `actual` instead of the recorded split (someone edited it, or added an
/// entry that is no version): after the recorded split is put back, this reports the drift.
/// `None` when there is no drift.
pub fn drift_corrected(
    spec: &ExperimentSpec,
    status: &ExperimentStatus,
    route: &str,
    actual: &RouteSplit,
    at: &Stamp,
) -> Option<Transition> {
    let expected = recorded_weights(status);
    if expected.is_empty() || (actual.versions == expected && actual.others == 0) {
        return None;
    }
    let others = if actual.others > 0 {
        format!(
            ", and weight {} on entries that are no version",
            actual.others
        )
    } else {
        String::new()
    };
    let note = format!(
        "{route} was changed outside the experiment ({}{others}); restoring {}",
        weights_summary(&spec.versions, &actual.versions),
        weights_summary(&spec.versions, &expected)
    );
    let mut status = status.clone();
    set(
        &mut status,
        at,
        TRAFFIC_APPLIED,
        true,
        "DriftCorrected",
        &note,
    );
    Some(Transition {
        status,
        notes: vec![Note::warning("TrafficDrift", "Reconcile", note)],
        requeue: Requeue::WhenDue,
    })
}

/// An attempt failed: the split stays where it is, the failure is counted and reported, and
/// the attempt is retried, until the failure policy's limit is reached; then the policy
/// pauses (hold the split until the spec changes) or rolls back (see [`Held::RollBack`]).
pub fn held(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    failure: &Failure,
    at: &Stamp,
) -> Held {
    status.consecutive_failures += 1;
    set(
        &mut status,
        at,
        failure.condition,
        false,
        failure.reason,
        &failure.message,
    );
    status.message = Some(failure.message.clone());
    let mut notes = vec![Note::warning(
        failure.reason,
        "Iterate",
        failure.message.clone(),
    )];
    let policy = &spec.failure_policy;
    if status.consecutive_failures < policy.max_consecutive_failures {
        return Held::Done(Transition {
            status,
            notes,
            requeue: Requeue::Retry,
        });
    }
    match policy.action {
        FailureAction::Rollback => Held::RollBack {
            status,
            weights: crate::plan::SpecExt::initial_weights_on_baseline(spec),
            notes,
        },
        FailureAction::Pause => {
            let message = format!(
                "{} failures in a row, the last: {}; failure policy: paused until the spec changes",
                status.consecutive_failures, failure.message
            );
            status.phase = Phase::Paused;
            status.paused_at_generation = at.generation;
            // A pending split that could not be applied is dropped: a paused experiment resumes
            // only on a spec change, with a fresh iteration, never by finishing this one.
            status.pending = None;
            too_many_failures(&mut status, &message, at);
            notes.push(Note::warning("FailurePolicy", "Pause", message));
            Held::Done(Transition {
                status,
                notes,
                requeue: Requeue::AwaitChange,
            })
        }
    }
}

/// The failure policy's rollback reached the router (`weights` on it), or there is no route
/// to roll back (`weights` is `None`): the experiment ends `Failed`.
pub fn rolled_back(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    weights: Option<&[u32]>,
    at: &Stamp,
) -> Transition {
    if let Some(w) = weights {
        record_weights(spec, &mut status, w);
    }
    let message = format!(
        "{} failures in a row, the last: {}; failure policy: all traffic back on the baseline",
        status.consecutive_failures,
        status.message.clone().unwrap_or_default()
    );
    status.phase = Phase::Failed;
    status.pending = None;
    set(&mut status, at, COMPLETED, true, "FailurePolicy", &message);
    too_many_failures(&mut status, &message, at);
    Transition {
        status,
        notes: vec![Note::warning("FailurePolicy", "Rollback", message)],
        requeue: Requeue::AwaitChange,
    }
}

/// The failure policy's rollback could not reach the router: traffic is not safe yet, so the
/// experiment does not end; the rollback is tried again. The rollback replaces any pending
/// iteration, so the retry (which finishes what is pending) puts all traffic on the baseline
/// and ends `Failed`, rather than applying a candidate's split and carrying on.
pub fn rollback_blocked(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    e: &RouterError,
) -> Transition {
    status.pending = Some(PendingIteration {
        iteration: status.completed_iterations,
        weights: crate::plan::SpecExt::initial_weights_on_baseline(spec),
        next_phase: Phase::Failed,
        ledger: None,
    });
    status.message = Some(format!(
        "{} failures in a row ({}); rolling back, but {e}",
        status.consecutive_failures,
        status.message.clone().unwrap_or_default()
    ));
    Transition {
        status,
        notes: Vec::new(),
        requeue: Requeue::Retry,
    }
}

/// The largest status, as JSON, the controller writes: the budget the CRD crate holds the
/// largest admitted experiment to (and `docs/experiments.md` promises), well under etcd's
/// 1.5 MiB so the spec, metadata and managed fields have room.
pub const STATUS_BUDGET: usize = iter8_crd::STATUS_SIZE_BUDGET;

/// Checks `status` against [`STATUS_BUDGET`] before it is written: within it, it is written
/// as it is; over it, [`too_large`] pauses the experiment on `previous` instead.
pub fn within_budget(
    status: ExperimentStatus,
    previous: ExperimentStatus,
    at: &Stamp,
) -> (ExperimentStatus, Vec<Note>) {
    let size = serde_json::to_vec(&status).map_or(0, |json| json.len());
    if size <= STATUS_BUDGET {
        return (status, Vec::new());
    }
    let t = too_large(previous, size, at);
    (t.status, t.notes)
}

/// A status of `size` bytes was about to be written, over [`STATUS_BUDGET`]: instead of a
/// write the API server refuses (retried for ever, with an analytics call each time), the
/// experiment keeps `previous` and pauses until the spec changes, saying why. A pending
/// iteration in `previous` is dropped, as the pause policy does: a paused experiment resumes
/// only on a spec change, never by finishing it.
pub fn too_large(mut previous: ExperimentStatus, size: usize, at: &Stamp) -> Transition {
    let message = format!(
        "the status would be {size} bytes, over the controller's budget of {STATUS_BUDGET} \
         bytes (etcd refuses large objects); paused until the spec changes, holding the split"
    );
    previous.phase = Phase::Paused;
    previous.paused_at_generation = at.generation;
    previous.pending = None;
    set(&mut previous, at, READY, false, "StatusTooLarge", &message);
    previous.message = Some(message.clone());
    Transition {
        status: previous,
        notes: vec![Note::warning("StatusTooLarge", "Iterate", message)],
        requeue: Requeue::AwaitChange,
    }
}

/// What deleting the experiment must put on the router before its finalizer goes: all traffic
/// on the baseline, unless the experiment ended (its end state is deliberate). An empty
/// `status.weights` does not mean the router was never set: Start writes the route before
/// the status, so a lost status write leaves the start split on the route with none recorded.
pub fn cleanup(spec: &ExperimentSpec, status: &ExperimentStatus) -> Option<Vec<u32>> {
    if status.phase.is_terminal() {
        return None;
    }
    Some(crate::plan::SpecExt::initial_weights_on_baseline(spec))
}

// ---------------------------------------------------------------------------------------------
// Approval gates

/// The most entries kept in `status.approvals`.
pub const APPROVALS_LIMIT: usize = 100;

/// What the reconciler saw of the approval the spec carries: the approval and the API
/// server's time of its write (see [`iter8_crd::approval_time`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Approved<'a> {
    /// `spec.approval`.
    pub approval: &'a Approval,
    /// When the API server took the write.
    pub at: Option<&'a Time>,
}

/// What a gate's webhook answered (see [`crate::reconcile`]): only a 2xx opens the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAnswer {
    /// It answered 2xx: the gate opens.
    Opened {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        code: u16,
    },
    /// It answered another status: the gate stays closed.
    Closed {
        /// The HTTP status.
        code: u16,
    },
    /// It could not be reached (refused, timed out): the gate stays closed.
    Unreachable(String),
    /// Its URL is not under one the controller allows: it is not called.
    NotAllowed(String),
}

/// What a gate does with the pending split.
#[derive(Debug, Clone, PartialEq)]
pub enum AtGate {
    /// No gate, or it opened: apply the split with this status (the approval recorded), then
    /// publish these Events.
    Pass(ExperimentStatus, Vec<Note>),
    /// Not open yet: write this transition; the router keeps its split.
    Wait(Transition),
    /// The timeout passed with `onTimeout: rollback`: put `weights` (all on the baseline) on
    /// the router, then [`gate_rolled_back`].
    RollBack {
        /// The status, the gate still recorded.
        status: ExperimentStatus,
        /// The baseline split.
        weights: Vec<u32>,
    },
}

/// The gate instance the pending split must pass and its settings, if any: the promotion
/// gate for a split that ends the experiment promoting a winner, the weight-increase gate for
/// a split that raises a candidate's weight. A rollback is never gated.
pub fn gate_for<'a>(
    spec: &'a ExperimentSpec,
    status: &ExperimentStatus,
    pending: &PendingIteration,
) -> Option<(String, &'a Gate)> {
    let gates = spec.gates.as_ref()?;
    if pending.next_phase == Phase::Failed {
        return None;
    }
    let promotes = pending.next_phase == Phase::Completed
        && status
            .decision
            .as_ref()
            .is_some_and(|d| d.action == Decided::Promote);
    if promotes && let Some(gate) = &gates.promotion {
        return Some((gate_name("promotion", pending.iteration), gate));
    }
    let current = current_weights(spec, status);
    let raises = pending
        .weights
        .iter()
        .zip(&current)
        .skip(1)
        .any(|(next, now)| next > now);
    match &gates.weight_increase {
        Some(gate) if raises => Some((gate_name("weightIncrease", pending.iteration), gate)),
        _ => None,
    }
}

/// Decides whether the pending split passes its gate. An approval opens only the gate
/// instance it names (one gate, one iteration): an approval of an earlier gate left in the
/// spec is ignored. Waiting is not a failure: the failure policy does not count it. The
/// `AwaitingApproval` Event is published once, when the wait starts.
pub fn at_gate(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    pending: &PendingIteration,
    approved: Option<Approved<'_>>,
    webhook: Option<&WebhookAnswer>,
    at: &Stamp,
) -> AtGate {
    let Some((name, gate)) = gate_for(spec, &status, pending) else {
        status.gate = None;
        return AtGate::Pass(status, Vec::new());
    };
    if let Some(a) = approved.filter(|a| a.approval.gate == name) {
        let message = format!("{name} approved by {}", a.approval.by);
        let record = ApprovalRecord {
            gate: name,
            by: a.approval.by.clone(),
            at: a.at.cloned(),
        };
        return opened(status, record, &message, at);
    }
    if let Some(WebhookAnswer::Opened { url, code }) = webhook {
        let message = format!("{name} approved by webhook {url} (HTTP {code})");
        let record = ApprovalRecord {
            gate: name,
            by: format!("webhook {url}"),
            at: Some(at.now.clone()),
        };
        return opened(status, record, &message, at);
    }
    let what = format!(
        "{} split {}",
        if name.starts_with("promotion") {
            "the promotion,"
        } else {
            "the weight increase,"
        },
        weights_summary(&spec.versions, &pending.weights)
    );
    let mut notes = Vec::new();
    let since = match &status.gate {
        Some(g) if g.name == name => g.since.clone(),
        _ => {
            notes.push(Note::normal(
                "AwaitingApproval",
                "Gate",
                format!("gate {name} waits for approval of {what}"),
            ));
            status.gate = Some(GateStatus {
                name: name.clone(),
                since: at.now.clone(),
                timed_out: false,
            });
            at.now.clone()
        }
    };
    let timeout = gate.timeout.as_deref().and_then(iter8_crd::parse_duration);
    let waited = crate::plan::system_time(&at.now)
        .duration_since(crate::plan::system_time(&since))
        .unwrap_or_default();
    let expired = timeout.is_some_and(|t| waited >= t);
    if expired && gate.on_timeout == GateTimeoutAction::Rollback {
        let message = format!(
            "gate {name} not approved within {}: all traffic back on the baseline",
            gate.timeout.as_deref().unwrap_or_default()
        );
        set(&mut status, at, GATE_OPEN, false, "GateTimedOut", &message);
        status.message = Some(message);
        return AtGate::RollBack {
            status,
            weights: crate::plan::SpecExt::initial_weights_on_baseline(spec),
        };
    }
    let (reason, message) = if expired {
        let message = format!(
            "gate {name} not approved within {}; holding the split, still waiting for approval \
             of {what}",
            gate.timeout.as_deref().unwrap_or_default()
        );
        if let Some(g) = status.gate.as_mut().filter(|g| !g.timed_out) {
            g.timed_out = true;
            notes.push(Note::warning("GateTimedOut", "Gate", message.clone()));
        }
        ("GateTimedOut", message)
    } else {
        (
            "AwaitingApproval",
            format!("gate {name} waits for approval of {what}"),
        )
    };
    let (reason, message) = match webhook {
        Some(WebhookAnswer::Closed { code }) => (
            reason,
            format!("{message}; its webhook answered HTTP {code}"),
        ),
        Some(WebhookAnswer::Unreachable(e)) => (
            reason,
            format!("{message}; its webhook is unreachable: {e}"),
        ),
        Some(WebhookAnswer::NotAllowed(url)) => (
            "WebhookNotAllowed",
            format!(
                "{message}; its webhook {url} is not called: it is under no URL the controller \
                 allows (--gate-webhook-allowed-urls)"
            ),
        ),
        _ => (reason, message),
    };
    // The plan asks a gate only with no pause in force: a paused experiment resumed at its
    // gate waits Running, not Paused.
    if status.phase == Phase::Paused {
        status = attempted(status);
        set(&mut status, at, READY, true, "Running", &message);
    }
    set(&mut status, at, GATE_OPEN, false, reason, &message);
    status.message = Some(message);
    AtGate::Wait(Transition {
        status,
        notes,
        requeue: Requeue::Retry,
    })
}

/// A gate opened: the wait ends, the approval is recorded (the oldest dropped past
/// [`APPROVALS_LIMIT`]), `GateOpen=True` and an `Approved` Event.
fn opened(
    mut status: ExperimentStatus,
    record: ApprovalRecord,
    message: &str,
    at: &Stamp,
) -> AtGate {
    status.gate = None;
    status.approvals.push(record);
    let excess = status.approvals.len().saturating_sub(APPROVALS_LIMIT);
    status.approvals.drain(..excess);
    set(&mut status, at, GATE_OPEN, true, "Approved", message);
    AtGate::Pass(status, vec![Note::normal("Approved", "Gate", message)])
}

/// A gate's timeout rolled back: `weights` (all on the baseline) is on the router, or there
/// is no route (`None`); the experiment ends `Failed`.
pub fn gate_rolled_back(
    spec: &ExperimentSpec,
    mut status: ExperimentStatus,
    weights: Option<&[u32]>,
    at: &Stamp,
) -> Transition {
    if let Some(w) = weights {
        record_weights(spec, &mut status, w);
    }
    let message = status.message.clone().unwrap_or_default();
    status.phase = Phase::Failed;
    status.pending = None;
    status.gate = None;
    set(&mut status, at, COMPLETED, true, "GateTimedOut", &message);
    set(&mut status, at, READY, false, "GateTimedOut", &message);
    Transition {
        status,
        notes: vec![Note::warning("GateTimedOut", "Rollback", message)],
        requeue: Requeue::AwaitChange,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The split in force: the recorded one, or the spec's starting split before any.
pub fn current_weights(spec: &ExperimentSpec, status: &ExperimentStatus) -> Vec<u32> {
    if status.weights.len() == spec.versions.len() {
        recorded_weights(status)
    } else {
        spec.initial_weights()
    }
}

/// The split recorded in status, in version order.
pub fn recorded_weights(status: &ExperimentStatus) -> Vec<u32> {
    status.weights.iter().map(|w| w.weight).collect()
}

/// Whether iteration `iteration` ends the experiment: the service said so, or it is the last
/// the spec allows (the controller stops there itself, whatever a service answers).
fn ends(spec: &ExperimentSpec, iteration: u32, decision: &Decision) -> bool {
    decision.action != Decided::Continue || iteration >= spec.duration.max_iterations
}

fn too_many_failures(status: &mut ExperimentStatus, message: &str, at: &Stamp) {
    set(status, at, READY, false, "TooManyFailures", message);
    status.message = Some(message.to_owned());
}

fn record_weights(spec: &ExperimentSpec, status: &mut ExperimentStatus, weights: &[u32]) {
    status.weights = spec
        .versions
        .iter()
        .zip(weights)
        .map(|(v, &weight)| VersionWeight {
            version: v.name.clone(),
            weight,
        })
        .collect();
    status.weights_summary = Some(weights_summary(&spec.versions, weights));
}

fn set(
    status: &mut ExperimentStatus,
    at: &Stamp,
    type_: &str,
    value: bool,
    reason: &str,
    message: impl Into<String>,
) {
    conditions::set(
        &mut status.conditions,
        type_,
        value,
        reason,
        message,
        at.generation,
        &at.now,
    );
}

/// The reason an ended experiment's `Completed` condition and Event carry.
pub fn completion_reason(decision: Option<&Decision>) -> &'static str {
    match decision.map(|d| d.action) {
        Some(Decided::Promote) => "Promoted",
        Some(Decided::Rollback) => "RolledBack",
        Some(Decided::Inconclusive) => "Inconclusive",
        _ => "Completed",
    }
}

/// `t` plus `d`; `None` past the end of time.
fn after(t: &Time, d: Duration) -> Option<Time> {
    let d = SignedDuration::try_from(d).ok()?;
    t.0.checked_add(d).ok().map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iter8_api::Action;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn spec_with(edit: impl FnOnce(&mut serde_json::Value)) -> ExperimentSpec {
        let mut spec = json!({
            "kind": "canary",
            "versions": [{"name": "stable", "backend": {"name": "s"}},
                         {"name": "next", "backend": {"name": "n"}}],
            "router": {"httpRoute": {"name": "r"}},
            "duration": {"interval": "30s", "maxIterations": 5},
            "failurePolicy": {"maxConsecutiveFailures": 3}
        });
        edit(&mut spec);
        serde_json::from_value(spec).expect("valid spec")
    }

    fn spec() -> ExperimentSpec {
        spec_with(|_| {})
    }

    fn stamp(seconds: i64) -> Stamp {
        Stamp {
            now: Time(Timestamp::from_second(seconds).expect("valid")),
            generation: Some(4),
        }
    }

    fn running(completed: u32, weights: [u32; 2]) -> ExperimentStatus {
        let mut status = started(
            &spec(),
            ExperimentStatus::default(),
            &[100, 0],
            Duration::ZERO,
            &stamp(1000),
        )
        .status;
        status.completed_iterations = completed;
        record_weights(&spec(), &mut status, &weights);
        status
    }

    fn answer(iteration: u32, action: Action, split: [u32; 2]) -> AssessmentResponse {
        serde_json::from_value(json!({
            "iteration": iteration,
            "algorithm": "safe",
            "seed": 7,
            "versions": [
                {"name": "stable", "metrics": [], "criteria": [], "probabilityAllCriteria": 0.5, "winProbability": 0.5},
                {"name": "next", "metrics": [], "criteria": [], "probabilityAllCriteria": 0.5, "winProbability": 0.5}
            ],
            "decision": {
                "action": action,
                "version": (action == Action::Promote).then_some("next"),
                "reason": "because"
            },
            "split": [{"version": "stable", "weight": split[0]}, {"version": "next", "weight": split[1]}]
        }))
        .expect("valid answer")
    }

    fn ledger(completed: u32, weights: [u32; 2]) -> Ledger {
        Ledger {
            completed,
            weights: weights.to_vec(),
            evidence: None,
        }
    }

    fn condition(status: &ExperimentStatus, type_: &str) -> (String, String) {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
            .unwrap_or_default()
    }

    fn reasons(t: &Transition) -> Vec<&'static str> {
        t.notes.iter().map(|n| n.reason).collect()
    }

    /// Decides iteration `iteration` on `answer` from `status`, then applies it.
    fn iterate(
        spec: &ExperimentSpec,
        status: ExperimentStatus,
        iteration: u32,
        answer: AssessmentResponse,
    ) -> (ExperimentStatus, Transition) {
        let before = status.ledger(spec);
        let decided = decided(spec, status, iteration, &before, answer, &stamp(2000));
        let pending = decided.pending.clone().expect("a decision is pending");
        let applied = applied(spec, decided.clone(), pending, &stamp(2001));
        (decided, applied)
    }

    #[test]
    fn start_records_the_split_running_and_ready() {
        let t = started(
            &spec(),
            ExperimentStatus::default(),
            &[100, 0],
            Duration::from_secs(7),
            &stamp(1000),
        );
        assert_eq!(t.status.phase, Phase::Running);
        assert_eq!(recorded_weights(&t.status), [100, 0]);
        assert_eq!(t.status.start_time, Some(stamp(1000).now));
        // One interval (the spec's 30s) plus the offset.
        assert_eq!(t.status.first_iteration_due, Some(stamp(1037).now));
        assert_eq!(
            condition(&t.status, READY),
            ("True".into(), "Started".into())
        );
        assert_eq!(
            condition(&t.status, TRAFFIC_APPLIED),
            ("True".into(), "Applied".into())
        );
        assert_eq!(reasons(&t), ["Started"]);
        assert_eq!(t.requeue, Requeue::WhenDue);
    }

    #[test]
    fn each_decision_is_pending_first_then_applied_as_its_phase_says() {
        // (decision, answered split, split applied, phase after, event reasons, requeue)
        let cases = [
            (
                Action::Continue,
                [60, 40],
                [60, 40],
                Phase::Running,
                vec!["Iteration"],
                Requeue::WhenDue,
            ),
            (
                Action::Promote,
                [0, 100],
                [0, 100],
                Phase::Completed,
                vec!["Iteration", "Promoted"],
                Requeue::AwaitChange,
            ),
            (
                Action::Rollback,
                [100, 0],
                [100, 0],
                Phase::Completed,
                vec!["Iteration", "RolledBack"],
                Requeue::AwaitChange,
            ),
            // Inconclusive under the default termination policy: traffic goes back to the baseline.
            (
                Action::Inconclusive,
                [50, 50],
                [100, 0],
                Phase::Completed,
                vec!["Iteration", "Inconclusive"],
                Requeue::AwaitChange,
            ),
        ];
        for (action, split, expected, phase, events, requeue) in cases {
            let (decided, t) = iterate(&spec(), running(1, [80, 20]), 2, answer(2, action, split));
            let pending = decided.pending.clone().expect("pending");
            assert_eq!(pending.iteration, 2, "{action:?}");
            assert_eq!(pending.weights, expected, "{action:?}");
            assert_eq!(
                decided.phase,
                Phase::Running,
                "{action:?}: nothing ends before the router"
            );
            assert_eq!(
                recorded_weights(&decided),
                [80, 20],
                "{action:?}: not applied yet"
            );
            assert_eq!(t.status.phase, phase, "{action:?}");
            assert_eq!(t.status.completed_iterations, 2, "{action:?}");
            assert_eq!(t.status.pending, None, "{action:?}");
            assert_eq!(recorded_weights(&t.status), expected, "{action:?}");
            assert_eq!(t.status.history.last().map(|r| r.iteration), Some(2));
            assert_eq!(t.status.history.last().map(|r| r.action), Some(action));
            assert_eq!(reasons(&t), events, "{action:?}");
            assert_eq!(t.requeue, requeue, "{action:?}");
        }
    }

    #[test]
    fn a_promotion_names_the_recommended_version() {
        let (_, t) = iterate(
            &spec(),
            running(1, [50, 50]),
            2,
            answer(2, Action::Promote, [0, 100]),
        );
        assert_eq!(t.status.recommended_version.as_deref(), Some("next"));
        assert_eq!(
            condition(&t.status, COMPLETED),
            ("True".into(), "Promoted".into())
        );
    }

    #[test]
    fn the_controller_stops_at_max_iterations_whatever_the_service_says() {
        // A service that always answers Continue, at the last iteration the spec allows.
        let (decided, t) = iterate(
            &spec(),
            running(4, [70, 30]),
            5,
            answer(5, Action::Continue, [60, 40]),
        );
        assert_eq!(
            decided.pending.as_ref().map(|p| p.next_phase),
            Some(Phase::Completed)
        );
        let decision = t.status.decision.clone().expect("decision");
        assert_eq!(decision.action, Action::Inconclusive);
        assert!(
            decision.reason.contains("maxIterations"),
            "{}",
            decision.reason
        );
        assert_eq!(t.status.phase, Phase::Completed);
        assert_eq!(recorded_weights(&t.status), [100, 0]);
        assert_eq!(t.requeue, Requeue::AwaitChange);
    }

    #[test]
    fn history_is_bounded() {
        let mut status = running(0, [100, 0]);
        for i in 1..=(HISTORY_LIMIT as u32 + 5) {
            let spec = spec_with(|s| s["duration"]["maxIterations"] = json!(100));
            status = iterate(&spec, status, i, answer(i, Action::Continue, [90, 10]))
                .1
                .status;
        }
        assert_eq!(status.history.len(), HISTORY_LIMIT);
        assert_eq!(status.history[0].iteration, 6);
    }

    #[test]
    fn missing_data_is_reported_and_the_iteration_goes_on() {
        let (status, notes) = collected(
            running(1, [80, 20]),
            2,
            Some("no data for next/errors"),
            &stamp(2000),
        );
        assert_eq!(
            condition(&status, METRICS_AVAILABLE),
            ("False".into(), "NoData".into())
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].warning && notes[0].message.contains("iteration 2"));
        let (status, notes) = collected(status, 2, None, &stamp(2001));
        assert_eq!(
            condition(&status, METRICS_AVAILABLE),
            ("True".into(), "Collected".into())
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn a_held_attempt_keeps_the_split_and_counts_until_the_policy() {
        let failure = Failure {
            condition: ANALYTICS_AVAILABLE,
            reason: "AnalyticsUnavailable",
            message: "down".into(),
        };
        let Held::Done(t) = held(&spec(), running(2, [70, 30]), &failure, &stamp(2000)) else {
            panic!("one failure is below the limit");
        };
        assert_eq!(t.status.consecutive_failures, 1);
        assert_eq!(recorded_weights(&t.status), [70, 30]);
        assert_eq!(t.status.phase, Phase::Running);
        assert_eq!(
            condition(&t.status, ANALYTICS_AVAILABLE),
            ("False".into(), "AnalyticsUnavailable".into())
        );
        assert_eq!(reasons(&t), ["AnalyticsUnavailable"]);
        assert_eq!(t.requeue, Requeue::Retry);
        // A completed iteration resets the count.
        let (_, done) = iterate(&spec(), t.status, 3, answer(3, Action::Continue, [60, 40]));
        assert_eq!(done.status.consecutive_failures, 0);
    }

    #[test]
    fn the_rollback_policy_ends_failed_only_once_traffic_is_on_the_baseline() {
        let failure = Failure::metrics(3, "backend down");
        let mut status = running(2, [70, 30]);
        status.consecutive_failures = 2;
        let Held::RollBack {
            status,
            weights,
            notes,
        } = held(&spec(), status, &failure, &stamp(2000))
        else {
            panic!("the third failure reaches the limit");
        };
        assert_eq!(weights, [100, 0]);
        assert_eq!(notes.len(), 1);
        // The router refused: not ended, retried.
        let mut with_pending = status.clone();
        with_pending.pending = Some(PendingIteration {
            iteration: 3,
            weights: vec![40, 60],
            next_phase: Phase::Running,
            ledger: None,
        });
        let blocked = rollback_blocked(
            &spec(),
            with_pending,
            &RouterError::Mismatch("edited".into()),
        );
        assert_eq!(blocked.status.phase, Phase::Running);
        assert_eq!(recorded_weights(&blocked.status), [70, 30]);
        assert_eq!(blocked.requeue, Requeue::Retry);
        // The retry finishes the rollback, not the candidate's pending split.
        let step = crate::plan::plan(&spec(), &blocked.status, Some(4), std::time::UNIX_EPOCH);
        let crate::plan::Step::FinishPending(retry) = step else {
            panic!("the retry finishes the rollback: {step:?}");
        };
        assert_eq!(
            (retry.weights, retry.next_phase),
            (vec![100, 0], Phase::Failed)
        );
        // The router took it: Failed, on the baseline.
        let t = rolled_back(&spec(), status, Some(&weights), &stamp(2001));
        assert_eq!(t.status.phase, Phase::Failed);
        assert_eq!(recorded_weights(&t.status), [100, 0]);
        assert_eq!(
            condition(&t.status, COMPLETED),
            ("True".into(), "FailurePolicy".into())
        );
        assert_eq!(
            condition(&t.status, READY),
            ("False".into(), "TooManyFailures".into())
        );
        assert!(
            t.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("backend down"))
        );
        assert_eq!(reasons(&t), ["FailurePolicy"]);
        assert_eq!(t.requeue, Requeue::AwaitChange);
    }

    #[test]
    fn the_pause_policy_holds_the_split_until_the_spec_changes() {
        let spec = spec_with(|s| {
            s["failurePolicy"] = json!({"maxConsecutiveFailures": 1, "action": "pause"})
        });
        let failure = Failure::router(&RouterError::Mismatch("no backend".into()));
        let Held::Done(t) = held(&spec, running(2, [70, 30]), &failure, &stamp(2000)) else {
            panic!("pause needs no router write");
        };
        assert_eq!(t.status.phase, Phase::Paused);
        assert_eq!(t.status.paused_at_generation, Some(4));
        assert_eq!(recorded_weights(&t.status), [70, 30]);
        assert_eq!(reasons(&t), ["RouterMismatch", "FailurePolicy"]);
        assert_eq!(t.requeue, Requeue::AwaitChange);
        // A pending iteration whose split could not be applied is dropped: the paused
        // experiment waits for the spec to change rather than finish it.
        let mut with_pending = running(2, [70, 30]);
        with_pending.pending = Some(PendingIteration {
            iteration: 3,
            weights: vec![40, 60],
            next_phase: Phase::Running,
            ledger: None,
        });
        let Held::Done(p) = held(&spec, with_pending, &failure, &stamp(2000)) else {
            panic!("pause needs no router write");
        };
        assert_eq!(p.status.pending, None);
        let step = crate::plan::plan(&spec, &p.status, Some(4), std::time::UNIX_EPOCH);
        assert!(
            matches!(step, crate::plan::Step::Idle),
            "a paused experiment waits: {step:?}"
        );
        // A newer spec resumes it.
        let resumed = attempted(t.status);
        assert_eq!(
            (resumed.phase, resumed.paused_at_generation),
            (Phase::Running, None)
        );
    }

    fn read(name: &str, digest: Option<&str>) -> MetricRead {
        MetricRead {
            name: name.into(),
            resource: format!("team/{name}-metric"),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn a_metric_changed_mid_run_pauses_and_its_restored_spec_goes_on() {
        let spec = spec();
        let first = [read("latency", Some("aa")), read("errors", Some("bb"))];
        // First read: recorded, nothing else changes.
        let MetricsChecked::Unchanged(recorded) =
            metrics_checked(&spec, running(1, [70, 30]), 2, &first, &stamp(2000))
        else {
            panic!("the first read records");
        };
        assert_eq!(
            recorded.metric_digests,
            [
                ("errors".into(), "bb".into()),
                ("latency".into(), "aa".into())
            ]
            .into()
        );
        assert_eq!(recorded.phase, Phase::Running);
        // (what was read, whether it goes on, the words the condition must carry)
        let table: [(&[MetricRead], bool, &str); 3] = [
            (&first, true, ""),
            (
                &[read("latency", Some("cc")), read("errors", Some("bb"))],
                false,
                "Metric team/latency-metric (`latency`) changed",
            ),
            (
                &[read("latency", Some("cc")), read("errors", Some("dd"))],
                false,
                "`latency`) changed, Metric team/errors-metric (`errors`) changed",
            ),
        ];
        for (now, goes_on, words) in table {
            match metrics_checked(&spec, recorded.clone(), 3, now, &stamp(2100)) {
                MetricsChecked::Unchanged(status) => {
                    assert!(goes_on, "{now:?}");
                    assert_eq!(status, recorded, "nothing to record: {now:?}");
                }
                MetricsChecked::Changed(t) => {
                    assert!(!goes_on, "{now:?}");
                    // Held where it is, not counted as a failure, waiting for a person.
                    assert_eq!(t.status.phase, Phase::Paused);
                    assert_eq!(t.status.paused_at_generation, Some(4));
                    assert_eq!(recorded_weights(&t.status), [70, 30]);
                    assert_eq!(t.status.consecutive_failures, 0);
                    assert_eq!(t.status.metric_digests, recorded.metric_digests);
                    assert_eq!(
                        condition(&t.status, METRICS_AVAILABLE),
                        ("False".into(), "MetricChanged".into())
                    );
                    assert_eq!(
                        condition(&t.status, READY),
                        ("False".into(), "MetricChanged".into())
                    );
                    let message = t.status.message.clone().unwrap_or_default();
                    assert!(message.contains(words), "{message}");
                    assert!(message.contains("iter8 resume"), "{message}");
                    assert!(message.contains("holding stable=70,next=30"), "{message}");
                    assert_eq!(reasons(&t), ["MetricChanged"]);
                    assert!(t.notes[0].warning);
                    assert_eq!(t.requeue, Requeue::AwaitChange);
                    let step = crate::plan::plan(&spec, &t.status, Some(4), std::time::UNIX_EPOCH);
                    assert!(matches!(step, crate::plan::Step::Idle), "{step:?}");
                    // `iter8 resume` moves the generation: the next attempt reads again, and
                    // a restored Metric goes on.
                    let resumed = attempted(t.status);
                    assert_eq!(resumed.phase, Phase::Running);
                    assert!(matches!(
                        metrics_checked(&spec, resumed, 3, &first, &stamp(2200)),
                        MetricsChecked::Unchanged(_)
                    ));
                }
                MetricsChecked::Missing(f) => panic!("{now:?}: {f:?}"),
            }
        }
    }

    #[test]
    fn a_metric_deleted_mid_run_is_a_failed_attempt_the_failure_policy_decides() {
        let spec = spec();
        let mut status = running(2, [50, 50]);
        status.metric_digests = [
            ("errors".into(), "bb".into()),
            ("latency".into(), "aa".into()),
        ]
        .into();
        let checked = metrics_checked(
            &spec,
            status,
            3,
            &[read("latency", Some("aa")), read("errors", None)],
            &stamp(2000),
        );
        let MetricsChecked::Missing(failure) = checked else {
            panic!("not a pause holding 50 % on the candidate unwatched: {checked:?}");
        };
        assert!(
            failure
                .message
                .contains("Metric team/errors-metric (`errors`) was deleted"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn digests_of_an_attempt_that_failed_before_assessment_are_not_kept() {
        let MetricsChecked::Unchanged(checked) = metrics_checked(
            &spec(),
            running(0, [100, 0]),
            1,
            &[read("latency", Some("aa"))],
            &stamp(2000),
        ) else {
            panic!("the first read records");
        };
        assert!(!checked.metric_digests.is_empty());
        let held = unassessed(checked, &Default::default());
        assert!(
            held.metric_digests.is_empty(),
            "a fixed Metric is read afresh"
        );
        // The next attempt, with the Metric fixed, records the new definition and goes on.
        assert!(matches!(
            metrics_checked(&spec(), held, 1, &[read("latency", Some("ff"))], &stamp(2001)),
            MetricsChecked::Unchanged(s) if s.metric_digests.get("latency").map(String::as_str) == Some("ff")
        ));
    }

    #[test]
    fn a_metric_missing_before_it_was_ever_read_is_a_failed_attempt() {
        let checked = metrics_checked(
            &spec(),
            running(0, [100, 0]),
            1,
            &[read("latency", Some("aa")), read("errors", None)],
            &stamp(2000),
        );
        let MetricsChecked::Missing(failure) = checked else {
            panic!("{checked:?}");
        };
        assert_eq!(failure.reason, "BackendUnavailable");
        assert!(
            failure
                .message
                .contains("Metric team/errors-metric not found"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn pause_terminate_and_resume_by_a_person() {
        let p = paused(&spec(), running(2, [70, 30]), Some(&[50, 50]), &stamp(2000));
        assert_eq!(p.status.phase, Phase::Paused);
        assert_eq!(recorded_weights(&p.status), [50, 50]);
        assert_eq!(
            condition(&p.status, READY),
            ("True".into(), "Paused".into())
        );
        assert_eq!(reasons(&p), ["Paused"]);
        let held = paused(&spec(), running(2, [70, 30]), None, &stamp(2000));
        assert_eq!(recorded_weights(&held.status), [70, 30]);
        assert_eq!(attempted(p.status.clone()).phase, Phase::Running);
        let t = terminated(&spec(), p.status, &[100, 0], &stamp(2001));
        assert_eq!(t.status.phase, Phase::Aborted);
        assert_eq!(recorded_weights(&t.status), [100, 0]);
        assert_eq!(
            condition(&t.status, COMPLETED),
            ("True".into(), "Terminated".into())
        );
        assert_eq!(reasons(&t), ["Terminated"]);
        assert_eq!(t.requeue, Requeue::AwaitChange);
    }

    #[test]
    fn deletion_restores_the_baseline_unless_the_experiment_ended() {
        assert_eq!(cleanup(&spec(), &running(2, [70, 30])), Some(vec![100, 0]));
        // Start writes the route before the status: with no split recorded, the route may
        // still carry the start split, so it is restored too.
        assert_eq!(
            cleanup(&spec(), &ExperimentStatus::default()),
            Some(vec![100, 0]),
            "a start whose status write was lost"
        );
        let (_, done) = iterate(
            &spec(),
            running(1, [50, 50]),
            2,
            answer(2, Action::Promote, [0, 100]),
        );
        assert_eq!(
            cleanup(&spec(), &done.status),
            None,
            "an end state is deliberate"
        );
    }

    #[test]
    fn drift_is_reported_and_the_recorded_split_restored() {
        let split = |versions: [u32; 2], others: u32| RouteSplit {
            versions: versions.to_vec(),
            others,
        };
        let status = running(2, [70, 30]);
        let at = stamp(2000);
        assert_eq!(
            drift_corrected(&spec(), &status, "HTTPRoute r", &split([70, 30], 0), &at),
            None
        );
        let foreign = drift_corrected(&spec(), &status, "HTTPRoute r", &split([70, 30], 5), &at)
            .expect("an entry that is no version is drift");
        assert!(
            foreign.notes[0]
                .message
                .contains("weight 5 on entries that are no version")
        );
        let t = drift_corrected(&spec(), &status, "HTTPRoute r", &split([100, 0], 0), &at)
            .expect("drift");
        assert_eq!(recorded_weights(&t.status), [70, 30]);
        assert_eq!(
            condition(&t.status, TRAFFIC_APPLIED),
            ("True".into(), "DriftCorrected".into())
        );
        assert_eq!(reasons(&t), ["TrafficDrift"]);
        assert!(t.notes[0].warning);
        assert!(
            t.notes[0].message.contains("stable=100,next=0"),
            "{}",
            t.notes[0].message
        );
    }

    #[test]
    fn the_size_check_uses_the_crd_budget_and_drops_a_pending_iteration() {
        assert_eq!(STATUS_BUDGET, iter8_crd::STATUS_SIZE_BUDGET);
        let mut previous = running(3, [70, 30]);
        previous.pending = Some(PendingIteration {
            iteration: 4,
            weights: vec![40, 60],
            next_phase: Phase::Running,
            ledger: None,
        });
        let small = running(4, [60, 40]);
        let (kept, notes) = within_budget(small.clone(), previous.clone(), &stamp(2000));
        assert_eq!((kept, notes.len()), (small, 0));
        // Over the CRD's 640 KiB but under the 1 MiB the controller used to allow.
        let mut big = running(4, [60, 40]);
        big.message = Some("x".repeat(700 * 1024));
        let (paused, notes) = within_budget(big, previous, &stamp(2000));
        assert_eq!(paused.phase, Phase::Paused);
        assert_eq!(paused.pending, None);
        assert_eq!(notes.len(), 1);
        assert_eq!(
            crate::plan::plan(&spec(), &paused, Some(4), std::time::UNIX_EPOCH),
            crate::plan::Step::Idle
        );
    }

    #[test]
    fn a_status_over_the_budget_pauses_instead_of_failing_for_ever() {
        let previous = running(3, [70, 30]);
        let t = too_large(previous.clone(), STATUS_BUDGET + 1, &stamp(2000));
        assert_eq!(t.status.phase, Phase::Paused);
        assert_eq!(t.status.paused_at_generation, Some(4));
        assert_eq!(t.status.completed_iterations, 3);
        assert_eq!(recorded_weights(&t.status), [70, 30]);
        assert_eq!(
            condition(&t.status, READY),
            ("False".into(), "StatusTooLarge".into())
        );
        assert_eq!(reasons(&t), ["StatusTooLarge"]);
        assert!(serde_json::to_vec(&t.status).expect("json").len() < STATUS_BUDGET);
        // Paused by the controller: the plan waits for a newer spec.
        assert_eq!(
            crate::plan::plan(&spec(), &t.status, Some(4), std::time::SystemTime::now()),
            crate::plan::Step::Idle
        );
    }

    #[test]
    fn failures_name_their_condition_and_reason() {
        let cases = [
            (
                Failure::router(&RouterError::NotFound {
                    kind: "HTTPRoute",
                    name: "r".into(),
                }),
                TRAFFIC_APPLIED,
                "RouterNotFound",
            ),
            (
                Failure::router(&RouterError::Mismatch("x".into())),
                TRAFFIC_APPLIED,
                "RouterMismatch",
            ),
            (
                Failure::metrics(2, "down"),
                METRICS_AVAILABLE,
                "BackendUnavailable",
            ),
            (
                Failure::analytics(
                    &spec(),
                    2,
                    &[80, 20],
                    &crate::analytics::AnalyticsError::Garbage("short split".into()),
                ),
                ANALYTICS_AVAILABLE,
                "AnalyticsGarbage",
            ),
            (
                Failure::analytics(
                    &spec(),
                    2,
                    &[80, 20],
                    &crate::analytics::AnalyticsError::NotAllowed {
                        url: "http://x".into(),
                    },
                ),
                ANALYTICS_AVAILABLE,
                "AnalyticsNotAllowed",
            ),
        ];
        for (failure, condition, reason) in cases {
            assert_eq!((failure.condition, failure.reason), (condition, reason));
        }
    }

    #[test]
    fn traffic_waits_for_versions_not_ready_and_moves_once_they_are() {
        let not_ready = |reason: &'static str, message: &str| NotReady {
            reason,
            message: message.into(),
        };
        let at = stamp(2000);
        // Before the start: the experiment stays Pending, nothing recorded, checked again.
        let missing = not_ready("ServiceNotFound", "version next: Service n not found");
        let t = awaiting_versions(ExperimentStatus::default(), "the start", &missing, &at);
        assert_eq!(t.status.phase, Phase::Pending);
        assert!(t.status.weights.is_empty() && t.status.start_time.is_none());
        assert_eq!(
            condition(&t.status, VERSIONS_READY),
            ("False".into(), "ServiceNotFound".into())
        );
        assert_eq!(
            t.status.message.as_deref(),
            Some(
                "waiting for versions to be ready before the start: version next: Service n not found"
            )
        );
        assert_eq!(reasons(&t), ["VersionsNotReady"]);
        assert!(t.notes[0].warning);
        assert_eq!(t.requeue, Requeue::Retry);
        // The same wait again: no second Event, and the plan still starts it next time.
        let again = awaiting_versions(t.status.clone(), "the start", &missing, &at);
        assert!(again.notes.is_empty());
        assert!(matches!(
            crate::plan::plan(&spec(), &again.status, Some(4), std::time::UNIX_EPOCH),
            crate::plan::Step::Start { .. }
        ));
        // The reason changes (the Service appeared, the Deployment is not Available): one Event.
        let unavailable = not_ready(
            "DeploymentNotAvailable",
            "version next: Deployment n has 0 of 1 replicas available",
        );
        let changed = awaiting_versions(again.status, "the start", &unavailable, &at);
        assert_eq!(reasons(&changed), ["VersionsNotReady"]);
        // Ready: the condition turns True and the start proceeds.
        let ready = versions_ready(changed.status, "ready: stable, next", &at);
        assert_eq!(
            condition(&ready, VERSIONS_READY),
            ("True".into(), "Ready".into())
        );
        let started = started(&spec(), ready, &[100, 0], Duration::ZERO, &stamp(2001));
        assert_eq!(started.status.phase, Phase::Running);

        // Mid-experiment, a weight increase waits: the split in force and the ledger stay,
        // nothing is pending, the failure policy does not count it, the iteration is redone.
        let mut status = running(2, [80, 20]);
        status.ledger = Some(ledger(2, [80, 20]));
        let t = awaiting_versions(status.clone(), "iteration 3", &unavailable, &at);
        assert_eq!(recorded_weights(&t.status), [80, 20]);
        assert_eq!(t.status.pending, None);
        assert_eq!(t.status.ledger, status.ledger);
        assert_eq!(t.status.consecutive_failures, 0);
        assert_eq!(t.status.completed_iterations, 2);
        assert_eq!(t.status.phase, Phase::Running);
        assert_eq!(
            crate::plan::plan(&spec(), &t.status, Some(4), std::time::SystemTime::now()),
            crate::plan::Step::Iterate { iteration: 3 }
        );
        // Once ready, the same iteration is decided and its split applied.
        let ready = versions_ready(t.status, "ready: next", &stamp(2001));
        let (_, done) = iterate(&spec(), ready, 3, answer(3, Action::Continue, [60, 40]));
        assert_eq!(recorded_weights(&done.status), [60, 40]);
        assert_eq!(
            condition(&done.status, VERSIONS_READY),
            ("True".into(), "Ready".into())
        );
    }

    #[test]
    fn the_post_answer_ledger_waits_in_pending_until_the_split_is_applied() {
        let before = ledger(1, [80, 20]);
        let mut status = running(1, [80, 20]);
        status.ledger = Some(before.clone());
        let answered = answer(2, Action::Continue, [60, 40]);
        let decided = decided(&spec(), status, 2, &before, answered, &stamp(2000));
        assert_eq!(
            condition(&decided, ANALYTICS_AVAILABLE),
            ("True".into(), "Assessed".into())
        );
        assert_eq!(
            decided.ledger,
            Some(before),
            "a retry re-sends the pre-answer ledger"
        );
        let pending = decided.pending.clone().expect("pending");
        let after = pending.ledger.clone().expect("the post-answer ledger");
        assert_eq!((after.completed, after.weights.clone()), (2, vec![60, 40]));
        let t = applied(&spec(), decided, pending, &stamp(2001));
        assert_eq!(t.status.ledger, Some(after));
    }

    /// A spec with gates, and the status deciding iteration 3 on `action` from 80/20.
    fn gated(
        gates: serde_json::Value,
        action: Action,
        split: [u32; 2],
    ) -> (ExperimentSpec, ExperimentStatus, PendingIteration) {
        let spec = spec_with(|s| s["gates"] = gates);
        let before = running(2, [80, 20]);
        let ledger = before.ledger(&spec);
        let decided = decided(
            &spec,
            before,
            3,
            &ledger,
            answer(3, action, split),
            &stamp(2000),
        );
        let pending = decided.pending.clone().expect("pending");
        (spec, decided, pending)
    }

    /// The gate's answer with no approval and no webhook, which must be to wait.
    fn waits(
        spec: &ExperimentSpec,
        status: ExperimentStatus,
        pending: &PendingIteration,
        seconds: i64,
    ) -> Transition {
        match at_gate(spec, status, pending, None, None, &stamp(seconds)) {
            AtGate::Wait(t) => t,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    fn approval(gate: &str) -> Approval {
        Approval {
            gate: gate.into(),
            by: "alice".into(),
        }
    }

    /// A row of the gate table: gates, decision, split, approval given, gate named, outcome.
    type GateCase = (
        serde_json::Value,
        Action,
        [u32; 2],
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
    );

    #[test]
    fn each_gate_state_as_the_table_says() {
        let promotion = json!({"promotion": {}});
        let both = json!({"promotion": {}, "weightIncrease": {}});
        let approved_at = stamp(2050).now;
        // (gates, decision, split, approval given, gate named, outcome)
        let cases: [GateCase; 9] = [
            (json!({}), Action::Promote, [0, 100], None, None, "pass"),
            (
                promotion.clone(),
                Action::Continue,
                [60, 40],
                None,
                None,
                "pass",
            ),
            (
                promotion.clone(),
                Action::Rollback,
                [100, 0],
                None,
                None,
                "pass",
            ),
            (
                promotion.clone(),
                Action::Promote,
                [0, 100],
                None,
                Some("promotion@3"),
                "wait",
            ),
            (
                promotion.clone(),
                Action::Promote,
                [0, 100],
                Some("promotion@3"),
                Some("promotion@3"),
                "approved",
            ),
            (
                both.clone(),
                Action::Continue,
                [60, 40],
                None,
                Some("weightIncrease@3"),
                "wait",
            ),
            (both.clone(), Action::Continue, [90, 10], None, None, "pass"),
            // An approval of another gate instance (an earlier increase) opens nothing.
            (
                both.clone(),
                Action::Continue,
                [60, 40],
                Some("weightIncrease@2"),
                Some("weightIncrease@3"),
                "wait",
            ),
            (
                both,
                Action::Continue,
                [60, 40],
                Some("weightIncrease@3"),
                Some("weightIncrease@3"),
                "approved",
            ),
        ];
        for (gates, action, split, given, named, outcome) in cases {
            let (spec, status, pending) = gated(gates.clone(), action, split);
            assert_eq!(
                gate_for(&spec, &status, &pending)
                    .map(|(n, _)| n)
                    .as_deref(),
                named,
                "{gates} {action:?} {split:?}"
            );
            let given = given.map(approval);
            let seen = given.as_ref().map(|a| Approved {
                approval: a,
                at: Some(&approved_at),
            });
            match (
                at_gate(&spec, status, &pending, seen, None, &stamp(2100)),
                outcome,
            ) {
                (AtGate::Pass(s, notes), "pass") => {
                    assert!(notes.is_empty() && s.gate.is_none() && s.approvals.is_empty());
                }
                (AtGate::Pass(s, notes), "approved") => {
                    assert_eq!(
                        s.approvals,
                        [ApprovalRecord {
                            gate: named.expect("named").into(),
                            by: "alice".into(),
                            at: Some(approved_at.clone()),
                        }]
                    );
                    assert_eq!(s.gate, None);
                    assert_eq!(condition(&s, GATE_OPEN), ("True".into(), "Approved".into()));
                    assert_eq!(
                        notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
                        ["Approved"]
                    );
                    // The split then goes on as any iteration does.
                    let t = applied(&spec, s, pending.clone(), &stamp(2101));
                    assert_eq!(recorded_weights(&t.status), split);
                }
                (AtGate::Wait(t), "wait") => {
                    let gate = t.status.gate.clone().expect("the gate is recorded");
                    assert_eq!(Some(gate.name.as_str()), named);
                    assert_eq!(gate.since, stamp(2100).now);
                    assert_eq!(
                        condition(&t.status, GATE_OPEN),
                        ("False".into(), "AwaitingApproval".into())
                    );
                    assert_eq!(reasons(&t), ["AwaitingApproval"]);
                    assert_eq!(recorded_weights(&t.status), [80, 20], "the split stays");
                    assert_eq!(t.status.pending.as_ref(), Some(&pending));
                    assert_eq!(t.status.consecutive_failures, 0);
                    assert_eq!(t.requeue, Requeue::Retry);
                    // The plan finishes the pending split again next time: the gate is asked again.
                    assert_eq!(
                        crate::plan::plan(&spec, &t.status, Some(4), std::time::UNIX_EPOCH),
                        crate::plan::Step::FinishPending(pending.clone())
                    );
                }
                (other, expected) => {
                    panic!("{gates} {action:?}: expected {expected}, got {other:?}")
                }
            }
        }
    }

    #[test]
    fn a_wait_publishes_awaiting_approval_once() {
        let (spec, status, pending) = gated(json!({"promotion": {}}), Action::Promote, [0, 100]);
        let first = waits(&spec, status, &pending, 2100);
        assert_eq!(reasons(&first), ["AwaitingApproval"]);
        assert!(!first.notes[0].warning);
        assert!(
            first.notes[0].message.contains("promotion@3"),
            "{}",
            first.notes[0].message
        );
        let again = waits(&spec, first.status.clone(), &pending, 2200);
        assert!(again.notes.is_empty(), "no second Event for the same wait");
        assert_eq!(
            again.status, first.status,
            "nothing to write while it waits"
        );
    }

    #[test]
    fn a_timeout_holds_or_rolls_back_as_the_gate_says() {
        let hold = json!({"promotion": {"timeout": "10m"}});
        let (spec, status, pending) = gated(hold, Action::Promote, [0, 100]);
        let waiting = waits(&spec, status, &pending, 2000);
        let before = waits(&spec, waiting.status.clone(), &pending, 2599);
        assert!(before.notes.is_empty());
        // Hold: the split stays, the condition and one Warning say the timeout passed, and an
        // approval still opens the gate.
        let held = waits(&spec, before.status, &pending, 2600);
        assert_eq!(reasons(&held), ["GateTimedOut"]);
        assert!(held.notes[0].warning);
        assert!(held.status.gate.as_ref().is_some_and(|g| g.timed_out));
        assert_eq!(
            condition(&held.status, GATE_OPEN),
            ("False".into(), "GateTimedOut".into())
        );
        assert_eq!(recorded_weights(&held.status), [80, 20]);
        let later = waits(&spec, held.status.clone(), &pending, 3000);
        assert!(later.notes.is_empty());
        let late = approval("promotion@3");
        let seen = Approved {
            approval: &late,
            at: None,
        };
        assert!(matches!(
            at_gate(
                &spec,
                later.status,
                &pending,
                Some(seen),
                None,
                &stamp(3001)
            ),
            AtGate::Pass(..)
        ));

        // Rollback: all traffic to the baseline, the experiment Failed.
        let rollback = json!({"promotion": {"timeout": "10m", "onTimeout": "rollback"}});
        let (spec, status, pending) = gated(rollback, Action::Promote, [0, 100]);
        let waiting = waits(&spec, status, &pending, 2000);
        let AtGate::RollBack { status, weights } =
            at_gate(&spec, waiting.status, &pending, None, None, &stamp(2600))
        else {
            panic!("rolls back");
        };
        assert_eq!(weights, [100, 0]);
        let t = gate_rolled_back(&spec, status, Some(&weights), &stamp(2601));
        assert_eq!(t.status.phase, Phase::Failed);
        assert_eq!(recorded_weights(&t.status), [100, 0]);
        assert_eq!(
            (t.status.pending.clone(), t.status.gate.clone()),
            (None, None)
        );
        assert_eq!(
            condition(&t.status, COMPLETED),
            ("True".into(), "GateTimedOut".into())
        );
        assert_eq!(reasons(&t), ["GateTimedOut"]);
        assert_eq!(t.requeue, Requeue::AwaitChange);
    }

    #[test]
    fn a_person_can_terminate_an_experiment_held_at_a_gate() {
        let (spec, status, pending) = gated(json!({"promotion": {}}), Action::Promote, [0, 100]);
        let waiting = waits(&spec, status, &pending, 2000);
        let mut spec = spec;
        spec.manual_override = Some(iter8_crd::ManualOverride {
            action: iter8_crd::OverrideAction::Terminate,
            split: None,
        });
        let step = crate::plan::plan(&spec, &waiting.status, Some(5), std::time::UNIX_EPOCH);
        let crate::plan::Step::Terminate { weights } = step else {
            panic!("terminate wins over the gate: {step:?}");
        };
        // The held promotion was never approved: terminate does not carry it out (toWinner
        // has no approved winner, so the baseline).
        assert_eq!(weights, [100, 0], "terminate must not open the gate");
        let t = terminated(&spec, waiting.status.clone(), &weights, &stamp(2001));
        assert_eq!(recorded_weights(&t.status), [100, 0]);
        assert_eq!(
            (t.status.phase, t.status.gate, t.status.pending),
            (Phase::Aborted, None, None)
        );
        // keepLast keeps the split in force, not the held one.
        spec.on_termination = iter8_crd::TerminationPolicy::KeepLast;
        assert_eq!(
            crate::plan::plan(&spec, &waiting.status, Some(5), std::time::UNIX_EPOCH),
            crate::plan::Step::Terminate {
                weights: vec![80, 20]
            }
        );
    }

    #[test]
    fn a_gate_paused_then_resumed_waits_running_not_paused() {
        let (spec, status, pending) = gated(json!({"promotion": {}}), Action::Promote, [0, 100]);
        let waiting = waits(&spec, status, &pending, 2000);
        let paused = paused(&spec, waiting.status, None, &stamp(2001));
        assert_eq!(paused.status.phase, Phase::Paused);
        let mut spec = spec;
        spec.manual_override = Some(iter8_crd::ManualOverride {
            action: iter8_crd::OverrideAction::Resume,
            split: None,
        });
        assert_eq!(
            crate::plan::plan(&spec, &paused.status, Some(6), std::time::UNIX_EPOCH),
            crate::plan::Step::FinishPending(pending.clone())
        );
        let resumed = waits(&spec, paused.status, &pending, 2002);
        assert_eq!(resumed.status.phase, Phase::Running, "resumed, at its gate");
        assert_eq!(
            condition(&resumed.status, READY),
            ("True".into(), "Running".into())
        );
        assert_eq!(
            resumed.status.gate.map(|g| g.since),
            Some(stamp(2000).now),
            "the same wait"
        );
    }

    #[test]
    fn an_open_gate_whose_versions_stopped_being_ready_says_so_and_waits_running() {
        let (spec, status, pending) = gated(json!({"promotion": {}}), Action::Promote, [0, 100]);
        let waiting = waits(&spec, status, &pending, 2000);
        let paused = paused(&spec, waiting.status, None, &stamp(2001));
        let not_ready = NotReady {
            reason: "DeploymentNotAvailable",
            message: "version next: Deployment n has 0 of 2 replicas available".into(),
        };
        let t =
            gate_open_awaiting_versions(paused.status, "promotion@3", 3, &not_ready, &stamp(2002));
        assert_eq!(t.status.phase, Phase::Running);
        assert_eq!(
            condition(&t.status, READY),
            ("True".into(), "Running".into())
        );
        assert_eq!(
            condition(&t.status, GATE_OPEN),
            ("False".into(), "AwaitingVersions".into())
        );
        assert_eq!(
            condition(&t.status, VERSIONS_READY),
            ("False".into(), "DeploymentNotAvailable".into())
        );
        assert!(
            t.status.gate.is_some(),
            "the opening is recorded only when traffic moves"
        );
        assert!(t.status.approvals.is_empty());
        assert_eq!(
            t.status.pending.as_ref(),
            Some(&pending),
            "the split stays pending"
        );
        assert_eq!(reasons(&t), ["VersionsNotReady"]);
        assert_eq!(t.requeue, Requeue::Retry);
    }

    #[test]
    fn the_approval_record_keeps_the_newest_hundred() {
        let (spec, mut status, pending) =
            gated(json!({"promotion": {}}), Action::Promote, [0, 100]);
        status.approvals = (0..APPROVALS_LIMIT as u32)
            .map(|i| ApprovalRecord {
                gate: gate_name("weightIncrease", i),
                by: "bob".into(),
                at: None,
            })
            .collect();
        let given = approval("promotion@3");
        let seen = Approved {
            approval: &given,
            at: None,
        };
        let AtGate::Pass(s, _) = at_gate(&spec, status, &pending, Some(seen), None, &stamp(2100))
        else {
            panic!("approved");
        };
        assert_eq!(s.approvals.len(), APPROVALS_LIMIT);
        assert_eq!(
            s.approvals[0].gate, "weightIncrease@1",
            "the oldest is dropped"
        );
        assert_eq!(s.approvals[APPROVALS_LIMIT - 1].gate, "promotion@3");
    }

    #[test]
    fn a_webhook_opens_the_gate_only_with_a_2xx() {
        let gates = json!({"promotion": {"webhook": {"url": "http://approver/confirm"}}});
        let (spec, status, pending) = gated(gates, Action::Promote, [0, 100]);
        let url = "http://approver/confirm".to_string();
        let closed = [
            (
                WebhookAnswer::Closed { code: 500 },
                "AwaitingApproval",
                "answered HTTP 500",
            ),
            (
                WebhookAnswer::Unreachable("connection refused".into()),
                "AwaitingApproval",
                "unreachable: connection refused",
            ),
            (
                WebhookAnswer::NotAllowed(url.clone()),
                "WebhookNotAllowed",
                "--gate-webhook-allowed-urls",
            ),
        ];
        let mut waiting = status;
        for (answer, reason, says) in closed {
            let AtGate::Wait(t) = at_gate(
                &spec,
                waiting.clone(),
                &pending,
                None,
                Some(&answer),
                &stamp(2100),
            ) else {
                panic!("{answer:?} keeps the gate closed");
            };
            assert_eq!(
                condition(&t.status, GATE_OPEN),
                ("False".into(), reason.into())
            );
            assert!(
                t.status
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains(says)),
                "{:?}",
                t.status.message
            );
            assert_eq!(recorded_weights(&t.status), [80, 20]);
            waiting = t.status;
        }
        let opened = WebhookAnswer::Opened {
            url: url.clone(),
            code: 204,
        };
        let AtGate::Pass(s, notes) =
            at_gate(&spec, waiting, &pending, None, Some(&opened), &stamp(2200))
        else {
            panic!("a 2xx opens it");
        };
        assert_eq!(
            s.approvals,
            [ApprovalRecord {
                gate: "promotion@3".into(),
                by: format!("webhook {url}"),
                at: Some(stamp(2200).now),
            }]
        );
        assert_eq!(s.gate, None);
        assert_eq!(
            notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
            ["Approved"]
        );
    }
}
