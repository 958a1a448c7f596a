//! The `iter8` command steering a running controller: what `iter8 split`, `resume` and
//! `terminate` write moves the traffic of a real HTTPRoute, and `watch` and `describe` report
//! what the controller did. The binary is the one `integration-tests/run.sh` builds
//! (`cargo build -p iter8-cli --bins`); the commands' own tests are in
//! `crates/iter8-cli/tests/cluster.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use iter8_api::Action;
use iter8_crd::{Experiment, Phase};
use kube::api::{Api, PostParams};
use serde_json::json;

use common::*;
use iter8_integration_tests::workloads::{create_deployment, report_deployment};

/// `target/debug/iter8`, next to this test's own executable (`target/debug/deps/cli-*`).
fn iter8_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no target directory")?;
    let binary = dir.join("iter8");
    ensure!(
        binary.is_file(),
        "{} not found: build it with `cargo build -p iter8-cli --bins` (integration-tests/run.sh does)",
        binary.display()
    );
    Ok(binary)
}

async fn iter8(h: &Harness, args: &[&str]) -> Result<Output> {
    let kubeconfig = h.env.control_plane.kubeconfig_path();
    Ok(tokio::process::Command::new(iter8_binary()?)
        .args(args)
        .args(["-n", h.ns()])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await?)
}

async fn ok(h: &Harness, args: &[&str]) -> Result<String> {
    let out = iter8(h, args).await?;
    ensure!(
        out.status.success(),
        "iter8 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn split_resume_and_terminate_from_the_cli_move_the_routes_traffic() -> Result<()> {
    let h = Harness::new("cli-steer").await?;
    let api = h.undecided_canary("steered").await?;
    wait_for_iterations(&api, "steered", 1).await?;

    // `iter8 split` holds the given split on the route.
    ok(&h, &["split", "steered", "70", "30"]).await?;
    let paused = wait_for_phase(&api, "steered", Phase::Paused).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [70, 30]);
    let held = paused.status.context("status")?.completed_iterations;
    let get = ok(&h, &["get", "steered"]).await?;
    assert!(
        get.lines()
            .nth(1)
            .is_some_and(|l| l.contains(" Paused ") && l.contains("stable=70,next=30")),
        "{get}"
    );

    // `iter8 resume` hands the split back to the analytics: iterations go on.
    ok(&h, &["resume", "steered"]).await?;
    wait_for_iterations(&api, "steered", held + 1).await?;

    // `iter8 terminate` with a split ends it there.
    ok(&h, &["terminate", "steered", "90", "10"]).await?;
    wait_for_phase(&api, "steered", Phase::Aborted).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [90, 10]);

    // `watch` on the ended experiment reports the abort at once, with its exit code.
    let watched = iter8(&h, &["watch", "steered"]).await?;
    let text = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(4), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("experiment aborted; final split stable=90,next=10")),
        "{text}"
    );
    // `describe` shows the controller's own account: phase, conditions and its Events.
    let described = ok(&h, &["describe", "steered"]).await?;
    assert!(described.contains("Phase:        Aborted"), "{described}");
    assert!(described.contains("Override:     terminate with split stable=90,next=10"));
    let events = described
        .split("\nEvents:\n")
        .nth(1)
        .context("events section")?;
    assert!(
        !events.contains("<none>") && events.contains("Normal"),
        "the controller's Events are listed:\n{described}"
    );
    h.finish().await
}

/// A healthy canary `name` on HTTPRoute `reviews` (promoted after two iterations) with
/// `gates`.
async fn gated_canary(
    h: &Harness,
    name: &str,
    gates: serde_json::Value,
) -> Result<Api<Experiment>> {
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    let mut exp = serde_json::to_value(canary(name, "reviews", 12)?)?;
    exp["spec"]["gates"] = gates;
    let api = h.experiments();
    api.create(&PostParams::default(), &serde_json::from_value(exp)?)
        .await?;
    Ok(api)
}

/// Waits until `name` waits at a gate; returns the experiment.
async fn wait_at_gate(api: &Api<Experiment>, name: &str) -> Result<Experiment> {
    wait_for(
        &format!("{name} to wait at a gate"),
        Duration::from_secs(60),
        async || {
            let exp = api.get(name).await?;
            let waiting = exp.status.as_ref().is_some_and(|s| s.gate.is_some());
            Ok(waiting.then_some(exp))
        },
    )
    .await
}

#[tokio::test]
async fn a_promotion_gate_holds_the_split_until_iter8_approve_then_promotes() -> Result<()> {
    let h = Harness::new("cli-approve").await?;
    let api = gated_canary(&h, "gated", json!({"promotion": {}})).await?;
    let waiting = wait_at_gate(&api, "gated").await?;
    let status = waiting.status.clone().context("status")?;
    let gate = status.gate.clone().context("gate")?;
    assert!(gate.name.starts_with("promotion@"), "{gate:?}");
    assert_eq!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Promote),
        "the promotion is decided, and held"
    );
    assert_eq!(
        condition_reason(&waiting, "GateOpen").as_deref(),
        Some("AwaitingApproval")
    );
    // Held: the route keeps the split from before the promotion, nothing more is assessed.
    let held = reviews_split(&h.env.client, h.ns()).await?;
    assert_ne!(held, [0, 100]);
    let assessed = h.assessed.iterations().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, held);
    assert_eq!(
        h.assessed.iterations().len(),
        assessed,
        "no iteration runs at a gate"
    );
    let still = api.get("gated").await?;
    assert_eq!(still.status.as_ref().map(|s| s.phase), Some(Phase::Running));
    assert_eq!(
        event_count(&h.env.client, h.ns(), "gated", "AwaitingApproval").await?,
        1,
        "one AwaitingApproval Event when the wait starts, not one per check"
    );
    // `describe` says what is awaited, and how to give it.
    let described = ok(&h, &["describe", "gated"]).await?;
    assert!(described.contains("AwaitingApproval"), "{described}");
    assert!(
        described.contains(&format!("Gate:         {} waits for approval", gate.name))
            && described.contains("iter8 approve gated"),
        "{described}"
    );

    let said = ok(&h, &["approve", "gated"]).await?;
    assert!(
        said.contains(&format!("gate {} approved by ", gate.name)),
        "{said}"
    );
    let done = wait_for_phase(&api, "gated", Phase::Completed).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [0, 100]);
    let status = done.status.clone().context("status")?;
    let record = status
        .approvals
        .first()
        .context("the approval is recorded")?;
    let approval = done.spec.approval.clone().context("spec.approval")?;
    assert_eq!((&record.gate, &record.by), (&gate.name, &approval.by));
    assert!(!record.by.is_empty());
    assert_eq!(
        record.at,
        iter8_crd::approval_time(&done.metadata),
        "the server's time"
    );
    assert!(record.at.is_some());
    assert_eq!(status.gate, None);
    assert_eq!(
        condition_reason(&done, "GateOpen").as_deref(),
        Some("Approved")
    );
    assert_eq!(
        event_count(&h.env.client, h.ns(), "gated", "Approved").await?,
        1
    );
    // `describe` shows who opened which gate.
    let described = ok(&h, &["describe", "gated"]).await?;
    let row = described
        .lines()
        .skip_while(|l| !l.starts_with("Approvals"))
        .find(|l| l.contains(&gate.name))
        .with_context(|| format!("an approvals row for {}:\n{described}", gate.name))?;
    assert!(row.contains(&record.by), "{described}");
    h.finish().await
}

#[tokio::test]
async fn an_approved_gate_moves_no_traffic_to_a_version_that_stopped_being_ready() -> Result<()> {
    let h = Harness::new("gate-ready").await?;
    let (client, ns) = (h.env.client.clone(), h.ns().to_string());
    for name in ["reviews-v1", "reviews-v2"] {
        create_deployment(&client, &ns, name).await?;
        report_deployment(&client, &ns, name, true).await?;
    }
    create_http_route(&client, &ns, "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    let mut exp = serde_json::to_value(canary("gated", "reviews", 12)?)?;
    exp["spec"]["gates"] = json!({"promotion": {}});
    exp["spec"]["versions"][0]["workload"] = json!({"name": "reviews-v1"});
    exp["spec"]["versions"][1]["workload"] = json!({"name": "reviews-v2"});
    let api = h.experiments();
    api.create(&PostParams::default(), &serde_json::from_value(exp)?)
        .await?;
    wait_at_gate(&api, "gated").await?;
    let held = reviews_split(&client, &ns).await?;
    assert_ne!(held, [0, 100]);

    // The candidate's rollout breaks while the promotion waits; then someone approves it.
    report_deployment(&client, &ns, "reviews-v2", false).await?;
    ok(&h, &["approve", "gated"]).await?;
    let waiting = wait_for(
        "the approved promotion to wait for the candidate",
        Duration::from_secs(30),
        async || {
            let exp = api.get("gated").await?;
            let reason = condition_reason(&exp, "VersionsReady");
            Ok((reason.as_deref() == Some("DeploymentNotAvailable")).then_some(exp))
        },
    )
    .await?;
    assert_eq!(
        waiting.status.as_ref().map(|s| s.phase),
        Some(Phase::Running)
    );
    assert_eq!(
        condition_reason(&waiting, "GateOpen").as_deref(),
        Some("AwaitingVersions"),
        "the gate says it is open and what it waits for"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        reviews_split(&client, &ns).await?,
        held,
        "no traffic moved to a candidate that is not Available"
    );

    // Ready again: the same approval opens the gate and the promotion goes through.
    report_deployment(&client, &ns, "reviews-v2", true).await?;
    let done = wait_for_phase(&api, "gated", Phase::Completed).await?;
    assert_eq!(reviews_split(&client, &ns).await?, [0, 100]);
    assert_eq!(
        condition_reason(&done, "GateOpen").as_deref(),
        Some("Approved")
    );
    assert_eq!(
        condition_reason(&done, "VersionsReady").as_deref(),
        Some("Ready"),
        "the check that let traffic move is what the finished experiment shows"
    );
    h.finish().await
}

#[tokio::test]
async fn a_gate_not_approved_in_time_rolls_back_to_the_baseline() -> Result<()> {
    let h = Harness::new("gate-timeout").await?;
    let gates = json!({"promotion": {"timeout": "3s", "onTimeout": "rollback"}});
    let api = gated_canary(&h, "late", gates).await?;
    wait_at_gate(&api, "late").await?;
    let failed = wait_for_phase(&api, "late", Phase::Failed).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [100, 0]);
    assert_eq!(
        condition_reason(&failed, "Completed").as_deref(),
        Some("GateTimedOut")
    );
    let status = failed.status.clone().context("status")?;
    assert!(status.approvals.is_empty() && status.gate.is_none());
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not approved within 3s")),
        "{:?}",
        status.message
    );
    // An approval now finds nothing to approve.
    let late = iter8(&h, &["approve", "late"]).await?;
    assert!(!late.status.success());
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("has already ended (phase Failed)"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );
    h.finish().await
}

/// A gate webhook on loopback: answers `code` (changeable) to each POST and keeps the bodies.
struct Approver {
    addr: std::net::SocketAddr,
    code: Arc<AtomicU16>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Approver {
    async fn start(code: u16) -> Result<Self> {
        let code = Arc::new(AtomicU16::new(code));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().route(
            "/confirm",
            axum::routing::post({
                let (code, bodies) = (code.clone(), bodies.clone());
                move |axum::Json(body): axum::Json<serde_json::Value>| async move {
                    bodies.lock().expect("lock").push(body);
                    axum::http::StatusCode::from_u16(code.load(Ordering::SeqCst))
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, code, bodies })
    }
}

#[tokio::test]
async fn a_webhook_gate_opens_only_on_a_2xx_from_an_allowed_url() -> Result<()> {
    let approver = Approver::start(503).await?;
    let allowed = format!("http://{}/", approver.addr);
    let h = Harness::with_gate_webhooks("gate-webhook", vec![allowed]).await?;
    let url = format!("http://{}/confirm", approver.addr);
    let api = gated_canary(
        &h,
        "hooked",
        json!({"promotion": {"webhook": {"url": url}}}),
    )
    .await?;
    let waiting = wait_at_gate(&api, "hooked").await?;
    // A 503 holds the promotion; the webhook got Flagger's confirm-promotion shape.
    wait_for(
        "the webhook to be asked twice",
        Duration::from_secs(30),
        async || Ok((approver.bodies.lock().expect("lock").len() >= 2).then_some(())),
    )
    .await?;
    let held = api.get("hooked").await?;
    let message = held
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("its webhook answered HTTP 503"),
        "{message}"
    );
    assert_eq!(held.status.as_ref().map(|s| s.phase), Some(Phase::Running));
    assert_ne!(reviews_split(&h.env.client, h.ns()).await?, [0, 100]);
    let gate = waiting.status.and_then(|s| s.gate).context("gate")?;
    let body = approver.bodies.lock().expect("lock")[0].clone();
    assert_eq!(body["name"], "hooked");
    assert_eq!(body["namespace"], h.ns());
    assert_eq!(body["phase"], "Running");
    assert_eq!(body["metadata"]["gate"], gate.name.as_str());
    assert_eq!(body["metadata"]["weights"], "stable=0,next=100");

    // A 200 opens it: the candidate is promoted, the webhook recorded as the approver.
    approver.code.store(200, Ordering::SeqCst);
    let done = wait_for_phase(&api, "hooked", Phase::Completed).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [0, 100]);
    let record = done
        .status
        .as_ref()
        .and_then(|s| s.approvals.first().cloned())
        .context("approval recorded")?;
    assert_eq!(
        (record.gate, record.by),
        (gate.name, format!("webhook {url}"))
    );
    h.finish().await
}

#[tokio::test]
async fn a_webhook_under_no_allowed_url_is_never_called() -> Result<()> {
    let approver = Approver::start(200).await?;
    let h = Harness::with_gate_webhooks("gate-webhook-denied", vec!["http://127.0.0.1:1/".into()])
        .await?;
    let url = format!("http://{}/confirm", approver.addr);
    let api = gated_canary(
        &h,
        "denied",
        json!({"promotion": {"webhook": {"url": url}}}),
    )
    .await?;
    wait_at_gate(&api, "denied").await?;
    let refused = wait_for("WebhookNotAllowed", Duration::from_secs(30), async || {
        let exp = api.get("denied").await?;
        Ok(
            (condition_reason(&exp, "GateOpen").as_deref() == Some("WebhookNotAllowed"))
                .then_some(exp),
        )
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        approver.bodies.lock().expect("lock").is_empty(),
        "the controller never called it"
    );
    assert_eq!(
        api.get("denied").await?.status.map(|s| s.phase),
        Some(Phase::Running)
    );
    assert!(
        refused
            .status
            .and_then(|s| s.message)
            .is_some_and(|m| m.contains("--gate-webhook-allowed-urls"))
    );
    h.finish().await
}
