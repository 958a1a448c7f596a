//! Leader election against the real API server with a leader that is alive but cut off.
//!
//! Replica A reaches the API server (and its analytics service) only through a [`Partition`].
//! With an iteration of A's in flight, the partition cuts A off: A cannot renew, and replica
//! B, on its own clock, takes the Lease once a lease duration has passed since it last saw
//! A's renewal. When the partition heals, A's in-flight reconcile finishes and tries to record
//! its iteration; no write may leave A then. What A's reconcile attempted and what actually
//! left its process are recorded on either side of the fence in A's kube client.

mod common;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use axum::http::{Method, Request};
use iter8_controller::analytics::{AnalyticsClient, ClientConfig, Endpoints};
use iter8_controller::fence::FenceLayer;
use iter8_controller::leader::{LeaderElection, Leadership, Timing};
use iter8_controller::{Stopped, run_elected};
use iter8_crd::Experiment;
use iter8_integration_tests::partition::Partition;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::client::ClientBuilder;
use tower::{Layer, Service};

use common::*;

const LEASE: &str = "iter8-controller";

/// Records, for every write passing it, whether the replica led when it passed.
#[derive(Clone)]
struct Tap {
    leadership: Leadership,
    writes: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Tap {
    fn new(leadership: &Leadership) -> Self {
        Self {
            leadership: leadership.clone(),
            writes: Arc::default(),
        }
    }

    /// The writes that passed while the replica did not lead.
    fn unled(&self) -> Vec<String> {
        let writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes
            .iter()
            .filter(|(_, held)| !held)
            .map(|(w, _)| w.clone())
            .collect()
    }
}

impl<S> Layer<S> for Tap {
    type Service = Tapped<S>;

    fn layer(&self, inner: S) -> Tapped<S> {
        Tapped {
            inner,
            tap: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Tapped<S> {
    inner: S,
    tap: Tap,
}

impl<S: Service<Request<B>>, B> Service<Request<B>> for Tapped<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        let path = request.uri().path();
        let write = matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) && !path.contains("/leases")
            && !path.contains("/events");
        if write {
            let entry = (
                format!("{} {path}", request.method()),
                self.tap.leadership.is_held(),
            );
            self.tap
                .writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry);
        }
        self.inner.call(request)
    }
}

fn holder(lease: Lease) -> String {
    lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_writes_nothing_after_its_renew_deadline() -> Result<()>
{
    let (env, metrics, assessed) = replicas_fixture("partition").await?;
    let ns = env.namespace.name().to_string();
    let timing = Timing {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(400),
    }
    .validate()?;

    // Replica A: everything it says to the API server and to analytics crosses partitions.
    let mut config = env.control_plane.config().await?;
    let server = config.cluster_url.clone();
    let upstream =
        tokio::net::lookup_host(server.authority().context("API server address")?.as_str())
            .await?
            .next()
            .context("API server address")?;
    let api_link = Partition::start(upstream).await?;
    let analytics_link = Partition::start(assessed.addr).await?;
    config.cluster_url = format!("https://{}", api_link.addr()).parse()?;
    let election_a = LeaderElection::with_timing(
        kube::Client::try_from(config.clone())?,
        &ns,
        LEASE,
        "replica-a",
        timing,
    );
    let leadership = election_a.leadership();
    let (attempted, sent) = (Tap::new(&leadership), Tap::new(&leadership));
    let client_a = ClientBuilder::try_from(config)?
        .with_layer(&sent)
        .with_layer(&FenceLayer::new(leadership.clone()))
        .with_layer(&attempted)
        .build();
    // A waits for analytics as long as the partition lasts (no timeout, no retry).
    let analytics_a_url = format!("http://{}", analytics_link.addr());
    let ctx_a = controller_context(
        &client_a,
        &analytics_a_url,
        metrics.clone(),
        AnalyticsClient::new(ClientConfig {
            timeout: Duration::from_secs(120),
            retries: 0,
            backoff: Duration::from_millis(100),
            ..ClientConfig::new(Endpoints::only([analytics_a_url.as_str()])?)
        })?,
        None,
    )?;
    let ns_a = ns.clone();
    let a = tokio::spawn(async move {
        run_elected(ctx_a, Some(&ns_a), Some(election_a), std::future::pending()).await
    });
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ns);
    wait_for("A to lead", Duration::from_secs(20), async || {
        Ok(leases
            .get_opt(LEASE)
            .await?
            .is_some_and(|l| holder(l) == "replica-a")
            .then_some(()))
    })
    .await?;

    // Replica B: directly connected, standing by.
    let analytics_b_url = format!("http://{}", assessed.addr);
    let ctx_b = controller_context(
        &env.client,
        &analytics_b_url,
        metrics.clone(),
        AnalyticsClient::new(ClientConfig {
            timeout: Duration::from_secs(5),
            retries: 1,
            backoff: Duration::from_millis(100),
            ..ClientConfig::new(Endpoints::only([analytics_b_url.as_str()])?)
        })?,
        None,
    )?;
    let election_b =
        LeaderElection::with_timing(env.client.clone(), &ns, LEASE, "replica-b", timing);
    let ns_b = ns.clone();
    let b = tokio::spawn(async move {
        run_elected(ctx_b, Some(&ns_b), Some(election_b), std::future::pending()).await
    });

    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &canary("partition", "reviews", 200)?,
    )
    .await?;
    wait_for_iterations(&api, "partition", 2).await?;
    ensure!(
        holder(leases.get(LEASE).await?) == "replica-a",
        "A leads while connected"
    );

    // A's next iteration waits for analytics behind the cut; then A loses the API server.
    analytics_link.set_cut(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    api_link.set_cut(true);
    wait_for("B to take the Lease", Duration::from_secs(30), async || {
        Ok((holder(leases.get(LEASE).await?) == "replica-b").then_some(()))
    })
    .await?;
    ensure!(
        !leadership.is_held(),
        "A stopped leading before B took over"
    );
    let taken_at = api
        .get("partition")
        .await?
        .status
        .context("status")?
        .completed_iterations;
    wait_for_iterations(&api, "partition", taken_at + 2).await?;

    // The partition heals: A's analytics answer arrives and its reconcile tries to record it.
    analytics_link.set_cut(false);
    api_link.set_cut(false);
    let stopped = tokio::time::timeout(Duration::from_secs(60), a)
        .await
        .context("A did not stop after the partition healed")??;
    assert_eq!(stopped, Stopped::LostLeadership);
    let tried = attempted.unled();
    ensure!(
        !tried.is_empty(),
        "A's in-flight reconcile tried no write after losing the Lease, so the test showed nothing"
    );
    let leaked = sent.unled();
    assert!(
        leaked.is_empty(),
        "writes left A after its renew deadline: {leaked:?}"
    );

    // B runs the experiment on: the route carries the split B recorded.
    let current = wait_for_iterations(&api, "partition", taken_at + 3).await?;
    let done = current
        .status
        .as_ref()
        .context("status")?
        .completed_iterations;
    let settled = wait_for(
        "the route to match status",
        Duration::from_secs(20),
        async || {
            let exp = api.get("partition").await?;
            let route: Vec<u64> = reviews_split(&env.client, &ns).await?.to_vec();
            Ok((route == recorded_split(&exp)).then_some(exp))
        },
    )
    .await?;
    ensure!(
        settled
            .status
            .as_ref()
            .is_some_and(|s| s.completed_iterations >= done),
        "iterations went back"
    );
    if holder(leases.get(LEASE).await?) != "replica-b" {
        bail!("B lost the Lease without a partition");
    }
    b.abort();
    env.cleanup().await
}
