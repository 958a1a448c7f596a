//! The reconciler: one Experiment, one step at a time.
//!
//! An iteration collects metrics, asks the analytics service, records the decided split in
//! status as *pending*, applies it to the router, then records the iteration as completed.
//! A controller that stops anywhere in between either redoes an iteration nothing was recorded
//! for, or finishes the pending one without deciding again: no iteration is applied twice
//! and none is skipped. Status writes carry the resourceVersion they read, so two controllers
//! can never both record the same iteration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use iter8_api::{Action as Decided, Observation, VersionWeight};
use iter8_crd::{
    Experiment, ExperimentStatus, FailureAction, HISTORY_LIMIT, IterationRecord, Metric,
    PendingIteration, Phase, weights_summary,
};
use iter8_metrics::{Credentials, MetricsBackend, MetricsError, Query};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use crate::analytics::{AnalyticsClient, AnalyticsError};
use crate::conditions::{
    self, ANALYTICS_AVAILABLE, COMPLETED, METRICS_AVAILABLE, READY, TRAFFIC_APPLIED,
};
use crate::conflict;
use crate::plan::{self, SpecExt, Step, parse_interval, system_time};
use crate::router::{KubeRouter, RouteTarget, RouterError};
use crate::superseded::Superseded;
use crate::telemetry::Telemetry;

/// The finalizer that puts traffic back on the baseline when a running experiment is deleted.
pub const FINALIZER: &str = "iter8.tools/restore-traffic";

/// What the reconciler needs.
pub struct Context<M> {
    /// The API server.
    pub client: kube::Client,
    /// Router access.
    pub router: KubeRouter,
    /// The analytics client.
    pub analytics: AnalyticsClient,
    /// Where metrics come from.
    pub metrics: M,
    /// Controller-wide settings.
    pub settings: Settings,
    /// The controller's own metrics.
    pub telemetry: Telemetry,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Holds reconciles at a stage of an iteration; `None` outside tests.
    pub gate: Option<Arc<StageGate>>,
    /// The versions of Experiments our own writes replaced, to skip stale cached copies.
    pub superseded: Superseded,
}

/// The points of an iteration a [`StageGate`] can hold it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Metrics collected; nothing written yet.
    MetricsCollected,
    /// The analytics answered; nothing written yet.
    AnalyticsAnswered,
    /// The decision is recorded as pending; the router is not changed yet.
    DecisionRecorded,
    /// The router carries the new split; the iteration is not recorded as completed yet.
    TrafficApplied,
}

/// A test seam: every reconcile that reaches `stage` (from iteration `from_iteration` on)
/// stops there for good, after notifying `reached`. Aborting the controller then is a crash at
/// exactly that point.
#[derive(Debug)]
pub struct StageGate {
    /// Where to hold.
    pub stage: Stage,
    /// The first iteration held.
    pub from_iteration: u32,
    /// Notified when a reconcile is held.
    pub reached: tokio::sync::Notify,
}

impl StageGate {
    async fn pass(gate: Option<&Arc<StageGate>>, stage: Stage, iteration: u32) {
        if let Some(g) = gate
            && g.stage == stage
            && iteration >= g.from_iteration
        {
            g.reached.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// Controller-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The analytics service used when an experiment names none.
    pub analytics_url: String,
    /// How soon to try again after a failure (metrics, analytics, router).
    pub retry_after: Duration,
}

/// Errors that make a reconcile fail (and be retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server failed (including 409 conflicts on status writes).
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The Experiment has no namespace.
    #[error("experiment has no namespace")]
    MissingNamespace,
}

/// Reconciles one Experiment.
pub async fn reconcile<M: MetricsBackend>(
    exp: Arc<Experiment>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    let ns = exp.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<Experiment> = Api::namespaced(ctx.client.clone(), &ns);
    let key = format!("{ns}/{}", exp.name_any());
    if ctx
        .superseded
        .is_stale(&key, exp.resource_version().as_deref())
    {
        // The cache still shows a copy we wrote over; the watch event of our write triggers
        // a reconcile of the current one, and the requeue covers a lost event.
        ctx.telemetry.reconciles.with_label_values(&["stale"]).inc();
        return Ok(Action::requeue(ctx.settings.retry_after));
    }
    let phase = (exp.meta().deletion_timestamp.is_none())
        .then(|| exp.status.as_ref().map(|s| s.phase).unwrap_or_default());
    ctx.telemetry.observe_phase(&key, phase);
    // A copy without our finalizer gets it added, by a patch that replaces this version.
    let adds_finalizer = phase.is_some() && !exp.finalizers().iter().any(|f| f == FINALIZER);
    let version = exp.resource_version();
    let outcome = finalizer(&api, FINALIZER, exp, |event| async {
        match event {
            Finalizer::Apply(exp) => Reconciler::new(&ctx, &api, &exp, &ns).apply().await,
            Finalizer::Cleanup(exp) => Reconciler::new(&ctx, &api, &exp, &ns).cleanup().await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if adds_finalizer && outcome.is_ok() {
        ctx.superseded.replaced(&key, version.as_deref());
    }
    let label = if outcome.is_ok() { "ok" } else { "error" };
    ctx.telemetry.reconciles.with_label_values(&[label]).inc();
    outcome
}

/// Requeues a failed reconcile after the retry delay.
pub fn error_policy<M>(exp: Arc<Experiment>, error: &Error, ctx: Arc<Context<M>>) -> Action {
    tracing::warn!(experiment = %exp.name_any(), %error, "reconcile failed");
    Action::requeue(ctx.settings.retry_after)
}

/// One reconcile of one Experiment.
struct Reconciler<'a, M> {
    ctx: &'a Context<M>,
    api: &'a Api<Experiment>,
    exp: &'a Experiment,
    ns: &'a str,
    target: Option<RouteTarget>,
}

impl<'a, M: MetricsBackend> Reconciler<'a, M> {
    fn new(
        ctx: &'a Context<M>,
        api: &'a Api<Experiment>,
        exp: &'a Experiment,
        ns: &'a str,
    ) -> Self {
        let target = exp.spec.router.as_ref().and_then(RouteTarget::of);
        Self {
            ctx,
            api,
            exp,
            ns,
            target,
        }
    }

    async fn apply(&self) -> Result<Action, Error> {
        let status = self.exp.status.clone().unwrap_or_default();
        match plan::plan(
            &self.exp.spec,
            &status,
            self.exp.meta().generation,
            SystemTime::now(),
        ) {
            Step::Idle => {
                if status.phase == Phase::Paused {
                    self.correct_drift(&status).await?;
                }
                Ok(Action::await_change())
            }
            Step::Wait(_) => {
                self.correct_drift(&status).await?;
                Ok(self.requeue_when_due(Some(&status)))
            }
            Step::Start { weights } => self.start(status, weights).await,
            Step::FinishPending(pending) => self.finish(status, pending).await,
            Step::Terminate { weights } => self.terminate(status, weights).await,
            Step::Pause { weights } => self.pause(status, weights).await,
            Step::Iterate { iteration } => self.iterate(status, iteration).await,
        }
    }

    /// On deletion, a running experiment hands all traffic back to the baseline.
    async fn cleanup(&self) -> Result<Action, Error> {
        let status = self.exp.status.clone().unwrap_or_default();
        // Nothing to restore when the experiment ended (its end state is deliberate) or
        // never set the router.
        if status.phase.is_terminal() || status.weights.is_empty() {
            return Ok(Action::await_change());
        }
        let baseline: Vec<u32> = (0..self.exp.spec.versions.len())
            .map(|i| if i == 0 { 100 } else { 0 })
            .collect();
        match self.set_router(&baseline).await {
            Ok(()) | Err(RouterError::NotFound { .. }) => {
                self.event(
                    EventType::Normal,
                    "TrafficRestored",
                    "Delete",
                    "experiment deleted while running; all traffic is back on the baseline",
                )
                .await;
                Ok(Action::await_change())
            }
            // Keep the finalizer until traffic is safe.
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "CleanupFailed",
                    "Delete",
                    &e.to_string(),
                )
                .await;
                Ok(Action::requeue(self.ctx.settings.retry_after))
            }
        }
    }

    async fn start(
        &self,
        mut status: ExperimentStatus,
        weights: Vec<u32>,
    ) -> Result<Action, Error> {
        let now = now();
        if let Err(e) = self.set_router(&weights).await {
            return self.router_failed(status, e).await;
        }
        status.phase = Phase::Running;
        status.start_time = Some(now.clone());
        self.record_weights(&mut status, &weights);
        let generation = self.exp.meta().generation;
        let conds = &mut status.conditions;
        conditions::set(
            conds,
            READY,
            true,
            "Started",
            "experiment started",
            generation,
            &now,
        );
        conditions::set(
            conds,
            TRAFFIC_APPLIED,
            true,
            "Applied",
            "starting split applied",
            generation,
            &now,
        );
        status.message = Some(format!("started with {}", self.summary(&weights)));
        let written = self.write(status).await?;
        self.event(
            EventType::Normal,
            "Started",
            "Start",
            &format!("starting split {}", self.summary(&weights)),
        )
        .await;
        Ok(self.requeue_when_due(written.status.as_ref()))
    }

    async fn iterate(&self, mut status: ExperimentStatus, iteration: u32) -> Result<Action, Error> {
        let began = Instant::now();
        let now = now();
        let generation = self.exp.meta().generation;
        let spec = &self.exp.spec;
        self.observe_lateness(&status);
        if status.phase == Phase::Paused {
            status.phase = Phase::Running;
            status.paused_at_generation = None;
        }

        let collected = self.collect(&status).await;
        StageGate::pass(self.ctx.gate.as_ref(), Stage::MetricsCollected, iteration).await;
        let observations = match collected {
            Ok(collected) => collected,
            Err(reason) => {
                return self
                    .hold(
                        self.exp,
                        status,
                        Failure {
                            condition: METRICS_AVAILABLE,
                            reason: "BackendUnavailable",
                            message: format!("iteration {iteration} held: {reason}"),
                        },
                    )
                    .await;
            }
        };
        match &observations.missing {
            None => conditions::set(
                &mut status.conditions,
                METRICS_AVAILABLE,
                true,
                "Collected",
                "every version has data for every metric",
                generation,
                &now,
            ),
            Some(missing) => {
                conditions::set(
                    &mut status.conditions,
                    METRICS_AVAILABLE,
                    false,
                    "NoData",
                    missing,
                    generation,
                    &now,
                );
                // The iteration goes on (the engine never counts missing data as a pass),
                // but the user should see why it cannot conclude.
                self.event(
                    EventType::Warning,
                    "NoData",
                    "Iterate",
                    &format!("iteration {iteration}: {missing}"),
                )
                .await;
            }
        }

        let current = current_weights(spec, &status);
        let ledger = status.ledger(spec);
        let request = ledger.request(spec, observations.by_version);
        let url = spec
            .analytics
            .as_ref()
            .map_or(self.ctx.settings.analytics_url.as_str(), |a| a.url.as_str());
        let answer = self.ctx.analytics.assess(url, &request).await;
        StageGate::pass(self.ctx.gate.as_ref(), Stage::AnalyticsAnswered, iteration).await;
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                let reason = match &e {
                    AnalyticsError::Rejected { .. } => "AnalyticsRejected",
                    AnalyticsError::Unauthorized { .. } => "AnalyticsUnauthorized",
                    AnalyticsError::Tls(_) => "AnalyticsTlsMisconfigured",
                    AnalyticsError::Garbage(_) => "AnalyticsGarbage",
                    AnalyticsError::Unavailable(_) => "AnalyticsUnavailable",
                };
                let message = format!(
                    "iteration {iteration} held at {}: {e}",
                    self.summary(&current)
                );
                return self
                    .hold(
                        self.exp,
                        status,
                        Failure {
                            condition: ANALYTICS_AVAILABLE,
                            reason,
                            message,
                        },
                    )
                    .await;
            }
        };
        conditions::set(
            &mut status.conditions,
            ANALYTICS_AVAILABLE,
            true,
            "Assessed",
            format!("iteration {iteration} assessed"),
            generation,
            &now,
        );

        let terminal = response.decision.action != Decided::Continue;
        let next = ledger.record(spec, &response);
        let weights = next.weights.clone();
        status.versions = response.versions;
        status.winner = response.winner;
        status.decision = Some(response.decision.clone());
        if response.decision.action == Decided::Promote {
            status.recommended_version = response.decision.version.clone();
        }
        status.pending = Some(PendingIteration {
            iteration,
            weights,
            next_phase: if terminal {
                Phase::Completed
            } else {
                Phase::Running
            },
            ledger: Some(next),
        });
        let pending = status.pending.clone();
        // The decision is durable before the router changes.
        let recorded = self.write(status).await?;
        StageGate::pass(self.ctx.gate.as_ref(), Stage::DecisionRecorded, iteration).await;
        let status = recorded.status.clone().unwrap_or_default();
        let outcome = match pending {
            Some(p) => self.finish_with(&recorded, status, p).await,
            None => Ok(Action::requeue(self.interval())),
        };
        self.ctx
            .telemetry
            .iteration_seconds
            .with_label_values(&[kind_label(spec.kind)])
            .observe(began.elapsed().as_secs_f64());
        self.ctx
            .telemetry
            .iterations
            .with_label_values(&[action_label(response.decision.action)])
            .inc();
        outcome
    }

    /// Records how late this attempt began. A paused experiment was not due (a person or the
    /// failure policy held it), so its resumption is not counted as late.
    fn observe_lateness(&self, status: &ExperimentStatus) {
        if status.phase == Phase::Paused {
            return;
        }
        let Some(due) = plan::next_iteration_due(&self.exp.spec, status) else {
            return;
        };
        let late = SystemTime::now().duration_since(due).unwrap_or_default();
        self.ctx
            .telemetry
            .iteration_lateness
            .with_label_values(&[kind_label(self.exp.spec.kind)])
            .observe(late.as_secs_f64());
    }

    async fn finish(
        &self,
        status: ExperimentStatus,
        pending: PendingIteration,
    ) -> Result<Action, Error> {
        self.finish_with(self.exp, status, pending).await
    }

    /// Applies a pending iteration's split and records the iteration as completed.
    async fn finish_with(
        &self,
        exp: &Experiment,
        mut status: ExperimentStatus,
        pending: PendingIteration,
    ) -> Result<Action, Error> {
        let now = now();
        let generation = exp.meta().generation;
        if let Err(e) = self.set_router(&pending.weights).await {
            return self.router_failed_on(exp, status, e).await;
        }
        StageGate::pass(
            self.ctx.gate.as_ref(),
            Stage::TrafficApplied,
            pending.iteration,
        )
        .await;
        conditions::set(
            &mut status.conditions,
            TRAFFIC_APPLIED,
            true,
            "Applied",
            format!("split {} applied", self.summary(&pending.weights)),
            generation,
            &now,
        );
        status.completed_iterations = pending.iteration;
        status.consecutive_failures = 0;
        status.paused_at_generation = None;
        status.last_iteration_time = Some(now.clone());
        self.record_weights(&mut status, &pending.weights);
        let decision = status.decision.clone();
        status.history.push(IterationRecord {
            iteration: pending.iteration,
            time: now.clone(),
            weights: pending.weights.clone(),
            action: decision.as_ref().map_or(Decided::Continue, |d| d.action),
            version: decision.as_ref().and_then(|d| d.version.clone()),
        });
        if pending.ledger.is_some() {
            status.ledger = pending.ledger.clone();
        }
        let excess = status.history.len().saturating_sub(HISTORY_LIMIT);
        status.history.drain(..excess);
        status.phase = pending.next_phase;
        status.pending = None;
        let reason_text = decision
            .as_ref()
            .map(|d| d.reason.clone())
            .unwrap_or_default();
        let headline = decision
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        status.message = Some(format!(
            "iteration {}: {headline}; {}",
            pending.iteration,
            self.summary(&pending.weights)
        ));
        let terminal = status.phase.is_terminal();
        if terminal {
            conditions::set(
                &mut status.conditions,
                COMPLETED,
                true,
                completion_reason(decision.as_ref()),
                &reason_text,
                generation,
                &now,
            );
            conditions::set(
                &mut status.conditions,
                READY,
                true,
                "Completed",
                &reason_text,
                generation,
                &now,
            );
        } else {
            conditions::set(
                &mut status.conditions,
                READY,
                true,
                "Running",
                &reason_text,
                generation,
                &now,
            );
        }
        let recorded = self.write_on(exp, status).await?;
        self.event(
            EventType::Normal,
            "Iteration",
            "Iterate",
            &format!(
                "iteration {}: {headline} ({reason_text}); split {}",
                pending.iteration,
                self.summary(&pending.weights)
            ),
        )
        .await;
        if terminal {
            let reason = completion_reason(decision.as_ref());
            self.event(EventType::Normal, reason, "Complete", &reason_text)
                .await;
            Ok(Action::await_change())
        } else {
            Ok(self.requeue_when_due(recorded.status.as_ref()))
        }
    }

    /// Requeues for when the next iteration is due by `status`, however long this reconcile
    /// took: a whole interval from its end would make each iteration late by the time the
    /// previous one spent on API calls (seconds with 300 experiments; docs/performance.md).
    fn requeue_when_due(&self, status: Option<&ExperimentStatus>) -> Action {
        let due = status.and_then(|s| plan::next_iteration_due(&self.exp.spec, s));
        Action::requeue(due.map_or(self.interval(), |due| {
            due.duration_since(SystemTime::now()).unwrap_or_default()
        }))
    }

    async fn terminate(
        &self,
        mut status: ExperimentStatus,
        weights: Vec<u32>,
    ) -> Result<Action, Error> {
        let now = now();
        let generation = self.exp.meta().generation;
        if let Err(e) = self.set_router(&weights).await {
            return self.router_failed(status, e).await;
        }
        self.record_weights(&mut status, &weights);
        status.phase = Phase::Aborted;
        let message = format!(
            "terminated by manualOverride; final split {}",
            self.summary(&weights)
        );
        conditions::set(
            &mut status.conditions,
            TRAFFIC_APPLIED,
            true,
            "Applied",
            &message,
            generation,
            &now,
        );
        conditions::set(
            &mut status.conditions,
            COMPLETED,
            true,
            "Terminated",
            &message,
            generation,
            &now,
        );
        conditions::set(
            &mut status.conditions,
            READY,
            true,
            "Terminated",
            &message,
            generation,
            &now,
        );
        status.message = Some(message.clone());
        self.write(status).await?;
        self.event(EventType::Normal, "Terminated", "Terminate", &message)
            .await;
        Ok(Action::await_change())
    }

    async fn pause(
        &self,
        mut status: ExperimentStatus,
        weights: Option<Vec<u32>>,
    ) -> Result<Action, Error> {
        let now = now();
        let generation = self.exp.meta().generation;
        if let Some(w) = &weights {
            if let Err(e) = self.set_router(w).await {
                return self.router_failed(status, e).await;
            }
            self.record_weights(&mut status, w);
        }
        let held = current_weights(&self.exp.spec, &status);
        status.phase = Phase::Paused;
        let message = format!("paused by manualOverride; holding {}", self.summary(&held));
        conditions::set(
            &mut status.conditions,
            READY,
            true,
            "Paused",
            &message,
            generation,
            &now,
        );
        status.message = Some(message.clone());
        self.write(status).await?;
        self.event(EventType::Normal, "Paused", "Pause", &message)
            .await;
        Ok(Action::await_change())
    }

    /// Someone changed the router by hand: report it, and put back the experiment's split.
    async fn correct_drift(&self, status: &ExperimentStatus) -> Result<(), Error> {
        let (Some(target), false) = (&self.target, status.weights.is_empty()) else {
            return Ok(());
        };
        let expected: Vec<u32> = status.weights.iter().map(|w| w.weight).collect();
        let actual = match self
            .ctx
            .router
            .current(target, self.ns, &self.exp.spec.versions)
            .await
        {
            Ok(actual) => actual,
            Err(e) => return self.router_failed(status.clone(), e).await.map(|_| ()),
        };
        if actual == expected {
            return Ok(());
        }
        let note = format!(
            "{} {} was changed outside the experiment ({}); restoring {}",
            target.kind.kind(),
            target.name,
            self.summary(&actual),
            self.summary(&expected)
        );
        self.event(EventType::Warning, "TrafficDrift", "Reconcile", &note)
            .await;
        if let Err(e) = self.set_router(&expected).await {
            return self.router_failed(status.clone(), e).await.map(|_| ());
        }
        let mut status = status.clone();
        let now = now();
        conditions::set(
            &mut status.conditions,
            TRAFFIC_APPLIED,
            true,
            "DriftCorrected",
            &note,
            self.exp.meta().generation,
            &now,
        );
        self.write(status).await?;
        Ok(())
    }

    async fn router_failed(
        &self,
        status: ExperimentStatus,
        e: RouterError,
    ) -> Result<Action, Error> {
        self.router_failed_on(self.exp, status, e).await
    }

    /// The router could not be set: traffic stays where it was; report and retry.
    async fn router_failed_on(
        &self,
        exp: &Experiment,
        status: ExperimentStatus,
        e: RouterError,
    ) -> Result<Action, Error> {
        let e = match e {
            // A lost race, not a broken router: the reconcile is retried.
            RouterError::Kube(ke) if conflict::is_conflict(&ke) => return Err(Error::Kube(ke)),
            other => other,
        };
        let reason = match e {
            RouterError::NotFound { .. } => "RouterNotFound",
            RouterError::NoRoute { .. } | RouterError::Mismatch(_) => "RouterMismatch",
            RouterError::Kube(_) => "RouterUnavailable",
        };
        let failure = Failure {
            condition: TRAFFIC_APPLIED,
            reason,
            message: format!("traffic not applied: {e}"),
        };
        self.hold(exp, status, failure).await
    }

    /// An attempt failed: the split stays where it is, the failure is counted and reported,
    /// and the attempt is retried, until the failure policy's limit is reached.
    async fn hold(
        &self,
        exp: &Experiment,
        mut status: ExperimentStatus,
        failure: Failure,
    ) -> Result<Action, Error> {
        let now = now();
        let generation = exp.meta().generation;
        status.consecutive_failures += 1;
        tracing::warn!(
            experiment = %exp.name_any(),
            reason = failure.reason,
            message = %failure.message,
            "iteration held"
        );
        conditions::set(
            &mut status.conditions,
            failure.condition,
            false,
            failure.reason,
            &failure.message,
            generation,
            &now,
        );
        status.message = Some(failure.message.clone());
        self.event(
            EventType::Warning,
            failure.reason,
            "Iterate",
            &failure.message,
        )
        .await;
        let policy = &exp.spec.failure_policy;
        if status.consecutive_failures >= policy.max_consecutive_failures {
            return self.apply_failure_policy(exp, status).await;
        }
        self.write_on(exp, status).await?;
        Ok(Action::requeue(self.ctx.settings.retry_after))
    }

    /// Too many failures in a row: roll back (all traffic to the baseline, phase Failed) or
    /// pause (hold, phase Paused, until the spec changes), as the experiment says.
    async fn apply_failure_policy(
        &self,
        exp: &Experiment,
        mut status: ExperimentStatus,
    ) -> Result<Action, Error> {
        let now = now();
        let generation = exp.meta().generation;
        let failures = status.consecutive_failures;
        let cause = status.message.clone().unwrap_or_default();
        let (message, action) = match exp.spec.failure_policy.action {
            FailureAction::Rollback => {
                let baseline = exp.spec.initial_weights_on_baseline();
                match self.set_router(&baseline).await {
                    Ok(()) => self.record_weights(&mut status, &baseline),
                    // Without a router there is no traffic to move.
                    Err(RouterError::NotFound { .. }) => {}
                    Err(e) => {
                        // Traffic is not safe yet: keep trying rather than end.
                        status.message = Some(format!(
                            "{failures} failures in a row ({cause}); rolling back, but {e}"
                        ));
                        self.write_on(exp, status).await?;
                        return Ok(Action::requeue(self.ctx.settings.retry_after));
                    }
                }
                let message = format!(
                    "{failures} failures in a row, the last: {cause}; failure policy: all traffic back on the baseline"
                );
                status.phase = Phase::Failed;
                status.pending = None;
                conditions::set(
                    &mut status.conditions,
                    COMPLETED,
                    true,
                    "FailurePolicy",
                    &message,
                    generation,
                    &now,
                );
                (message, "Rollback")
            }
            FailureAction::Pause => {
                status.phase = Phase::Paused;
                status.paused_at_generation = generation;
                let message = format!(
                    "{failures} failures in a row, the last: {cause}; failure policy: paused until the spec changes"
                );
                (message, "Pause")
            }
        };
        conditions::set(
            &mut status.conditions,
            READY,
            false,
            "TooManyFailures",
            &message,
            generation,
            &now,
        );
        status.message = Some(message.clone());
        self.write_on(exp, status).await?;
        self.event(EventType::Warning, "FailurePolicy", action, &message)
            .await;
        Ok(Action::await_change())
    }

    async fn set_router(&self, weights: &[u32]) -> Result<(), RouterError> {
        match &self.target {
            Some(target) => {
                self.ctx
                    .router
                    .apply(target, self.ns, &self.exp.spec.versions, weights)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Collects every metric of every version. A backend failure holds the iteration; a
    /// version without data is passed on as such (the engine never counts it as a pass).
    async fn collect(&self, status: &ExperimentStatus) -> Result<Collected, String> {
        let spec = &self.exp.spec;
        let start = status
            .start_time
            .as_ref()
            .map_or_else(SystemTime::now, system_time);
        let now = SystemTime::now();
        let mut definitions = Vec::with_capacity(spec.metrics.len());
        for m in &spec.metrics {
            let ns = m.metric.namespace.as_deref().unwrap_or(self.ns);
            let api: Api<Metric> = Api::namespaced(self.ctx.client.clone(), ns);
            let metric = api
                .get_opt(&m.metric.name)
                .await
                .map_err(|e| format!("reading Metric {ns}/{}: {e}", m.metric.name))?
                .ok_or_else(|| format!("Metric {ns}/{} not found", m.metric.name))?;
            let credentials = match &metric.spec.auth {
                Some(auth) => Some(self.credentials(ns, &auth.secret_name).await?),
                None => None,
            };
            definitions.push((m, metric, credentials));
        }
        let mut by_version = Vec::with_capacity(spec.versions.len());
        let mut missing = Vec::new();
        for v in &spec.versions {
            let mut observed = BTreeMap::new();
            for (m, metric, credentials) in &definitions {
                let query = Query {
                    name: &m.name,
                    spec: &metric.spec,
                    labels: &v.labels,
                    namespace: self.ns,
                    start,
                    now,
                    credentials: credentials.as_ref(),
                };
                match self.ctx.metrics.observe(&query).await {
                    Ok(o) => {
                        observed.insert(m.name.clone(), o);
                    }
                    Err(MetricsError::NoData { reason, .. }) => {
                        missing.push(format!("{}/{}: {reason}", v.name, m.name));
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            by_version.push(observed);
        }
        Ok(Collected {
            by_version,
            missing: (!missing.is_empty()).then(|| format!("no data for {}", missing.join("; "))),
        })
    }

    async fn credentials(&self, ns: &str, name: &str) -> Result<Credentials, String> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), ns);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| format!("reading Secret {ns}/{name}: {e}"))?
            .ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        Ok(Credentials {
            token: text("token"),
            username: text("username"),
            password: text("password"),
            ca_pem: data.get("ca.crt").map(|b| b.0.clone()),
        })
    }

    async fn write(&self, status: ExperimentStatus) -> Result<Experiment, Error> {
        self.write_on(self.exp, status).await
    }

    /// Replaces the status of `exp`, with the resourceVersion read last, so a concurrent
    /// writer makes this fail with a conflict instead of being overwritten.
    ///
    /// On a conflict the object is read again. If only its metadata changed (a label, an
    /// annotation), the same status is written on the fresh version, with backoff: the work
    /// this status records (an analytics call, a router change) is not redone. If its spec or
    /// status changed (a person edited it, or another controller recorded progress), the
    /// conflict is returned and the next reconcile plans again from what is there now.
    async fn write_on(
        &self,
        exp: &Experiment,
        mut status: ExperimentStatus,
    ) -> Result<Experiment, Error> {
        status.observed_generation = exp.meta().generation;
        let name = exp.name_any();
        let mut base = exp.clone();
        let mut backoff = conflict::Backoff::new();
        loop {
            let mut updated = base.clone();
            updated.status = Some(status.clone());
            let e = match self
                .api
                .replace_status(&name, &PostParams::default(), &updated)
                .await
            {
                Err(e) if conflict::is_conflict(&e) => e,
                Ok(written) => {
                    // Copies at the versions we read are older than our write: skip them.
                    let key = crate::key(exp);
                    self.ctx
                        .superseded
                        .replaced(&key, exp.resource_version().as_deref());
                    if base.resource_version() != exp.resource_version() {
                        self.ctx
                            .superseded
                            .replaced(&key, base.resource_version().as_deref());
                    }
                    return Ok(written);
                }
                Err(e) => return Err(e.into()),
            };
            self.ctx.telemetry.status_conflicts.inc();
            if !backoff.wait().await {
                return Err(e.into());
            }
            let fresh = self.api.get(&name).await?;
            let unchanged = fresh.meta().generation == exp.meta().generation
                && fresh.meta().deletion_timestamp == exp.meta().deletion_timestamp
                && fresh.status == exp.status;
            if !unchanged {
                tracing::debug!(experiment = %name, "status write conflicted with a change of spec or status");
                return Err(e.into());
            }
            base = fresh;
        }
    }

    fn record_weights(&self, status: &mut ExperimentStatus, weights: &[u32]) {
        status.weights = self
            .exp
            .spec
            .versions
            .iter()
            .zip(weights)
            .map(|(v, &weight)| VersionWeight {
                version: v.name.clone(),
                weight,
            })
            .collect();
        status.weights_summary = Some(self.summary(weights));
    }

    fn summary(&self, weights: &[u32]) -> String {
        weights_summary(&self.exp.spec.versions, weights)
    }

    fn interval(&self) -> Duration {
        parse_interval(&self.exp.spec.duration.interval).unwrap_or(Duration::from_secs(30))
    }

    async fn event(&self, type_: EventType, reason: &str, action: &str, note: &str) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1024)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self
            .ctx
            .recorder
            .publish(&event, &self.exp.object_ref(&()))
            .await
        {
            tracing::warn!(experiment = %self.exp.name_any(), %e, "could not publish event");
        }
    }
}

/// A failed attempt: the condition it makes False, the reason and the message.
struct Failure {
    condition: &'static str,
    reason: &'static str,
    message: String,
}

/// Observations of one iteration, in version order.
struct Collected {
    by_version: Vec<BTreeMap<String, Observation>>,
    missing: Option<String>,
}

fn current_weights(spec: &iter8_crd::ExperimentSpec, status: &ExperimentStatus) -> Vec<u32> {
    if status.weights.len() == spec.versions.len() {
        status.weights.iter().map(|w| w.weight).collect()
    } else {
        spec.initial_weights()
    }
}

fn completion_reason(decision: Option<&iter8_api::Decision>) -> &'static str {
    match decision.map(|d| d.action) {
        Some(Decided::Promote) => "Promoted",
        Some(Decided::Rollback) => "RolledBack",
        Some(Decided::Inconclusive) => "Inconclusive",
        _ => "Completed",
    }
}

fn kind_label(kind: iter8_api::ExperimentKind) -> &'static str {
    match kind {
        iter8_api::ExperimentKind::PerformanceTest => "performanceTest",
        iter8_api::ExperimentKind::Canary => "canary",
        iter8_api::ExperimentKind::AB => "ab",
        iter8_api::ExperimentKind::ABn => "abn",
    }
}

fn action_label(action: Decided) -> &'static str {
    match action {
        Decided::Continue => "continue",
        Decided::Promote => "promote",
        Decided::Rollback => "rollback",
        Decided::Inconclusive => "inconclusive",
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
