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

use futures::StreamExt;
use iter8_api::{Action as Decided, Observation};
use iter8_crd::{
    Experiment, ExperimentStatus, Metric, MetricRef, PendingIteration, Phase, VersionSpec,
};
use iter8_metrics::{Credentials, MetricsBackend, MetricsError, Query};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use crate::analytics::Endpoints;
use crate::assessor::Assessor;
use crate::caches::Caches;
use crate::conflict;
use crate::digest::metric_digest;
use crate::lifecycle::{
    self, AtGate, Failure, Held, MetricRead, MetricsChecked, Note, Requeue, Stamp, Transition,
};
use crate::notifier::Notifier;
use crate::notify;
use crate::plan::{self, Step, system_time};
use crate::readiness::{self, Check, Lookup, NotReady, Seen};
use crate::router::{RouteTarget, RouterError, Routes};
use crate::superseded::Superseded;
use crate::telemetry::Telemetry;

/// How many metric queries of one experiment run at once.
const MAX_CONCURRENT_QUERIES: usize = 16;

/// How long a gate's webhook may take to answer.
const GATE_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The finalizer that puts traffic back on the baseline when a running experiment is deleted.
pub const FINALIZER: &str = "iter8.tools/restore-traffic";

/// What the reconciler needs.
pub struct Context<M> {
    /// The API server.
    pub client: kube::Client,
    /// Router access.
    pub router: Arc<dyn Routes>,
    /// The analytics service.
    pub analytics: Arc<dyn Assessor>,
    /// Where metrics come from.
    pub metrics: M,
    /// Controller-wide settings.
    pub settings: Settings,
    /// The controller's own metrics.
    pub telemetry: Telemetry,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// The versions of Experiments our own writes replaced, to skip stale cached copies.
    pub superseded: Superseded,
    /// Sends notifications of the lifecycle's Events, off the reconcile path.
    pub notifier: Notifier,
    /// Watch caches of Metrics and routes, filled while [`crate::run`] runs.
    pub caches: Caches,
}

/// Controller-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The analytics service used when an experiment names none.
    pub analytics_url: String,
    /// How soon to try again after a failure (metrics, analytics, router).
    pub retry_after: Duration,
    /// Namespaces whose Metrics (and the Secrets they name) any Experiment may use, such as
    /// the release namespace with the chart's metric library. Otherwise an Experiment may use
    /// only Metrics of its own namespace: the controller must not read another namespace's
    /// Secrets on behalf of whoever can create an Experiment.
    pub shared_metric_namespaces: Vec<String>,
    /// URLs under which a gate's webhook may be (`--gate-webhook-allowed-urls`): the
    /// controller calls no other address on behalf of whoever can create an Experiment.
    pub gate_webhooks: Endpoints,
    /// How many Experiments are reconciled at once (0: no bound). Each reconcile in flight
    /// holds its Experiment, its requests and their answers; past what the API server can
    /// serve, more in flight adds memory and queueing, not throughput.
    pub max_concurrent_reconciles: u16,
    /// Where a Metric that names its own address may send queries (and its Secret's
    /// credentials): `--prometheus-url` and `--metric-backend-allowed-urls`. A Metric naming
    /// any other address is refused before its Secret is read.
    pub metric_backends: Endpoints,
}

impl Settings {
    /// Whether an Experiment in `experiment_ns` may use the Metrics of `metric_ns`.
    pub fn may_use_metrics_of(&self, experiment_ns: &str, metric_ns: &str) -> bool {
        metric_ns == experiment_ns || self.shared_metric_namespaces.iter().any(|n| n == metric_ns)
    }

    /// Whether a Metric may send a query to `url` (an address [`iter8_metrics::destination`]
    /// gives): at or under an allowed base URL, whatever its query string.
    pub fn may_query_metrics_at(&self, url: &str) -> bool {
        self.metric_backends.allows_request(url)
    }

    /// Whether a gate's webhook at `url` may be called: same scheme, host and port as an
    /// allowed URL, and a path under its path, whatever its query string. Compared parsed, so
    /// `http://a@b` or a host that merely starts like an allowed one does not pass.
    pub fn may_call_gate_webhook(&self, url: &str) -> bool {
        self.gate_webhooks.allows_request(url)
    }
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
    /// Traffic could not be put back on the baseline on deletion; the finalizer stays.
    #[error("restoring traffic on deletion: {0}")]
    Cleanup(#[source] RouterError),
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
    if phase.is_none() {
        ctx.notifier.forget(&key);
    }
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

/// One reconcile of one Experiment. It does the I/O (router, analytics, metrics, status,
/// Events) in the order [`lifecycle`] prescribes; every decision is the lifecycle's. It keeps
/// the latest copy of the Experiment it wrote, so each write carries the version just read.
struct Reconciler<'a, M> {
    ctx: &'a Context<M>,
    api: &'a Api<Experiment>,
    exp: Experiment,
    ns: &'a str,
    target: Option<RouteTarget>,
}

impl<'a, M: MetricsBackend> Reconciler<'a, M> {
    fn new(ctx: &'a Context<M>, api: &'a Api<Experiment>, exp: &Experiment, ns: &'a str) -> Self {
        let target = exp.spec.router.as_ref().map(RouteTarget::of);
        Self {
            ctx,
            api,
            exp: exp.clone(),
            ns,
            target,
        }
    }

    fn status(&self) -> ExperimentStatus {
        self.exp.status.clone().unwrap_or_default()
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            now: Time(Timestamp::now()),
            generation: self.exp.meta().generation,
        }
    }

    async fn apply(mut self) -> Result<Action, Error> {
        let status = self.status();
        let step = plan::plan(
            &self.exp.spec,
            &status,
            self.exp.meta().generation,
            SystemTime::now(),
        );
        if matches!(step, Step::Idle | Step::Wait(_)) {
            // Nothing else is written in these steps: record how notifications went here.
            self.record_delivery().await?;
        }
        match step {
            Step::Idle => {
                if status.phase == Phase::Paused {
                    self.correct_drift().await?;
                }
                Ok(Action::await_change())
            }
            Step::Wait(_) => {
                self.correct_drift().await?;
                Ok(self.requeue(Requeue::WhenDue))
            }
            Step::Start { weights } => {
                let status = match self.readiness(None, &weights).await {
                    Ok(account) => lifecycle::versions_ready(status, &account, &self.stamp()),
                    Err(not_ready) => {
                        let t = lifecycle::awaiting_versions(
                            status,
                            "the start",
                            &not_ready,
                            &self.stamp(),
                        );
                        return self.commit(t).await;
                    }
                };
                if let Err(e) = self.set_router(&weights).await {
                    return self.router_failed(status, e).await;
                }
                let offset = plan::start_offset(&self.exp.spec, &crate::key(&self.exp));
                let t = lifecycle::started(&self.exp.spec, status, &weights, offset, &self.stamp());
                self.commit(t).await
            }
            Step::FinishPending(pending) => self.finish(pending).await,
            Step::Terminate { weights } => {
                if let Err(e) = self.set_router(&weights).await {
                    return self.router_failed(status, e).await;
                }
                let t = lifecycle::terminated(&self.exp.spec, status, &weights, &self.stamp());
                self.commit(t).await
            }
            Step::Pause { weights } => {
                if let Some(w) = &weights
                    && let Err(e) = self.set_router(w).await
                {
                    return self.router_failed(status, e).await;
                }
                let t =
                    lifecycle::paused(&self.exp.spec, status, weights.as_deref(), &self.stamp());
                self.commit(t).await
            }
            Step::Iterate { iteration } => self.iterate(iteration).await,
        }
    }

    /// On deletion, a running experiment hands all traffic back to the baseline. Until the
    /// route carries it, the cleanup fails: kube-runtime removes the finalizer on any `Ok`,
    /// and without it nothing would own the route's split any more.
    async fn cleanup(self) -> Result<Action, Error> {
        let status = self.status();
        let Some(baseline) = lifecycle::cleanup(&self.exp.spec, &status) else {
            return Ok(Action::await_change());
        };
        match self.set_router(&baseline).await {
            // A route that does not match the experiment, with no split ever recorded, was
            // never the experiment's to set (Start would have failed the same way): holding
            // the finalizer for it would only make the Experiment undeletable.
            Err(RouterError::NoRoute { .. } | RouterError::Mismatch(_))
                if status.weights.is_empty() =>
            {
                Ok(Action::await_change())
            }
            Ok(()) | Err(RouterError::NotFound { .. }) => {
                self.publish(&Note {
                    warning: false,
                    reason: "TrafficRestored",
                    action: "Delete",
                    message:
                        "experiment deleted while running; all traffic is back on the baseline"
                            .into(),
                })
                .await;
                Ok(Action::await_change())
            }
            Err(e) => {
                self.publish(&Note {
                    warning: true,
                    reason: "CleanupFailed",
                    action: "Delete",
                    message: e.to_string(),
                })
                .await;
                Err(Error::Cleanup(e))
            }
        }
    }

    async fn iterate(mut self, iteration: u32) -> Result<Action, Error> {
        let began = Instant::now();
        let spec = self.exp.spec.clone();
        let status = lifecycle::attempted(self.status());
        self.observe_lateness();
        // What each Metric says now, compared with what it said when the experiment first
        // read it: a criterion may not change its meaning mid-run.
        let metrics = match self.read_metrics(iteration).await {
            Ok(metrics) => metrics,
            Err(failure) => return self.hold(status, failure).await,
        };
        let read: Vec<_> = metrics.iter().map(|(read, _)| read.clone()).collect();
        let recorded = status.metric_digests.clone();
        let status = match lifecycle::metrics_checked(
            &spec,
            status.clone(),
            iteration,
            &read,
            &self.stamp(),
        ) {
            MetricsChecked::Unchanged(status) => status,
            MetricsChecked::Missing(failure) => return self.hold(status, failure).await,
            MetricsChecked::Changed(t) => return self.commit(t).await,
        };
        let observations = match self.collect(&status, iteration, metrics).await {
            Ok(collected) => collected,
            Err(failure) => {
                return self
                    .hold(lifecycle::unassessed(status, &recorded), failure)
                    .await;
            }
        };
        let (status, notes) = lifecycle::collected(
            status,
            iteration,
            observations.missing.as_deref(),
            &self.stamp(),
        );
        for note in &notes {
            self.publish(note).await;
        }
        // The ONE request path (iter8_crd::Ledger): built from the pre-answer ledger, which a
        // held or retried iteration sends again unchanged.
        let ledger = status.ledger(&spec);
        let current = ledger.weights.clone();
        let request = ledger.request(&spec, observations.by_version);
        let url = spec
            .analytics
            .as_ref()
            .map_or(self.ctx.settings.analytics_url.as_str(), |a| a.url.as_str());
        let response = match self.ctx.analytics.assess(url, &request).await {
            Ok(r) => r,
            Err(e) => {
                let failure = Failure::analytics(&spec, iteration, &current, &e);
                return self
                    .hold(lifecycle::unassessed(status, &recorded), failure)
                    .await;
            }
        };
        let action = response.decision.action;
        let undecided = status.clone();
        let decided =
            lifecycle::decided(&spec, status, iteration, &ledger, response, &self.stamp());
        // Traffic moves only to versions that can serve it; otherwise nothing is recorded and
        // the iteration is redone (same pre-answer ledger) once they can.
        let next = decided.pending.as_ref().map(|p| p.weights.clone());
        let decided = match self
            .readiness(Some(&current), next.as_deref().unwrap_or(&current))
            .await
        {
            Ok(account) => lifecycle::versions_ready(decided, &account, &self.stamp()),
            Err(not_ready) => {
                let before = format!("iteration {iteration}");
                let t = lifecycle::awaiting_versions(undecided, &before, &not_ready, &self.stamp());
                return self.commit(t).await;
            }
        };
        // The decision is durable before the router changes.
        self.write(decided).await?;
        let outcome = match self.status().pending {
            Some(p) => self.finish(p).await,
            None => Ok(self.requeue(Requeue::WhenDue)),
        };
        let telemetry = &self.ctx.telemetry;
        telemetry
            .iteration_seconds
            .with_label_values(&[kind_label(spec.kind)])
            .observe(began.elapsed().as_secs_f64());
        telemetry
            .iterations
            .with_label_values(&[action_label(action)])
            .inc();
        outcome
    }

    /// Reads what [`readiness::checks`] names for moving from `from` (`None` before the start)
    /// to `to`, and gives [`readiness::verdict`] on it. A read that fails is a verdict of
    /// not ready, never a pass.
    async fn readiness(&self, from: Option<&[u32]>, to: &[u32]) -> Result<String, NotReady> {
        let checks = readiness::checks(&self.exp.spec, self.ns, from, to);
        let services: Api<Service> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let deployments: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let seen = futures::future::join_all(checks.into_iter().map(|check: Check| {
            let (services, deployments) = (&services, &deployments);
            async move {
                let service = match &check.service {
                    Some(name) => Some(lookup(services.get_opt(name).await).map(|_| ())),
                    None => None,
                };
                let deployment = match &check.deployment {
                    Some(name) => Some(lookup(deployments.get_opt(name).await)),
                    None => None,
                };
                (
                    check,
                    Seen {
                        service,
                        deployment,
                    },
                )
            }
        }))
        .await;
        readiness::verdict(&seen)
    }

    /// Records how late this attempt began. A paused experiment was not due (a person or the
    /// failure policy held it), so its resumption is not counted as late.
    fn observe_lateness(&self) {
        let status = self.status();
        if status.phase == Phase::Paused {
            return;
        }
        let Some(due) = plan::next_iteration_due(&self.exp.spec, &status) else {
            return;
        };
        let late = SystemTime::now().duration_since(due).unwrap_or_default();
        self.ctx
            .telemetry
            .iteration_lateness
            .with_label_values(&[kind_label(self.exp.spec.kind)])
            .observe(late.as_secs_f64());
    }

    /// Applies a pending iteration's split and records the iteration as completed.
    /// A split held at an approval gate waits here, pending, until the gate opens.
    async fn finish(&mut self, pending: PendingIteration) -> Result<Action, Error> {
        let approval_time = iter8_crd::approval_time(self.exp.meta());
        let approved = self
            .exp
            .spec
            .approval
            .as_ref()
            .map(|approval| lifecycle::Approved {
                approval,
                at: approval_time.as_ref(),
            });
        let gated = lifecycle::gate_for(&self.exp.spec, &self.status(), &pending);
        let webhook = match &gated {
            Some((name, gate)) => match &gate.webhook {
                Some(hook) => Some(self.ask_gate_webhook(&hook.url, name, &pending).await),
                None => None,
            },
            None => None,
        };
        let (status, notes) = match lifecycle::at_gate(
            &self.exp.spec,
            self.status(),
            &pending,
            approved,
            webhook.as_ref(),
            &self.stamp(),
        ) {
            AtGate::Pass(status, notes) => (status, notes),
            AtGate::Wait(t) => return self.commit(t).await,
            AtGate::RollBack { status, weights } => {
                let t = match self.set_router(&weights).await {
                    Ok(()) => lifecycle::gate_rolled_back(
                        &self.exp.spec,
                        status,
                        Some(&weights),
                        &self.stamp(),
                    ),
                    Err(RouterError::NotFound { .. }) => {
                        lifecycle::gate_rolled_back(&self.exp.spec, status, None, &self.stamp())
                    }
                    Err(e) => return self.router_failed(status, e).await,
                };
                return self.commit(t).await;
            }
        };
        // A gate may have held the split for hours since its versions were found ready: look
        // again before traffic moves. Not ready: the split stays pending, the gate's opening is
        // not recorded (the approval stays valid) and this is retried.
        let status = if let Some((gate, _)) = &gated {
            let current = lifecycle::current_weights(&self.exp.spec, &self.status());
            match self.readiness(Some(&current), &pending.weights).await {
                Ok(account) => lifecycle::versions_ready(status, &account, &self.stamp()),
                Err(not_ready) => {
                    let t = lifecycle::gate_open_awaiting_versions(
                        self.status(),
                        gate,
                        pending.iteration,
                        &not_ready,
                        &self.stamp(),
                    );
                    return self.commit(t).await;
                }
            }
        } else {
            status
        };
        if let Err(e) = self.set_router(&pending.weights).await {
            return self.router_failed(status, e).await;
        }
        // A blocked failure-policy rollback waits as a pending `Failed` split: it ends as a
        // rollback, not as an iteration.
        let mut t = if pending.next_phase == Phase::Failed {
            lifecycle::rolled_back(
                &self.exp.spec,
                status,
                Some(&pending.weights),
                &self.stamp(),
            )
        } else {
            lifecycle::applied(&self.exp.spec, status, pending, &self.stamp())
        };
        // The gate's Events follow the status that records its opening.
        t.notes.splice(0..0, notes);
        self.commit(t).await
    }

    /// Asks a gate's webhook whether gate `gate` may open, in the shape of Flagger's
    /// confirm-promotion webhook: a POST of the experiment's name, namespace and phase, with
    /// the gate, the iteration and the split it holds as metadata. Only an allowed URL is
    /// called, with no environment proxy, no redirects and a short timeout.
    async fn ask_gate_webhook(
        &self,
        url: &str,
        gate: &str,
        pending: &PendingIteration,
    ) -> lifecycle::WebhookAnswer {
        use lifecycle::WebhookAnswer;
        if !self.ctx.settings.may_call_gate_webhook(url) {
            return WebhookAnswer::NotAllowed(url.into());
        }
        let status = self.status();
        let body = serde_json::json!({
            "name": self.exp.name_any(),
            "namespace": self.ns,
            "phase": status.phase,
            "metadata": {
                "gate": gate,
                "iteration": pending.iteration.to_string(),
                "weights": iter8_crd::weights_summary(&self.exp.spec.versions, &pending.weights),
            },
        });
        let client = match reqwest::Client::builder()
            .no_proxy()
            .timeout(GATE_WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => return WebhookAnswer::Unreachable(e.to_string()),
        };
        match client.post(url).json(&body).send().await {
            Ok(r) if r.status().is_success() => WebhookAnswer::Opened {
                url: url.into(),
                code: r.status().as_u16(),
            },
            Ok(r) => WebhookAnswer::Closed {
                code: r.status().as_u16(),
            },
            Err(e) => WebhookAnswer::Unreachable(e.to_string()),
        }
    }

    /// Someone changed the router by hand: report it, and put back the experiment's split.
    async fn correct_drift(&mut self) -> Result<(), Error> {
        let status = self.status();
        let Some(target) = self.target.clone() else {
            return Ok(());
        };
        if status.weights.is_empty() {
            return Ok(());
        }
        let actual = match self
            .ctx
            .router
            .current(&target, self.ns, &self.exp.spec.versions)
            .await
        {
            Ok(actual) => actual,
            Err(e) => return self.router_failed(status, e).await.map(|_| ()),
        };
        let route = format!("{} {}", target.kind.kind(), target.name);
        let Some(t) =
            lifecycle::drift_corrected(&self.exp.spec, &status, &route, &actual, &self.stamp())
        else {
            return Ok(());
        };
        // The Events say the route was put back: published once it was, and recorded.
        if let Err(e) = self.set_router(&lifecycle::recorded_weights(&status)).await {
            return self.router_failed(status, e).await.map(|_| ());
        }
        self.write(t.status).await?;
        for note in &t.notes {
            self.publish(note).await;
        }
        Ok(())
    }

    /// The router could not be set: traffic stays where it was; report and retry.
    async fn router_failed(
        &mut self,
        status: ExperimentStatus,
        e: RouterError,
    ) -> Result<Action, Error> {
        match e {
            // A lost race, not a broken router: the reconcile is retried.
            RouterError::Kube(ke) if conflict::is_conflict(&ke) => Err(Error::Kube(ke)),
            // The route changed under every retry: a failed attempt like any other, so it is
            // reported and counted towards the failure policy instead of looping unseen.
            other => {
                if matches!(other, RouterError::Conflict(_)) {
                    self.ctx.telemetry.route_conflicts.inc();
                }
                self.hold(status, Failure::router(&other)).await
            }
        }
    }

    /// An attempt failed: as [`lifecycle::held`] says, retry, pause, or roll back.
    async fn hold(&mut self, status: ExperimentStatus, failure: Failure) -> Result<Action, Error> {
        tracing::warn!(
            experiment = %self.exp.name_any(),
            reason = failure.reason,
            message = %failure.message,
            "iteration held"
        );
        let spec = self.exp.spec.clone();
        let t = match lifecycle::held(&spec, status, &failure, &self.stamp()) {
            Held::Done(t) => t,
            Held::RollBack {
                status,
                weights,
                notes,
            } => {
                let mut t = match self.set_router(&weights).await {
                    Ok(()) => lifecycle::rolled_back(&spec, status, Some(&weights), &self.stamp()),
                    // Without a router there is no traffic to move.
                    Err(RouterError::NotFound { .. }) => {
                        lifecycle::rolled_back(&spec, status, None, &self.stamp())
                    }
                    // Traffic is not safe yet: keep trying rather than end.
                    Err(e) => lifecycle::rollback_blocked(&spec, status, &e),
                };
                t.notes.splice(0..0, notes);
                t
            }
        };
        self.commit(t).await
    }

    /// Writes a transition's status, publishes its Events, and says when to come back.
    async fn commit(&mut self, t: Transition) -> Result<Action, Error> {
        self.write(t.status).await?;
        for note in &t.notes {
            self.publish(note).await;
        }
        Ok(self.requeue(t.requeue))
    }

    fn requeue(&self, requeue: Requeue) -> Action {
        match requeue {
            Requeue::AwaitChange => Action::await_change(),
            Requeue::Retry => Action::requeue(self.ctx.settings.retry_after),
            // For when the next iteration is due, however long this reconcile took: a whole
            // interval from its end would make each iteration late by the time the previous
            // one spent on API calls (seconds with 300 experiments; docs/performance.md).
            Requeue::WhenDue => {
                let due = self
                    .exp
                    .status
                    .as_ref()
                    .and_then(|s| plan::next_iteration_due(&self.exp.spec, s));
                Action::requeue(due.map_or(self.interval(), |due| {
                    due.duration_since(SystemTime::now()).unwrap_or_default()
                }))
            }
        }
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

    /// Reads every Metric the experiment names, in `spec.metrics` order, from a namespace it
    /// may use; a Metric that does not exist is read as `None` (for
    /// [`lifecycle::metrics_checked`] to judge), a failed read holds the iteration.
    async fn read_metrics(
        &self,
        iteration: u32,
    ) -> Result<Vec<(MetricRead, Option<Metric>)>, Failure> {
        let mut read = Vec::with_capacity(self.exp.spec.metrics.len());
        for m in &self.exp.spec.metrics {
            let ns = m.metric.namespace.as_deref().unwrap_or(self.ns);
            if !self.ctx.settings.may_use_metrics_of(self.ns, ns) {
                return Err(Failure::metric_not_allowed(iteration, ns, &m.metric.name));
            }
            // From the watch cache; one missing from it may be new, so the API server has
            // the last word before it is judged deleted.
            let metric = match self.ctx.caches.metric(ns, &m.metric.name) {
                Some(cached) => Some(Metric::clone(&cached)),
                None => {
                    let api: Api<Metric> = Api::namespaced(self.ctx.client.clone(), ns);
                    api.get_opt(&m.metric.name).await.map_err(|e| {
                        Failure::metrics(
                            iteration,
                            &format!("reading Metric {ns}/{}: {e}", m.metric.name),
                        )
                    })?
                }
            };
            let seen = MetricRead {
                name: m.name.clone(),
                resource: format!("{ns}/{}", m.metric.name),
                digest: metric.as_ref().map(|m| metric_digest(&m.spec)),
            };
            read.push((seen, metric));
        }
        Ok(read)
    }

    /// Collects every metric of every version, from the Metrics [`Self::read_metrics`] found
    /// (all of them exist by now). A backend failure holds the iteration; a version without
    /// data is passed on as such (the engine never counts it as a pass).
    async fn collect(
        &self,
        status: &ExperimentStatus,
        iteration: u32,
        metrics: Vec<(MetricRead, Option<Metric>)>,
    ) -> Result<Collected, Failure> {
        let spec = &self.exp.spec;
        let failed = |reason: String| Failure::metrics(iteration, &reason);
        let start = status
            .start_time
            .as_ref()
            .map_or_else(SystemTime::now, system_time);
        let now = SystemTime::now();
        let mut definitions = Vec::with_capacity(spec.metrics.len());
        for (m, (read, metric)) in spec.metrics.iter().zip(metrics) {
            let metric =
                metric.ok_or_else(|| failed(format!("Metric {} not found", read.resource)))?;
            // Where its queries would go, for every version (labels may fill in the host),
            // before its Secret is read or anything is sent.
            for v in &spec.versions {
                let query = self.query(m, &metric, v, (start, now), None);
                match iter8_metrics::destination(&query) {
                    Ok(Some((field, url))) if !self.ctx.settings.may_query_metrics_at(&url) => {
                        return Err(Failure::metric_backend_not_allowed(
                            iteration, &read, field, &url,
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(failed(e.to_string())),
                }
            }
            let ns = m.metric.namespace.as_deref().unwrap_or(self.ns);
            let credentials = match &metric.spec.auth {
                Some(auth) => Some(
                    self.credentials(ns, &auth.secret_name)
                        .await
                        .map_err(failed)?,
                ),
                None => None,
            };
            definitions.push((m, metric, credentials));
        }
        // Every version x metric query at once, up to a bound: an iteration takes about one
        // query's time, not their sum (16 versions x 8 metrics would be 128 round trips).
        let mut queries = Vec::with_capacity(spec.versions.len() * definitions.len());
        for (i, v) in spec.versions.iter().enumerate() {
            for (m, metric, credentials) in &definitions {
                let query = self.query(m, metric, v, (start, now), credentials.as_ref());
                let metrics = &self.ctx.metrics;
                queries.push(async move { (i, v, *m, metrics.observe(&query).await) });
            }
        }
        let results: Vec<_> = futures::stream::iter(queries)
            .buffered(MAX_CONCURRENT_QUERIES)
            .collect()
            .await;
        let mut by_version = vec![BTreeMap::new(); spec.versions.len()];
        let mut missing = Vec::new();
        for (i, v, m, result) in results {
            match result {
                Ok(o) => {
                    by_version[i].insert(m.name.clone(), o);
                }
                Err(MetricsError::NoData { reason, .. }) => {
                    missing.push(format!("{}/{}: {reason}", v.name, m.name));
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        Ok(Collected {
            by_version,
            missing: (!missing.is_empty()).then(|| format!("no data for {}", missing.join("; "))),
        })
    }

    /// The query of metric `m` (defined by `metric`) for version `v` over `window`
    /// (the experiment's start, now).
    fn query<'q>(
        &'q self,
        m: &'q MetricRef,
        metric: &'q Metric,
        v: &'q VersionSpec,
        (start, now): (SystemTime, SystemTime),
        credentials: Option<&'q Credentials>,
    ) -> Query<'q> {
        Query {
            name: &m.name,
            spec: &metric.spec,
            labels: &v.labels,
            namespace: self.ns,
            start,
            now,
            credentials,
        }
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

    /// Replaces the status with the resourceVersion read last, so a concurrent writer makes
    /// this fail with a conflict instead of being overwritten; keeps the written copy.
    ///
    /// On a conflict the object is read again. If only its metadata changed (a label, an
    /// annotation), the same status is written on the fresh version, with backoff: the work
    /// this status records (an analytics call, a router change) is not redone. If its spec or
    /// status changed (a person edited it, or another controller recorded progress), the
    /// conflict is returned and the next reconcile plans again from what is there now.
    async fn write(&mut self, status: ExperimentStatus) -> Result<(), Error> {
        let status = self.with_delivery(&status).unwrap_or(status);
        let (status, notes) = lifecycle::within_budget(status, self.status(), &self.stamp());
        self.replace_status(status).await?;
        for note in &notes {
            self.publish(note).await;
        }
        Ok(())
    }

    async fn replace_status(&mut self, mut status: ExperimentStatus) -> Result<(), Error> {
        let exp = &self.exp;
        status.observed_generation = exp.meta().generation;
        if exp.status.as_ref() == Some(&status) {
            // Nothing to write (a wait checked again and found unchanged).
            return Ok(());
        }
        let name = exp.name_any();
        let mut base = exp.clone();
        let mut backoff = conflict::Backoff::new();
        loop {
            let mut updated = base.clone();
            updated.status = Some(status.clone());
            // The cached copy keeps only some managedFields; none sent leaves the server's be.
            updated.metadata.managed_fields = None;
            let e = match self
                .api
                .replace_status(&name, &PostParams::default(), &updated)
                .await
            {
                Err(e) if conflict::is_conflict(&e) => e,
                Ok(written) => {
                    // Copies at the versions we read are older than our write: skip them.
                    self.ctx.superseded.wrote(
                        &crate::key(exp),
                        exp.resource_version().as_deref(),
                        base.resource_version().as_deref(),
                        written.resource_version().as_deref(),
                    );
                    self.exp = written;
                    return Ok(());
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

    /// `status` with the `NotificationsDelivered` condition brought up to date, or `None`
    /// when it is (or no notification was sent yet).
    fn with_delivery(&self, status: &ExperimentStatus) -> Option<ExperimentStatus> {
        let delivery = self.ctx.notifier.delivery(&crate::key(&self.exp))?;
        notify::with_delivery(status, &delivery, &self.stamp())
    }

    /// Writes the `NotificationsDelivered` condition if it is out of date.
    async fn record_delivery(&mut self) -> Result<(), Error> {
        match self.with_delivery(&self.status()) {
            Some(status) => self.write(status).await,
            None => Ok(()),
        }
    }

    fn interval(&self) -> Duration {
        plan::interval_of(&self.exp.spec)
    }

    async fn publish(&self, note: &Note) {
        let event = KubeEvent {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(truncate(&note.message, 1024)),
            action: note.action.into(),
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
        // Queued only: delivery happens off the reconcile path.
        self.ctx.notifier.notify(&self.exp, note, &self.stamp());
    }
}

/// A read as [`readiness`] sees it. A refusal is told in the API server's own sentence (who
/// cannot do what), not the whole response, which the condition would carry twice.
fn lookup<T>(read: Result<Option<T>, kube::Error>) -> Lookup<T> {
    match read {
        Ok(Some(object)) => Lookup::Found(object),
        Ok(None) => Lookup::NotFound,
        Err(kube::Error::Api(status)) if !status.message.is_empty() => {
            Lookup::Failed(status.message.clone())
        }
        Err(e) => Lookup::Failed(e.to_string()),
    }
}

/// Observations of one iteration, in version order.
struct Collected {
    by_version: Vec<BTreeMap<String, Observation>>,
    missing: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn a_refused_readiness_read_says_who_cannot_do_what_in_one_sentence() {
        let refusal = "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:iter8:iter8-controller\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"shop\"";
        let read: Result<Option<()>, _> = Err(kube::Error::Api(
            Status::failure(refusal, "Forbidden").with_code(403).boxed(),
        ));
        assert_eq!(lookup(read), Lookup::Failed(refusal.to_string()));
        assert_eq!(lookup(Ok(None::<()>)), Lookup::NotFound);
        assert_eq!(lookup(Ok(Some(()))), Lookup::Found(()));
    }

    #[test]
    fn a_gate_webhook_must_be_under_an_allowed_url() {
        let settings = Settings {
            analytics_url: "http://iter8-analytics:8080".into(),
            retry_after: Duration::from_secs(1),
            shared_metric_namespaces: Vec::new(),
            gate_webhooks: Endpoints::only([
                "http://approver.ops:8080/hooks/",
                "http://gate.ops/confirm",
            ])
            .expect("valid"),
            max_concurrent_reconciles: 0,
            metric_backends: Endpoints::default(),
        };
        for (url, allowed) in [
            ("http://approver.ops:8080/hooks/confirm", true),
            ("http://approver.ops:8080/other", false),
            ("http://approver.ops:9090/hooks/confirm", false),
            ("https://approver.ops:8080/hooks/confirm", false),
            ("http://approver.ops.evil:8080/hooks/confirm", false),
            ("http://approver.ops:8080@evil:8080/hooks/confirm", false),
            ("http://user@approver.ops:8080/hooks/confirm", false),
            ("http://:secret@approver.ops:8080/hooks/confirm", false),
            ("http://approver.ops:8080/hooks/../admin", false),
            // Under a path without a trailing slash: the path itself or below it, not a
            // sibling that merely starts with the same letters.
            ("http://gate.ops/confirm", true),
            ("http://gate.ops/confirm/promotion", true),
            ("http://gate.ops/confirm-everything", false),
            ("http://gate.ops/confirmed", false),
            ("not a url", false),
            // Parameters are the webhook's own business.
            ("http://gate.ops/confirm?experiment=a", true),
        ] {
            assert_eq!(settings.may_call_gate_webhook(url), allowed, "{url}");
        }
    }

    #[test]
    fn a_metric_may_query_only_the_default_prometheus_and_allowed_backends() {
        let settings = Settings {
            analytics_url: "http://iter8-analytics:8080".into(),
            retry_after: Duration::from_secs(1),
            shared_metric_namespaces: Vec::new(),
            gate_webhooks: Endpoints::default(),
            max_concurrent_reconciles: 0,
            metric_backends: Endpoints::only([
                "http://prometheus.monitoring:9090",
                "https://api.datadoghq.com/api/v1",
            ])
            .expect("valid"),
        };
        for (url, allowed) in [
            ("http://prometheus.monitoring:9090", true),
            ("http://prometheus.monitoring:9090/", true),
            (
                "https://api.datadoghq.com/api/v1/query?query=sum(x)&from=1",
                true,
            ),
            ("http://prometheus.monitoring:9091", false),
            ("https://api.datadoghq.com/api/v2/query", false),
            ("http://169.254.169.254/latest/meta-data", false),
            ("http://prometheus.monitoring:9090@evil.example", false),
            ("http://user:pw@prometheus.monitoring:9090", false),
        ] {
            assert_eq!(settings.may_query_metrics_at(url), allowed, "{url}");
        }
        assert!(
            !Settings {
                metric_backends: Endpoints::default(),
                ..settings
            }
            .may_query_metrics_at("http://prometheus.monitoring:9090")
        );
    }
}
