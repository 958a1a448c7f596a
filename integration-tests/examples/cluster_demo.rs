//! The cluster quickstart (`bash integration-tests/cluster-demo.sh`; docs/quickstart-cluster.md):
//! a canary with live traffic through a real gateway, on iter8 installed by its Helm chart.
//!
//! Brings up, on the control plane of `ITER8_TEST_KUBECONFIG` (or a private one): two versions
//! of the sample app in a network namespace behind their Services, Traefik serving a Gateway
//! and HTTPRoute `sample`, Prometheus scraping the apps, the chart installed with helm and its
//! analytics and controller binaries run as the chart's Deployments configure them (the
//! controller on its ServiceAccount's token); then sends load through the gateway, creates a
//! canary, prints what `kubectl get experiments` shows each iteration with the traffic each
//! version served, and at the end the decision and its reason. Everything is removed on exit.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use iter8_crd::{Experiment, Phase};
use iter8_integration_tests::chart::{Workloads, install_chart, sample_canary};
use iter8_integration_tests::gateway::{BackendSpec, Backends, Gateway, Load, create_route};
use iter8_integration_tests::prometheus::{Prometheus, free_port};
use iter8_integration_tests::{ControlPlane, TestNamespace};
use kube::api::{Api, PostParams};

fn step(what: &str) {
    println!("==> {what}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let started = Instant::now();
    let control_plane = ControlPlane::shared()?;
    let client = control_plane.client().await?;
    let namespace = TestNamespace::create(control_plane, &client, "demo").await?;
    let ns = namespace.name().to_string();
    let work = tempfile::tempdir()?;
    step(&format!(
        "namespace {ns} on the kube-apiserver of {}",
        control_plane.kubeconfig_path().display()
    ));

    let specs: Vec<BackendSpec> = [("v1", 0.01, 1), ("v2", 0.002, 2)]
        .into_iter()
        .map(|(version, error_rate, seed)| BackendSpec {
            service: format!("sample-{version}"),
            config: iter8_sample_app::Config {
                version: version.into(),
                latency_ms: 2.0,
                latency_sigma: 0.3,
                error_rate,
                conversion_rate: 0.0,
                seed,
                buckets_ms: vec![1.0, 2.0, 5.0, 10.0, 50.0],
            },
        })
        .collect();
    let backends = Backends::start(&client, &ns, &specs).await?;
    for app in backends.apps() {
        step(&format!(
            "sample app {} (Service {}) listening on {} in network namespace {}",
            app.version,
            app.service,
            app.addr,
            backends.netns().name()
        ));
    }
    let gateway = Gateway::start(control_plane, &client, &ns).await?;
    create_route(&client, &ns, &gateway, "sample", &[("sample-v1", 100)]).await?;
    step(&format!(
        "Traefik serving Gateway `gateway` at {} with HTTPRoute `sample` -> sample-v1",
        gateway.url()
    ));
    let prometheus = Prometheus::start(&backends.addrs())?;
    let http = reqwest::Client::new();
    prometheus
        .wait_scraped(&http, backends.apps().len(), Duration::from_secs(60))
        .await?;
    step(&format!(
        "Prometheus at {} scraping both apps every second",
        prometheus.url()
    ));

    // helm install, and the chart's two workloads as processes.
    let analytics_port = free_port()?;
    install_chart(control_plane, &ns, analytics_port, prometheus.url(), "")?;
    step("helm install iter8 charts/iter8 (CRDs, RBAC, Deployments, the Metric library)");
    let workloads = Workloads::start(
        control_plane,
        &client,
        &ns,
        analytics_port,
        "iter8-controller-0",
        work.path(),
    )
    .await?;
    step("iter8-analytics and iter8-controller running as the chart configures them");

    let load = Load::start(&gateway.url(), 4);
    step(&format!(
        "load: 4 concurrent requests at a time to {}",
        gateway.url()
    ));
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), &ns);
    let experiment: Experiment = serde_json::from_value(sample_canary(0.02, 25, "3s", 3))?;
    experiments
        .create(&PostParams::default(), &experiment)
        .await?;
    step(
        "canary sample-canary created: candidate v2 against stable v1, error rate <= 2 %, mean latency <= 50 ms\n",
    );

    println!(
        "{:<15} {:<8} {:<10} {:<10} {:<26} {:<10} SERVED SINCE LAST LINE (v1 / v2)",
        "NAME", "KIND", "PHASE", "ITERATION", "WEIGHTS", "AGE"
    );
    let mut last_iteration = None;
    let mut last_served = backends.served(&http).await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let done = loop {
        let exp = experiments.get("sample-canary").await?;
        let status = exp.status.clone().unwrap_or_default();
        if last_iteration != Some(status.completed_iterations) || status.phase == Phase::Completed {
            let served = backends.served(&http).await?;
            let delta: Vec<u64> = served
                .iter()
                .zip(&last_served)
                .map(|(a, b)| a - b)
                .collect();
            println!(
                "{:<15} {:<8} {:<10} {:<10} {:<26} {:<10} {} / {}",
                "sample-canary",
                "canary",
                format!("{:?}", status.phase),
                status.completed_iterations,
                status.weights_summary.clone().unwrap_or_default(),
                format!("{}s", started.elapsed().as_secs()),
                delta[0],
                delta[1]
            );
            last_iteration = Some(status.completed_iterations);
            last_served = served;
        }
        if status.phase == Phase::Completed {
            break exp;
        }
        if Instant::now() > deadline {
            bail!(
                "the canary did not complete within 180 s
{}",
                workloads.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let status = done.status.context("status")?;
    let decision = status.decision.context("decision")?;
    println!();
    step(&format!(
        "decision: {:?}{} -- {}",
        decision.action,
        status
            .recommended_version
            .map(|v| format!(" (recommended version: {v})"))
            .unwrap_or_default(),
        decision.reason
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = backends.served(&http).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = backends.served(&http).await?;
    step(&format!(
        "traffic at the apps in the 2 s after the decision: v1 {} requests, v2 {} requests",
        after[0] - before[0],
        after[1] - before[1]
    ));
    load.stop();
    drop(workloads);
    gateway.stop().await?;
    drop(backends);
    namespace.delete().await?;
    step(&format!(
        "done in {} s; everything removed",
        started.elapsed().as_secs()
    ));
    Ok(())
}
