//! Notifications on a real API server, to real HTTP receivers in this process: a canary
//! announces its start, each iteration, its promotion and its end, in order, as signed
//! CloudEvents; and a receiver that refuses connections or answers too slowly changes nothing
//! about the experiment (decision, iterations, timing) but the `NotificationsDelivered`
//! condition and the failure count; a rollback reaches a Slack-format receiver as one
//! readable message; a gate's wait is announced once, however often it is checked; the
//! failure policy ending an experiment announces the failure and the end.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use iter8_api::Action;
use iter8_controller::notifier::NotifierConfig;
use iter8_crd::{Experiment, Phase};
use iter8_integration_tests::TestEnv;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use common::*;

/// One request a receiver got: its content type, signature header and body.
#[derive(Clone, Debug)]
struct Received {
    content_type: String,
    signature: Option<String>,
    body: Vec<u8>,
}

/// A receiver at `http://<addr>/hooks/team` answering 202 after `delay`; everything it got
/// (logged on arrival).
async fn start_receiver(delay: Duration) -> Result<(SocketAddr, Arc<Mutex<Vec<Received>>>)> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
        let log = log.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            log.lock().expect("not poisoned").push(Received {
                content_type: header("content-type").unwrap_or_default(),
                signature: header("x-iter8-signature"),
                body: body.to_vec(),
            });
            tokio::time::sleep(delay).await;
            StatusCode::ACCEPTED
        }
    };
    let app = axum::Router::new().route("/hooks/team", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, app).into_future());
    Ok((addr, got))
}

/// A namespace with the CRDs, Metrics and HTTPRoute `reviews`, and a controller of its own
/// (scripted metrics on which a canary promotes `next`) with the notifier's `config`.
async fn promoting_fixture(
    test: &str,
    config: NotifierConfig,
) -> Result<(
    TestEnv,
    tokio::task::JoinHandle<()>,
    iter8_controller::telemetry::Telemetry,
)> {
    fixture(test, config, 4.0).await
}

/// As [`promoting_fixture`], with the candidate's errors per iteration (5,000 requests): 4
/// promotes it, 250 breaks the error-rate criterion and rolls it back.
async fn fixture(
    test: &str,
    config: NotifierConfig,
    candidate_errors: f64,
) -> Result<(
    TestEnv,
    tokio::task::JoinHandle<()>,
    iter8_controller::telemetry::Telemetry,
)> {
    let (env, metrics, assessed) = replicas_fixture(test).await?;
    let ns = env.namespace.name().to_string();
    metrics.set("v1", 5000.0, 5.0, 0.0);
    metrics.set("v2", 5000.0, candidate_errors, 0.0);
    let analytics = format!("http://{}", assessed.addr);
    let client = iter8_controller::analytics::AnalyticsClient::new(test_client_config(
        &[analytics.as_str()],
        Duration::from_secs(5),
    )?)?;
    let ctx = controller_context_notifying(&env.client, &analytics, metrics, client, None, config)?;
    let telemetry = ctx.telemetry.clone();
    let handle = tokio::spawn(async move {
        iter8_controller::run(ctx, Some(&ns), std::future::pending()).await;
    });
    Ok((env, handle, telemetry))
}

/// Canary `name` on HTTPRoute `reviews` with `notifications`.
async fn create_canary(env: &TestEnv, name: &str, notifications: Value) -> Result<Api<Experiment>> {
    let mut exp = canary(name, "reviews", 10)?;
    exp.spec.notifications = serde_json::from_value(notifications)?;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), env.namespace.name());
    api.create(&PostParams::default(), &exp).await?;
    Ok(api)
}

fn count(telemetry: &iter8_controller::telemetry::Telemetry, kind: &str, outcome: &str) -> u64 {
    telemetry
        .notifications
        .with_label_values(&[kind, outcome])
        .get()
}

fn condition(exp: &Experiment, type_: &str) -> Option<(String, String, String)> {
    exp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_canary_announces_start_iterations_promotion_and_end_as_signed_cloud_events() -> Result<()>
{
    let (receiver, got) = start_receiver(Duration::ZERO).await?;
    let (env, controller, telemetry) = promoting_fixture(
        "notify-canary",
        NotifierConfig {
            allowed: vec![format!("http://{receiver}/hooks")],
            backoff: Duration::from_millis(100),
            ..NotifierConfig::default()
        },
    )
    .await?;
    let ns = env.namespace.name().to_string();
    let key = b"a shared secret the receiver also has".to_vec();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    let mut secret = Secret::default();
    secret.metadata.name = Some("hook-key".into());
    secret.data = Some([("key".to_owned(), ByteString(key.clone()))].into());
    secrets.create(&PostParams::default(), &secret).await?;
    let api = create_canary(
        &env,
        "notified",
        json!([{
            "name": "team",
            "url": format!("http://{receiver}/hooks/team"),
            "events": ["start", "iteration", "promote", "rollback", "end"],
            "signingSecret": {"name": "hook-key"}
        }]),
    )
    .await?;

    let done = wait_for_phase(&api, "notified", Phase::Completed).await?;
    let status = done.status.clone().context("status")?;
    assert_eq!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Promote)
    );
    let received = wait_for(
        "the end notification",
        Duration::from_secs(15),
        async || {
            let got = got.lock().expect("not poisoned").clone();
            let ended = got.iter().any(|r| {
                serde_json::from_slice::<Value>(&r.body)
                    .is_ok_and(|e| e["type"] == "tools.iter8.experiment.end")
            });
            Ok(ended.then_some(got))
        },
    )
    .await?;

    let verifier = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let mut events = Vec::new();
    for r in &received {
        assert_eq!(r.content_type, "application/cloudevents+json");
        let hex = r
            .signature
            .as_deref()
            .and_then(|s| s.strip_prefix("sha256="))
            .context("a sha256= signature")?;
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()?;
        aws_lc_rs::hmac::verify(&verifier, &r.body, &tag)
            .map_err(|_| anyhow::anyhow!("the signature does not verify with the Secret's key"))?;
        events.push(serde_json::from_slice::<Value>(&r.body)?);
    }
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    let iterations = status.completed_iterations as usize;
    let mut expected = vec!["tools.iter8.experiment.start"];
    expected.extend(std::iter::repeat_n(
        "tools.iter8.experiment.iteration",
        iterations,
    ));
    expected.extend([
        "tools.iter8.experiment.promote",
        "tools.iter8.experiment.end",
    ]);
    assert_eq!(types, expected, "in the order of the experiment's life");
    let ids: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "each event has its own id");
    for (n, e) in events.iter().enumerate() {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(
            e["source"],
            format!("/apis/iter8.tools/v3alpha1/namespaces/{ns}/experiments/notified")
        );
        assert_eq!(e["subject"], "notified");
        assert!(
            e["time"]
                .as_str()
                .is_some_and(|t| t.parse::<k8s_openapi::jiff::Timestamp>().is_ok()),
            "{e}"
        );
        assert_eq!(e["data"]["experiment"], "notified");
        assert_eq!(e["data"]["namespace"], ns.as_str());
        if (1..=iterations).contains(&n) {
            assert_eq!(e["data"]["iteration"], n, "iteration events count up: {e}");
        }
    }
    let promote = &events[iterations + 1]["data"];
    assert_eq!(promote["decision"]["action"], "promote");
    assert_eq!(promote["decision"]["version"], "next");
    assert_eq!(promote["phase"], "Completed");
    assert_eq!(
        promote["weights"],
        json!([{"version": "stable", "weight": 0}, {"version": "next", "weight": 100}])
    );
    assert_eq!(events[0]["data"]["phase"], "Running");

    // What the user sees: the condition, and the counters.
    let delivered = wait_for(
        "NotificationsDelivered=True",
        Duration::from_secs(15),
        async || {
            let exp = api.get("notified").await?;
            Ok(condition(&exp, "NotificationsDelivered").filter(|c| c.0 == "True"))
        },
    )
    .await?;
    assert_eq!(delivered.1, "Delivered");
    assert_eq!(count(&telemetry, "start", "sent"), 1);
    assert_eq!(count(&telemetry, "end", "sent"), 1);
    assert_eq!(count(&telemetry, "iteration", "sent"), iterations as u64);
    assert_eq!(count(&telemetry, "end", "failed"), 0);
    controller.abort();
    env.cleanup().await
}

/// What a run decided, through which splits, and how long it took.
#[derive(Debug)]
struct Outcome {
    decision: Option<(Action, Option<String>)>,
    iterations: u32,
    splits: Vec<Vec<u32>>,
    seconds: f64,
}

impl Outcome {
    fn of(exp: &Experiment) -> Result<Self> {
        let status = exp.status.as_ref().context("status")?;
        let start = status.start_time.as_ref().context("start time")?.0;
        let end = status
            .last_iteration_time
            .as_ref()
            .context("last iteration")?
            .0;
        Ok(Self {
            decision: status
                .decision
                .as_ref()
                .map(|d| (d.action, d.version.clone())),
            iterations: status.completed_iterations,
            splits: status.history.iter().map(|r| r.weights.clone()).collect(),
            seconds: end.duration_since(start).as_secs_f64(),
        })
    }
}

#[tokio::test]
async fn receivers_that_refuse_or_answer_too_slowly_change_only_the_condition_and_the_count()
-> Result<()> {
    // The same canary on the same data, twice: without notifications, and to two receivers
    // that never take them (one refuses connections, one answers after the timeout).
    let (reference_env, reference_controller, _) =
        promoting_fixture("notify-reference", NotifierConfig::default()).await?;
    let reference_api = create_canary(&reference_env, "quiet", json!([])).await?;

    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        listener.local_addr()?
    };
    let (slow, slow_got) = start_receiver(Duration::from_secs(10)).await?;
    let (env, controller, telemetry) = promoting_fixture(
        "notify-down",
        NotifierConfig {
            allowed: vec![
                format!("http://{dead}/hooks"),
                format!("http://{slow}/hooks"),
            ],
            backoff: Duration::from_millis(100),
            ..NotifierConfig::default()
        },
    )
    .await?;
    let api = create_canary(
        &env,
        "loud",
        json!([
            {"name": "refusing", "url": format!("http://{dead}/hooks/team"),
             "events": ["start", "iteration", "promote", "end"], "timeout": "500ms", "retries": 1},
            {"name": "slow", "url": format!("http://{slow}/hooks/team"),
             "events": ["start", "iteration", "promote", "end"], "timeout": "500ms", "retries": 1}
        ]),
    )
    .await?;

    let reference = wait_for_phase(&reference_api, "quiet", Phase::Completed).await?;
    let notified = wait_for_phase(&api, "loud", Phase::Completed).await?;
    let (notified, reference) = (Outcome::of(&notified)?, Outcome::of(&reference)?);
    assert_eq!(
        notified.decision,
        Some((Action::Promote, Some("next".into())))
    );
    assert_eq!(notified.decision, reference.decision, "the same decision");
    assert_eq!(
        notified.iterations, reference.iterations,
        "after as many iterations"
    );
    assert_eq!(notified.splits, reference.splits, "through the same splits");
    let (seconds, reference_seconds) = (notified.seconds, reference.seconds);
    println!(
        "{} iterations: {seconds:.2} s with failing receivers, {reference_seconds:.2} s without",
        notified.iterations
    );
    // Iterations run every second in both; a receiver's 1.1 s per notification (two
    // attempts of 500 ms and a 100 ms wait) would have stretched every interval.
    assert!(
        seconds <= reference_seconds + 1.5,
        "as fast: {seconds:.1} s against {reference_seconds:.1} s without notifications"
    );

    let failed = wait_for(
        "NotificationsDelivered=False",
        Duration::from_secs(20),
        async || {
            let exp = api.get("loud").await?;
            Ok(condition(&exp, "NotificationsDelivered").filter(|c| c.0 == "False"))
        },
    )
    .await?;
    assert_eq!(failed.1, "Unreachable", "{failed:?}");
    assert!(
        failed.2.starts_with("receiver refusing: ") || failed.2.starts_with("receiver slow: "),
        "the condition names the receiver: {failed:?}"
    );
    assert!(!failed.2.contains("http://"), "never the URL: {failed:?}");
    // Both receivers failed the start notification, after two attempts each.
    wait_for(
        "both start failures counted",
        Duration::from_secs(20),
        async || Ok((count(&telemetry, "start", "failed") == 2).then_some(())),
    )
    .await?;
    assert_eq!(count(&telemetry, "start", "sent"), 0);
    assert!(
        slow_got.lock().expect("not poisoned").len() >= 2,
        "the slow receiver was tried, and retried"
    );
    reference_controller.abort();
    controller.abort();
    reference_env.cleanup().await?;
    env.cleanup().await
}

#[tokio::test]
async fn a_rolled_back_canary_tells_a_slack_receiver_in_one_readable_message_each() -> Result<()> {
    let (receiver, got) = start_receiver(Duration::ZERO).await?;
    let (env, controller, telemetry) = fixture(
        "notify-slack",
        NotifierConfig {
            allowed: vec![format!("http://{receiver}/hooks")],
            backoff: Duration::from_millis(100),
            ..NotifierConfig::default()
        },
        250.0,
    )
    .await?;
    let ns = env.namespace.name().to_string();
    let api = create_canary(
        &env,
        "broken",
        json!([{
            "name": "chat",
            "url": format!("http://{receiver}/hooks/team"),
            "format": "slack",
            "events": ["rollback", "end"],
        }]),
    )
    .await?;
    let done = wait_for("the rollback", Duration::from_secs(60), async || {
        let exp = api.get("broken").await?;
        let ended = exp.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        Ok(ended.then_some(exp))
    })
    .await?;
    let status = done.status.clone().context("status")?;
    assert_eq!(
        status.decision.as_ref().map(|d| d.action),
        Some(Action::Rollback)
    );
    let received = wait_for("two messages", Duration::from_secs(15), async || {
        let got = got.lock().expect("not poisoned").clone();
        Ok((got.len() >= 2).then_some(got))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        got.lock().expect("not poisoned").len(),
        2,
        "one message each"
    );
    let texts: Vec<String> = received
        .iter()
        .map(|r| {
            assert_eq!(r.content_type, "application/json");
            assert_eq!(r.signature, None, "no signing secret, no signature");
            let body: Value = serde_json::from_slice(&r.body)?;
            let object = body.as_object().context("a JSON object")?;
            assert_eq!(object.len(), 1, "only `text`, as Slack takes it: {body}");
            Ok(body["text"].as_str().context("text")?.to_owned())
        })
        .collect::<Result<_>>()?;
    let iteration = status.completed_iterations;
    let head = format!("iter8 experiment {ns}/broken");
    assert!(
        texts[0].starts_with(&format!("{head} rolled back at iteration {iteration}: "))
            && texts[0].ends_with("split: stable=100, next=0"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].starts_with(&format!("{head} ended ({}) ", status.phase)),
        "{}",
        texts[1]
    );
    assert_eq!(count(&telemetry, "rollback", "sent"), 1);
    assert_eq!(count(&telemetry, "end", "sent"), 1);
    controller.abort();
    env.cleanup().await
}

#[tokio::test]
async fn a_gate_wait_is_announced_once_however_often_it_is_checked() -> Result<()> {
    let (receiver, got) = start_receiver(Duration::ZERO).await?;
    let (env, controller, telemetry) = promoting_fixture(
        "notify-gate",
        NotifierConfig {
            allowed: vec![format!("http://{receiver}/hooks")],
            backoff: Duration::from_millis(100),
            ..NotifierConfig::default()
        },
    )
    .await?;
    let mut exp = canary("held", "reviews", 10)?;
    exp.spec.notifications = serde_json::from_value(json!([{
        "name": "team",
        "url": format!("http://{receiver}/hooks/team"),
        "events": ["gateWaiting"],
    }]))?;
    exp.spec.gates = serde_json::from_value(json!({"promotion": {}}))?;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), env.namespace.name());
    api.create(&PostParams::default(), &exp).await?;
    let waiting = wait_for("the gate to wait", Duration::from_secs(60), async || {
        let exp = api.get("held").await?;
        Ok(exp.status.clone().and_then(|s| s.gate))
    })
    .await?;
    // The controller checks the gate again every retry (1 s here): several checks, one event.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let received = got.lock().expect("not poisoned").clone();
    assert_eq!(received.len(), 1, "one gateWaiting event per wait");
    let event: Value = serde_json::from_slice(&received[0].body)?;
    assert_eq!(event["type"], "tools.iter8.experiment.gateWaiting");
    assert!(
        event["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&waiting.name)),
        "the event names the gate instance {}: {event}",
        waiting.name
    );
    assert_eq!(count(&telemetry, "gateWaiting", "sent"), 1);
    controller.abort();
    env.cleanup().await
}

#[tokio::test]
async fn an_experiment_the_failure_policy_ends_announces_the_failure_and_the_end() -> Result<()> {
    let (receiver, got) = start_receiver(Duration::ZERO).await?;
    let (env, metrics, _assessed) = replicas_fixture("notify-failure").await?;
    let ns = env.namespace.name().to_string();
    // An analytics address where nothing listens: every assessment fails.
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let analytics = format!("http://{unused}");
    let client = iter8_controller::analytics::AnalyticsClient::new(test_client_config(
        &[analytics.as_str()],
        Duration::from_secs(2),
    )?)?;
    let ctx = controller_context_notifying(
        &env.client,
        &analytics,
        metrics,
        client,
        None,
        NotifierConfig {
            allowed: vec![format!("http://{receiver}/hooks")],
            backoff: Duration::from_millis(100),
            ..NotifierConfig::default()
        },
    )?;
    let telemetry = ctx.telemetry.clone();
    let controller = tokio::spawn({
        let ns = ns.clone();
        async move { iter8_controller::run(ctx, Some(&ns), std::future::pending()).await }
    });
    let mut exp = canary("unassessed", "reviews", 10)?;
    exp.spec.failure_policy = serde_json::from_value(json!({
        "maxConsecutiveFailures": 2, "action": "rollback"
    }))?;
    exp.spec.notifications = serde_json::from_value(json!([{
        "name": "team",
        "url": format!("http://{receiver}/hooks/team"),
        "events": ["failure", "end"],
    }]))?;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &exp).await?;
    let failed = wait_for_phase(&api, "unassessed", Phase::Failed).await?;
    let received = wait_for(
        "the failure and the end",
        Duration::from_secs(15),
        async || {
            let got = got.lock().expect("not poisoned").clone();
            Ok((got.len() >= 2).then_some(got))
        },
    )
    .await?;
    let events: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_slice(&r.body))
        .collect::<Result<_, _>>()?;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "tools.iter8.experiment.failure",
            "tools.iter8.experiment.end"
        ]
    );
    assert_eq!(events[0]["data"]["phase"], "Failed");
    assert_eq!(
        events[0]["data"]["weights"],
        json!([{"version": "stable", "weight": 100}, {"version": "next", "weight": 0}]),
        "announced with traffic back on the baseline"
    );
    assert_eq!(
        failed.status.as_ref().map(|s| s.consecutive_failures),
        Some(2)
    );
    assert_eq!(count(&telemetry, "failure", "sent"), 1);
    controller.abort();
    env.cleanup().await
}
