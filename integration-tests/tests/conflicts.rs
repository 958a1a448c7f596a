//! 409 Conflicts on the controller's writes. The API server is real; a layer in the
//! controller's kube client makes another writer win the race just before the controller's
//! write: for the Experiment's status a real concurrent write (an annotation), so the real API
//! server answers 409; for the route (server-side apply with force, which the API server does
//! not refuse for a concurrent change) the layer answers a 409 Status itself. Every first
//! attempt at every write conflicts; the experiment must still run each iteration once,
//! never apply a split nobody decided, and finish as it would without conflicts.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::http::{Method, Request, Response, StatusCode};
use futures::future::BoxFuture;
use iter8_api::Action;
use iter8_controller::telemetry::Telemetry;
use iter8_crd::{Experiment, Phase};
use iter8_integration_tests::TestEnv;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::client::Body;
use serde_json::{Value, json};

use common::*;

/// Which of the controller's writes lose a race.
#[derive(Clone, Copy, PartialEq)]
enum Race {
    Status,
    Route,
    /// Every route write loses: someone rewrites the route as fast as iter8 does.
    RouteAlways,
}

/// What the racing layer did and saw.
struct RacePlan {
    race: Race,
    namespace: String,
    experiment: String,
    route: String,
    status_writes: AtomicU32,
    route_writes: AtomicU32,
    /// 409s the API server answered to the controller's status writes.
    status_conflicts: AtomicU32,
    /// 409s the layer answered to the controller's route writes.
    route_conflicts: AtomicU32,
    /// The weights of every route write that reached the API server, in order.
    applied: Mutex<Vec<Vec<u32>>>,
}

/// The controller's kube client service: every request goes to the real API server through
/// `real`, except as `plan` says.
#[derive(Clone)]
struct Racing {
    real: Client,
    plan: Arc<RacePlan>,
}

impl tower::Service<Request<Body>> for Racing {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (real, plan) = (self.real.clone(), self.plan.clone());
        Box::pin(async move { plan.handle(&real, request).await })
    }
}

impl RacePlan {
    async fn handle(
        &self,
        real: &Client,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, kube::Error> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        if method == Method::PUT
            && path.ends_with(&format!("/experiments/{}/status", self.experiment))
        {
            let n = self.status_writes.fetch_add(1, Ordering::SeqCst) + 1;
            if self.race == Race::Status && n % 2 == 1 {
                self.touch_experiment(real, n).await?;
            }
        }
        if method == Method::PATCH && path.ends_with(&format!("/httproutes/{}", self.route)) {
            let n = self.route_writes.fetch_add(1, Ordering::SeqCst) + 1;
            if (self.race == Race::Route && n % 2 == 1) || self.race == Race::RouteAlways {
                self.route_conflicts.fetch_add(1, Ordering::SeqCst);
                return Ok(route_conflict(&self.route));
            }
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await?;
            if let Ok(patch) = serde_json::from_slice::<Value>(&bytes) {
                self.applied
                    .lock()
                    .expect("not poisoned")
                    .push(backend_weights(&patch["spec"]));
            }
            request = Request::from_parts(parts, Body::from(bytes.to_vec()));
        }
        let response = real.send(request).await?;
        if response.status() == StatusCode::CONFLICT && path.ends_with("/status") {
            self.status_conflicts.fetch_add(1, Ordering::SeqCst);
        }
        Ok(response)
    }

    /// Another writer's change (an annotation: no generation, no status change) lands first,
    /// so the controller's write carries a stale resourceVersion.
    async fn touch_experiment(&self, real: &Client, n: u32) -> Result<(), kube::Error> {
        let api: Api<Experiment> = Api::namespaced(real.clone(), &self.namespace);
        let patch =
            json!({"metadata": {"annotations": {"test.iter8.tools/touched": n.to_string()}}});
        api.patch(
            &self.experiment,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }
}

/// The answer of an API server that lost an update race, as the real one words it.
fn route_conflict(name: &str) -> Response<Body> {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("Operation cannot be fulfilled on httproutes.gateway.networking.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        "reason": "Conflict",
        "details": {"name": name, "group": "gateway.networking.k8s.io", "kind": "httproutes"},
        "code": 409
    });
    let mut response = Response::new(Body::from(status.to_string().into_bytes()));
    *response.status_mut() = StatusCode::CONFLICT;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

fn backend_weights(spec: &Value) -> Vec<u32> {
    spec["rules"][0]["backendRefs"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    r["weight"]
                        .as_u64()
                        .and_then(|w| u32::try_from(w).ok())
                        .unwrap_or(1)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A kube client for `env`'s namespace whose writes of kind `race` lose, as its plan says, for
/// experiment `racing` on HTTPRoute `reviews`.
fn racing_client(env: &TestEnv, race: Race) -> (Arc<RacePlan>, Client) {
    let ns = env.namespace.name().to_owned();
    let plan = Arc::new(RacePlan {
        race,
        namespace: ns.clone(),
        experiment: "racing".into(),
        route: "reviews".into(),
        status_writes: AtomicU32::new(0),
        route_writes: AtomicU32::new(0),
        status_conflicts: AtomicU32::new(0),
        route_conflicts: AtomicU32::new(0),
        applied: Mutex::new(Vec::new()),
    });
    let racing = Client::new(
        Racing {
            real: env.client.clone(),
            plan: plan.clone(),
        },
        ns,
    );
    (plan, racing)
}

/// Runs a canary that promotes its candidate on clear data, with the controller's writes of
/// kind `race` losing every first race; checks the three proofs and returns the plan.
async fn canary_through_conflicts(test: &str, race: Race) -> Result<Arc<RacePlan>> {
    let env = TestEnv::new(test).await?;
    let ns = env.namespace.name().to_owned();
    install_crds(&env.client).await?;
    create_metrics(&env.client, &ns).await?;
    create_http_route(&env.client, &ns, "reviews").await?;
    let metrics = ScriptedMetrics::default();
    metrics.set("v1", 5000.0, 5.0, 0.0);
    metrics.set("v2", 5000.0, 4.0, 0.0);
    let assessed = AssessmentLog::start(start_analytics().await?).await?;
    let (plan, racing) = racing_client(&env, race);
    let (controller, telemetry) = start_controller_with(
        &racing,
        &ns,
        &format!("http://{}", assessed.addr),
        metrics,
        Duration::from_secs(5),
        None,
    )
    .await?;

    let began = Instant::now();
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    let mut exp = canary("racing", "reviews", 10)?;
    // Enough iterations for every kind of write to race several times.
    exp.spec.duration.min_iterations = 4;
    api.create(&PostParams::default(), &exp).await?;
    let done = wait_for_phase(&api, "racing", Phase::Completed).await?;
    eprintln!("{test}: completed in {:?}", began.elapsed());
    let status = done.status.clone().expect("status");

    // The experiment ends as it would without conflicts: the candidate promoted.
    assert_eq!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Promote)
    );
    assert_eq!(reviews_split(&env.client, &ns).await?, [0, 100]);
    // No iteration ran twice or was skipped, not even its assessment.
    assert_each_iteration_once(&env.client, &ns, &done, &assessed.iterations()).await?;
    // Every split the route ever carried was decided: the start, or a recorded iteration.
    let decided: Vec<Vec<u32>> = std::iter::once(vec![100, 0])
        .chain(status.history.iter().map(|r| r.weights.clone()))
        .collect();
    let applied = plan.applied.lock().expect("not poisoned").clone();
    assert!(!applied.is_empty());
    for split in &applied {
        assert!(
            decided.contains(split),
            "{split:?} applied, decided {decided:?}"
        );
    }
    // Conflicts are retried quietly: nothing for the user to act on.
    let warnings: Vec<String> = events_for(&env.client, &ns, "racing")
        .await?
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(warnings.is_empty(), "warnings: {warnings:?}");
    let status_conflicts = plan.status_conflicts.load(Ordering::SeqCst);
    eprintln!(
        "{test}: {} iterations; {} status writes, {status_conflicts} answered 409; {} route writes, {} answered 409; splits applied {applied:?}",
        status.completed_iterations,
        plan.status_writes.load(Ordering::SeqCst),
        plan.route_writes.load(Ordering::SeqCst),
        plan.route_conflicts.load(Ordering::SeqCst),
    );
    // The controller counted every status conflict it met (the injected ones, and any of its
    // own stale reads).
    assert_eq!(
        u64::from(status_conflicts),
        telemetry.status_conflicts.get()
    );
    controller.abort();
    env.cleanup().await?;
    Ok(plan)
}

#[tokio::test]
async fn status_write_conflicts_are_retried_without_repeating_an_iteration() -> Result<()> {
    let plan = canary_through_conflicts("conflict-status", Race::Status).await?;
    let writes = plan.status_writes.load(Ordering::SeqCst);
    // Every first attempt met a real 409 from the API server (start, each iteration's
    // pending and completed records).
    assert!(plan.status_conflicts.load(Ordering::SeqCst) >= writes / 2);
    assert!(writes >= 6, "{writes} status writes");
    Ok(())
}

#[tokio::test]
async fn route_write_conflicts_are_retried_without_repeating_an_iteration() -> Result<()> {
    let plan = canary_through_conflicts("conflict-route", Race::Route).await?;
    let writes = plan.route_writes.load(Ordering::SeqCst);
    assert!(writes >= 4, "{writes} route writes");
    assert_eq!(
        plan.route_conflicts.load(Ordering::SeqCst),
        writes.div_ceil(2)
    );
    Ok(())
}

/// A controller whose every route write answers 409, on an HTTPRoute `reviews` that already
/// carries both versions' entries (`start` weights), so an experiment can start without a
/// route write.
async fn controller_losing_every_route_write(
    test: &str,
    start: [u32; 2],
) -> Result<(
    TestEnv,
    Arc<RacePlan>,
    Telemetry,
    tokio::task::JoinHandle<()>,
)> {
    let env = TestEnv::new(test).await?;
    let ns = env.namespace.name().to_owned();
    install_crds(&env.client).await?;
    create_metrics(&env.client, &ns).await?;
    let routes: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &ns, &http_route_resource());
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "reviews"},
        "spec": {"rules": [{"backendRefs": [
            {"name": "reviews-v1", "port": 9080, "weight": start[0]},
            {"name": "reviews-v2", "port": 9080, "weight": start[1]}
        ]}]}
    }))?;
    routes.create(&PostParams::default(), &route).await?;
    let metrics = ScriptedMetrics::default();
    metrics.set("v1", 5000.0, 5.0, 0.0);
    metrics.set("v2", 5000.0, 4.0, 0.0);
    let (plan, racing) = racing_client(&env, Race::RouteAlways);
    let (controller, telemetry) = start_controller_with(
        &racing,
        &ns,
        &format!("http://{}", start_analytics().await?),
        metrics,
        Duration::from_secs(5),
        None,
    )
    .await?;
    Ok((env, plan, telemetry, controller))
}

/// Waits until `name` is held with `TrafficApplied` reason `RouteConflict`.
async fn held_by_route_conflict(api: &Api<Experiment>, name: &str) -> Result<Experiment> {
    wait_for(
        &format!("{name} held for a route conflict"),
        Duration::from_secs(60),
        async || {
            let exp = api.get(name).await?;
            let failures = exp.status.as_ref().map_or(0, |s| s.consecutive_failures);
            let reason = condition_reason(&exp, "TrafficApplied");
            Ok((failures >= 1 && reason.as_deref() == Some("RouteConflict")).then_some(exp))
        },
    )
    .await
}

#[tokio::test]
async fn a_route_conflict_that_outlasts_the_retries_holds_the_iteration_and_is_counted()
-> Result<()> {
    let (env, plan, telemetry, controller) =
        controller_losing_every_route_write("conflict-route-always", [100, 0]).await?;
    let ns = env.namespace.name().to_owned();
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &canary("racing", "reviews", 10)?)
        .await?;
    let held = held_by_route_conflict(&api, "racing").await?;
    let status = held.status.expect("status");
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("409 Conflict after all retries")),
        "{:?}",
        status.message
    );
    wait_for_warning(&env.client, &ns, "racing", "RouteConflict").await?;
    assert!(telemetry.route_conflicts.get() >= 1);
    assert!(
        plan.applied.lock().expect("not poisoned").is_empty(),
        "no route write got through"
    );
    controller.abort();
    env.cleanup().await
}

#[tokio::test]
async fn drift_is_reported_only_once_the_route_is_put_back() -> Result<()> {
    let (env, _plan, _telemetry, controller) =
        controller_losing_every_route_write("conflict-drift", [100, 0]).await?;
    let ns = env.namespace.name().to_owned();
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    let mut exp = canary("racing", "reviews", 10)?;
    // No iteration falls due during the test: each reconcile only checks for drift.
    exp.spec.duration.interval = "1h".into();
    api.create(&PostParams::default(), &exp).await?;
    wait_for_phase(&api, "racing", Phase::Running).await?;
    // A hand edit the controller sees (a watch event) but cannot undo.
    let routes: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &ns, &http_route_resource());
    routes
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"rules": [{"backendRefs": [
                {"name": "reviews-v1", "port": 9080, "weight": 50},
                {"name": "reviews-v2", "port": 9080, "weight": 50}
            ]}]}})),
        )
        .await?;
    held_by_route_conflict(&api, "racing").await?;
    let warned = wait_for_warning(&env.client, &ns, "racing", "RouteConflict").await?;
    assert!(
        !warned.iter().any(|w| w == "TrafficDrift"),
        "drift was reported as corrected while the route still carries the hand edit: {warned:?}"
    );
    controller.abort();
    env.cleanup().await
}
