//! The iter8 controller: watches `Experiment` resources and runs them iteration by iteration
//! (collect metrics, ask the analytics service, apply the split to the router, record status),
//! until a version is promoted, traffic is rolled back, or the iterations run out.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod conditions;
pub mod leader;
pub mod plan;
pub mod reconcile;
pub mod router;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use iter8_crd::Experiment;
use iter8_metrics::MetricsBackend;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};

pub use reconcile::{Context, Error, FINALIZER, Settings};

use crate::router::{RouteTarget, RouterKind};

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
    let mut controller = Controller::new(experiments, watcher::Config::default().any_semantic());
    let store = controller.store();
    for kind in [RouterKind::HttpRoute, RouterKind::VirtualService] {
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
        let store = store.clone();
        controller = controller.watches_with(
            routes,
            resource,
            watcher::Config::default().any_semantic(),
            move |route| experiments_using(&store, kind, &route),
        );
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|outcome| async move {
            if let Err(e) = outcome {
                tracing::debug!(%e, "reconcile error");
            }
        })
        .await;
}

/// The experiments whose router is `route`.
fn experiments_using(
    store: &Store<Experiment>,
    kind: RouterKind,
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
                .and_then(RouteTarget::of)
                .is_some_and(|t| t.kind == kind && t.name == name)
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
