//! The iter8 controller: watches `Experiment` resources and runs them iteration by iteration
//! (collect metrics, ask the analytics service, apply the split to the router, record status),
//! until a version is promoted, traffic is rolled back, or the iterations run out.
#![forbid(unsafe_code)]

pub mod assessor;
pub mod caches;
pub mod conditions;
pub mod conflict;
pub mod digest;
pub mod fence;
pub mod leader;
pub mod lifecycle;
pub mod notifier;
pub mod notify;
pub mod plan;
pub mod readiness;
pub mod reconcile;
pub mod router;
pub mod superseded;
pub mod telemetry;

/// The analytics client (one crate, shared with the CLI).
pub use iter8_analytics_client as analytics;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use iter8_crd::{Experiment, Metric};
use iter8_metrics::MetricsBackend;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

pub use reconcile::{Context, Error, FINALIZER, Settings};

/// How many Experiments the controller reconciles at once by default: enough for a thousand
/// experiments iterating every 30 s with room to spare (one iteration is a few hundred
/// milliseconds of API and metric calls), few enough that what is in flight stays small
/// (docs/performance.md).
pub const DEFAULT_CONCURRENCY: u16 = 64;

use crate::router::{KINDS, RouteTarget, RouterKind};

/// Runs the controller until `shutdown` resolves. Experiments in `namespace` are watched
/// (all namespaces when `None`), and so are the router kinds installed in the cluster, so
/// that hand edits of a route are noticed.
pub async fn run<M: MetricsBackend + 'static>(
    ctx: Arc<Context<M>>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let experiments: Api<Experiment> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // The Experiment cache holds every Experiment for the controller's life. Of their
    // managedFields (a quarter of each object) it keeps only `iter8 approve`'s entries, whose
    // time is the approval's: a thousand Experiments take less memory (docs/performance.md).
    // Status writes send no managedFields, so the server's stay as they are.
    let (store, writer) = reflector::store();
    let watched = cached_watch(experiments, writer, |e: &mut Experiment| {
        e.managed_fields_mut()
            .retain(|m| m.manager.as_deref() == Some(iter8_crd::APPROVAL_FIELD_MANAGER));
    })
    .applied_objects();
    let mut controller = Controller::for_stream(watched, store.clone());
    // The caches' watches run as long as this controller does.
    let mut watches = Vec::new();
    let mut metric_stores = Vec::new();
    for scope in metric_scopes(namespace, &ctx.settings.shared_metric_namespaces) {
        let api: Api<Metric> = match &scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let writer = reflector::store::Writer::default();
        metric_stores.push((scope, writer.as_reader()));
        let stream = cached_watch(api, writer, |m: &mut Metric| m.managed_fields_mut().clear())
            .for_each(|event| async move {
                // Reads fall back to the API server meanwhile; a watch refused for good (a
                // chart older than the controller, without list/watch on Metrics) shows here.
                if let Err(e) = event {
                    tracing::warn!(%e, "Metric watch failed; reading Metrics by name until it recovers");
                }
            });
        watches.push(AbortOnDrop(tokio::spawn(stream)));
    }
    let mut route_stores = Vec::new();
    for kind in KINDS {
        let resource = kind.api_resource();
        let gvk =
            kube::api::GroupVersionKind::gvk(&resource.group, &resource.version, &resource.kind);
        if kube::discovery::pinned_kind(&client, &gvk).await.is_err() {
            tracing::info!(
                kind = kind.kind(),
                "router kind not installed; not watching it"
            );
            continue;
        }
        let routes: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        // One watch both fills the cache and triggers reconciles, so a reconcile a hand edit
        // triggered reads that edit from the cache.
        let writer = reflector::store::Writer::new(resource.clone());
        route_stores.push((kind.kind(), writer.as_reader()));
        let reflected = cached_watch(routes, writer, |r: &mut DynamicObject| {
            r.managed_fields_mut().clear();
        })
        .touched_objects();
        let store = store.clone();
        controller = controller.watches_stream_with(
            reflected,
            move |route| experiments_using(&store, kind, &route),
            resource,
        );
    }
    ctx.caches.set(metric_stores, route_stores);
    let caches = ctx.caches.clone();
    // Delivery outcomes ask for a reconcile: the reconciler is the one status writer, and
    // records them in `NotificationsDelivered`.
    if let Some(requests) = ctx.notifier.take_reconcile_requests() {
        controller = controller.reconcile_on(requests);
    }
    let config = kube::runtime::controller::Config::default()
        .concurrency(ctx.settings.max_concurrent_reconciles);
    controller
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|outcome| async move {
            if let Err(e) = outcome {
                tracing::debug!(%e, "reconcile error");
            }
        })
        .await;
    caches.clear();
    drop(watches);
}

/// A watch of `api` that fills `writer`'s store, each object first cut down by `trim` to what
/// the cache needs, retried with backoff; its events go on to whoever polls it.
fn cached_watch<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
}

/// The namespaces whose Metrics are watched: all when the controller watches all, else its
/// own and each shared one (the only ones an Experiment may use).
fn metric_scopes(namespace: Option<&str>, shared: &[String]) -> Vec<Option<String>> {
    let Some(ns) = namespace else {
        return vec![None];
    };
    let mut scopes = vec![Some(ns.to_string())];
    for s in shared {
        if !scopes.iter().any(|scope| scope.as_deref() == Some(s)) {
            scopes.push(Some(s.clone()));
        }
    }
    scopes
}

/// Why [`run_elected`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` resolved (a signal, or the caller's wish).
    Shutdown,
    /// Another replica holds the Lease now.
    LostLeadership,
}

/// Runs the controller as a replica: with an election, it first waits to hold the Lease,
/// reconciles only while it holds it, and gives it up when it stops; without one, it runs
/// until `shutdown`.
///
/// Readiness (`/readyz`) does not wait for leadership, so a standby is ready too: a Deployment
/// rollout (RollingUpdate, maxUnavailable 0) waits for the new pod to be Ready before it stops
/// the old one, which holds the Lease; were readiness tied to the Lease, neither would ever
/// happen. With an election it waits for the first successful read of the Lease (a replica that
/// cannot reach the API server could not take over); without one it is ready at once. Whether
/// this replica leads is the `iter8_controller_leader` gauge.
pub async fn run_elected<M: MetricsBackend + 'static>(
    ctx: Arc<Context<M>>,
    namespace: Option<&str>,
    election: Option<leader::LeaderElection>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Stopped {
    let telemetry = ctx.telemetry.clone();
    let _readiness_task = match &election {
        None => {
            telemetry.set_ready(true);
            None
        }
        Some(election) => {
            let (election, telemetry) = (election.clone(), telemetry.clone());
            Some(AbortOnDrop(tokio::spawn(async move {
                election.lease_read().await;
                telemetry.set_ready(true);
            })))
        }
    };
    // The shutdown trigger the controller takes must be Sync, which the election's futures
    // are not: they run in a task of their own and say why to stop through a watch channel.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(None::<Stopped>);
    let watcher = election.clone();
    let mut shutdown = Box::pin(shutdown);
    // Dropping this future (an aborted task) must also stop the renewals, or a dead replica
    // would go on holding the Lease.
    let _election_task = AbortOnDrop(tokio::spawn(async move {
        let reason = match watcher {
            Some(election) => {
                tracing::info!("waiting to become leader");
                tokio::select! {
                    () = election.acquire() => {}
                    () = &mut shutdown => {
                        let _ = stop_tx.send(Some(Stopped::Shutdown));
                        return;
                    }
                }
                let _ = stop_tx.send(None);
                tokio::select! {
                    () = election.hold() => Stopped::LostLeadership,
                    () = &mut shutdown => Stopped::Shutdown,
                }
            }
            None => {
                let _ = stop_tx.send(None);
                shutdown.await;
                Stopped::Shutdown
            }
        };
        let _ = stop_tx.send(Some(reason));
    }));
    // Wait for the Lease (signalled by the first `None`) or an early stop.
    if stop_rx.changed().await.is_err() {
        return Stopped::Shutdown;
    }
    if let Some(early) = *stop_rx.borrow_and_update() {
        return early;
    }
    telemetry.set_leading(true);
    let mut trigger = stop_rx.clone();
    let stop = async move {
        while trigger.changed().await.is_ok() {
            if trigger.borrow().is_some() {
                return;
            }
        }
    };
    tracing::info!(?namespace, "controller running");
    run(ctx, namespace, stop).await;
    telemetry.set_leading(false);
    if let Some(election) = &election {
        election.release().await;
    }
    let reason = *stop_rx.borrow();
    telemetry.set_ready(false);
    reason.unwrap_or(Stopped::Shutdown)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The experiments whose router is `route`.
fn experiments_using(
    store: &Store<Experiment>,
    kind: &dyn RouterKind,
    route: &DynamicObject,
) -> Vec<ObjectRef<Experiment>> {
    let (name, ns) = (route.name_any(), route.namespace());
    store
        .state()
        .iter()
        .filter(|exp| exp.namespace() == ns)
        .filter(|exp| {
            exp.spec
                .router
                .as_ref()
                .map(RouteTarget::of)
                .is_some_and(|t| t.kind.kind() == kind.kind() && t.name == name)
        })
        .map(|exp| ObjectRef::from_obj(exp.as_ref()))
        .collect()
}

/// The Experiment's key for logs and metrics.
pub fn key(exp: &Experiment) -> String {
    format!(
        "{}/{}",
        exp.meta().namespace.as_deref().unwrap_or_default(),
        exp.name_any()
    )
}
