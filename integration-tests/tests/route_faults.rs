//! Route writes that fail or race. The API server is real; a layer in the controller's kube
//! client stands between the controller and HTTPRoute `reviews`:
//! - it answers the controller's writes with a 503 while the test says so, as an API server
//!   behind an overloaded etcd would. Traffic must never be left unsafe: a running experiment
//!   whose route cannot be put back stays (with its finalizer) until the route carries the
//!   baseline again (review C2);
//! - it lets a person edit the route just before the controller's write lands. The write is
//!   optimistic (resourceVersion precondition), so the real API server refuses it with 409 and
//!   the controller redoes it on a fresh read: the person's edit survives (review M7).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use axum::http::{Method, Request, Response, StatusCode};
use futures::future::BoxFuture;
use iter8_crd::Experiment;
use iter8_integration_tests::TestEnv;
use kube::Client;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::client::Body;
use kube::{Api, ResourceExt};
use serde_json::json;

use common::*;

/// Whether the route's writes fail, and how many were refused; whether a person edits the
/// route just before the controller's next write.
#[derive(Default)]
struct RouteFaults {
    failing: AtomicBool,
    refused: AtomicU32,
    hand_edit: AtomicBool,
    /// 409s the real API server answered to the controller's route writes.
    conflicts: AtomicU32,
}

/// The controller's kube client service: every request goes to the real API server, except
/// writes of HTTPRoute `reviews` while `faults.failing`.
#[derive(Clone)]
struct FailingRoutes {
    real: Client,
    faults: Arc<RouteFaults>,
}

impl tower::Service<Request<Body>> for FailingRoutes {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (real, faults) = (self.real.clone(), self.faults.clone());
        Box::pin(async move {
            let writes_route = request.uri().path().ends_with("/httproutes/reviews")
                && [Method::PATCH, Method::PUT].contains(request.method());
            if writes_route && faults.failing.load(Ordering::SeqCst) {
                faults.refused.fetch_add(1, Ordering::SeqCst);
                return Ok(unavailable());
            }
            if writes_route && faults.hand_edit.swap(false, Ordering::SeqCst) {
                let ns = namespace_of(request.uri().path());
                add_header_match(&real, &ns).await?;
            }
            let response = real.send(request).await?;
            if writes_route && response.status() == StatusCode::CONFLICT {
                faults.conflicts.fetch_add(1, Ordering::SeqCst);
            }
            Ok(response)
        })
    }
}

/// A person's edit of rule 0 of HTTPRoute `reviews` (a header match), through the real client.
async fn add_header_match(real: &Client, ns: &str) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(real.clone(), ns, &http_route_resource());
    let mut route = api.get("reviews").await?;
    route.data["spec"]["rules"][0]["matches"]
        .as_array_mut()
        .expect("matches")
        .push(json!({"headers": [{"name": "x-person", "value": "edit"}]}));
    api.replace("reviews", &PostParams::default(), &route)
        .await?;
    Ok(())
}

/// The namespace in an API path (`.../namespaces/<ns>/...`).
fn namespace_of(path: &str) -> String {
    path.split('/')
        .skip_while(|p| *p != "namespaces")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// A 503 Status, as the API server words one.
fn unavailable() -> Response<Body> {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server is currently unable to handle the request",
        "reason": "ServiceUnavailable", "code": 503
    });
    let mut response = Response::new(Body::from(status.to_string().into_bytes()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

#[tokio::test]
async fn a_deleted_experiment_keeps_its_finalizer_until_traffic_is_back_on_the_baseline()
-> Result<()> {
    let env = TestEnv::new("cleanup-fails").await?;
    let ns = env.namespace.name().to_owned();
    install_crds(&env.client).await?;
    create_metrics(&env.client, &ns).await?;
    create_http_route(&env.client, &ns, "reviews").await?;
    let faults = Arc::new(RouteFaults::default());
    let controller = running_canary(&env, &faults, "gone").await?;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);

    faults.failing.store(true, Ordering::SeqCst);
    api.delete("gone", &Default::default()).await?;
    // Several cleanup attempts fail; the experiment must still be there, finalizer and all.
    let pending = wait_for(
        "three refused route writes, or the experiment gone",
        Duration::from_secs(30),
        async || {
            let exp = api.get_opt("gone").await?;
            let retried = faults.refused.load(Ordering::SeqCst) >= 3;
            Ok((retried || exp.is_none()).then_some(exp))
        },
    )
    .await?
    .expect("the experiment is not gone while its route carries the candidate's split");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        pending
            .finalizers()
            .iter()
            .any(|f| f == iter8_controller::FINALIZER),
        "the finalizer stays while traffic is not safe"
    );
    assert!(reviews_split(&env.client, &ns).await?[1] > 0);
    assert!(
        warning_reasons(&env.client, &ns, "gone")
            .await?
            .contains(&"CleanupFailed".to_owned())
    );

    // The route can be written again: traffic goes back, then the experiment goes.
    faults.failing.store(false, Ordering::SeqCst);
    wait_for(
        "the experiment to be gone",
        Duration::from_secs(30),
        async || Ok(api.get_opt("gone").await?.is_none().then_some(())),
    )
    .await?;
    assert_eq!(reviews_split(&env.client, &ns).await?, [100, 0]);
    controller.abort();
    env.cleanup().await
}

/// Starts a controller whose client passes through [`FailingRoutes`], with an undecided canary
/// on HTTPRoute `reviews`; returns when the candidate has traffic.
async fn running_canary(
    env: &TestEnv,
    faults: &Arc<RouteFaults>,
    name: &str,
) -> Result<tokio::task::JoinHandle<()>> {
    let ns = env.namespace.name().to_owned();
    let metrics = ScriptedMetrics::default();
    metrics.set("v1", 400.0, 3.0, 0.0);
    metrics.set("v2", 400.0, 3.0, 0.0);
    let analytics = start_analytics().await?;
    let client = Client::new(
        FailingRoutes {
            real: env.client.clone(),
            faults: faults.clone(),
        },
        ns.clone(),
    );
    let (controller, _) = start_controller_with(
        &client,
        &ns,
        &format!("http://{analytics}"),
        metrics,
        Duration::from_secs(5),
        None,
    )
    .await?;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &canary(name, "reviews", 200)?)
        .await?;
    wait_for(
        "the candidate to get traffic",
        Duration::from_secs(60),
        async || Ok((reviews_split(&env.client, &ns).await?[1] > 0).then_some(())),
    )
    .await?;
    Ok(controller)
}

fn matches(route: &DynamicObject) -> Vec<serde_json::Value> {
    route.data["spec"]["rules"][0]["matches"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_hand_edit_between_the_controllers_read_and_write_survives() -> Result<()> {
    let env = TestEnv::new("route-hand-edit").await?;
    let ns = env.namespace.name().to_owned();
    install_crds(&env.client).await?;
    create_metrics(&env.client, &ns).await?;
    create_http_route(&env.client, &ns, "reviews").await?;
    let faults = Arc::new(RouteFaults::default());
    let controller = running_canary(&env, &faults, "edited").await?;
    let routes: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &ns, &http_route_resource());
    let before = reviews_split(&env.client, &ns).await?;

    // The next route write is preceded by a person's edit, after the controller's read.
    faults.hand_edit.store(true, Ordering::SeqCst);
    wait_for(
        "the next split on the route",
        Duration::from_secs(60),
        async || {
            let split = reviews_split(&env.client, &ns).await?;
            Ok((!faults.hand_edit.load(Ordering::SeqCst) && split != before).then_some(()))
        },
    )
    .await?;
    assert!(
        faults.conflicts.load(Ordering::SeqCst) >= 1,
        "the real API server refused the write made from the stale read"
    );
    let route = routes.get("reviews").await?;
    assert!(
        matches(&route)
            .iter()
            .any(|m| m["headers"][0]["name"] == json!("x-person")),
        "the person's match survives: {:?}",
        matches(&route)
    );
    // And the route carries the experiment's split.
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    wait_for(
        "the route to carry the recorded split",
        Duration::from_secs(30),
        async || {
            let recorded = recorded_split(&api.get("edited").await?);
            let route = reviews_split(&env.client, &ns).await?.to_vec();
            Ok((recorded == route).then_some(()))
        },
    )
    .await?;
    controller.abort();
    env.cleanup().await
}

#[tokio::test]
async fn a_route_whose_rules_another_manager_owns_keeps_that_managers_content() -> Result<()> {
    let env = TestEnv::new("route-other-manager").await?;
    let ns = env.namespace.name().to_owned();
    install_crds(&env.client).await?;
    create_metrics(&env.client, &ns).await?;
    // A GitOps tool owns spec.rules by server-side apply, with a filter iter8 knows nothing of.
    let routes: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &ns, &http_route_resource());
    let applied = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "reviews"},
        "spec": {"rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/reviews"}}],
            "filters": [{"type": "RequestHeaderModifier",
                         "requestHeaderModifier": {"add": [{"name": "x-gitops", "value": "1"}]}}],
            "backendRefs": [{"name": "reviews-v1", "port": 9080, "weight": 100}]
        }]}
    });
    routes
        .patch(
            "reviews",
            &PatchParams::apply("gitops"),
            &Patch::Apply(&applied),
        )
        .await?;
    let faults = Arc::new(RouteFaults::default());
    let controller = running_canary(&env, &faults, "edited").await?;
    let route = routes.get("reviews").await?;
    let rule = &route.data["spec"]["rules"][0];
    assert_eq!(rule["matches"], applied["spec"]["rules"][0]["matches"]);
    assert_eq!(rule["filters"], applied["spec"]["rules"][0]["filters"]);
    // iter8 wrote the weights as an update on what it read, not as a forced apply of its own
    // copy of the rules: the GitOps tool's apply is not overruled by force.
    let managers: Vec<(String, String)> = route
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| Some((m.manager?, m.operation?)))
        .collect();
    assert!(
        managers.contains(&("iter8-controller".into(), "Update".into())),
        "{managers:?}"
    );
    assert!(
        !managers.contains(&("iter8-controller".into(), "Apply".into())),
        "{managers:?}"
    );
    let split = reviews_split(&env.client, &ns).await?;
    assert_eq!(split[0] + split[1], 100, "{split:?}");
    controller.abort();
    env.cleanup().await
}
