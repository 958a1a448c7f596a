//! Security end to end: the analytics service's bearer token and (m)TLS against the real server,
//! the controller driving canaries through them on a real kube-apiserver (and never revealing
//! the token in status, Events or logs), PromQL injection against a real Prometheus, and
//! `#![forbid(unsafe_code)]` in every crate root. See docs/security.md.

mod common;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail, ensure};
use iter8_analytics::Config as AnalyticsConfig;
use iter8_analytics::auth::BearerToken;
use iter8_api::{Action, ErrorResponse, Observation};
use iter8_controller::analytics::{AnalyticsClient, ClientTls};
use iter8_crd::{Experiment, MetricSpec, Phase};
use iter8_integration_tests::TestEnv;
use iter8_integration_tests::pki::TestPki;
use iter8_integration_tests::prometheus::{Prometheus, drive, prometheus_binary, start_app};
use iter8_metrics::{Backends, MetricsBackend, MetricsError, Query, Settings};
use kube::api::{Api, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};

use common::*;

/// The token the analytics service is given in these tests.
const SERVICE_TOKEN: &str = "svc-token-6f1d9a4c2b7e8053";
/// A token that is not the service's.
const WRONG_TOKEN: &str = "wrong-token-0c5b3e9f7a1d2468";

// ---------------------------------------------------------------------------------------------
// The analytics service

#[tokio::test]
async fn analytics_api_requires_the_bearer_token_and_the_probes_stay_open() -> Result<()> {
    let base = format!("http://{}", start_analytics_with(token_config()).await?);
    let http = reqwest::Client::new();
    let assess = |auth: Option<&str>| {
        let mut call = http
            .post(format!("{base}/v1/assessments"))
            .header("content-type", "application/json")
            .body(example_request());
        if let Some(value) = auth {
            call = call.header("authorization", value);
        }
        call.send()
    };

    let none = assess(None).await?;
    let challenge = none.headers().get("www-authenticate").cloned();
    let error = expect_error(none, StatusCode::UNAUTHORIZED).await?;
    assert_eq!(
        challenge.as_ref().map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_eq!(error.field, "authorization");

    let wrong = assess(Some(&format!("Bearer {WRONG_TOKEN}"))).await?;
    let challenge = wrong.headers().get("www-authenticate").cloned();
    let wrong_text = wrong.text().await?;
    assert!(
        !wrong_text.contains(WRONG_TOKEN),
        "the presented token is not echoed"
    );
    assert_eq!(
        challenge.as_ref().map(|v| v.to_str().unwrap_or_default()),
        Some("Bearer error=\"invalid_token\"")
    );
    let error: ErrorResponse = serde_json::from_str(&wrong_text)?;
    assert_eq!(error.error.field, "authorization");

    // A prefix of the token, or the token in another scheme, is not the token.
    let prefix = assess(Some(&format!("Bearer {}", &SERVICE_TOKEN[..10]))).await?;
    assert_eq!(prefix.status(), StatusCode::UNAUTHORIZED);
    let basic = assess(Some(&format!("Basic {SERVICE_TOKEN}"))).await?;
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    let right = assess(Some(&format!("Bearer {SERVICE_TOKEN}"))).await?;
    assert_eq!(right.status(), StatusCode::OK);
    let answer: iter8_api::AssessmentResponse = right.json().await?;
    assert_eq!(answer.split.iter().map(|w| w.weight).sum::<u32>(), 100);

    // Probes, the scrape endpoint and the API description need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let open = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(open.status(), StatusCode::OK, "{path} stays open");
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in [
        "iter8_analytics_auth_rejections_total{reason=\"missing\"} 2",
        "iter8_analytics_auth_rejections_total{reason=\"invalid\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    Ok(())
}

#[tokio::test]
async fn https_and_mtls_refuse_clients_without_the_ca_or_a_client_certificate() -> Result<()> {
    let pki = TestPki::new("iter8 test CA")?;
    let addr = start_analytics_with(tls_config(&pki, true)).await?;
    let base = format!("https://localhost:{}", addr.port());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca())?)?;
    let identity = reqwest::Identity::from_pem(&pki.client_identity_pem()?)?;
    let trusting = || reqwest::Client::builder().tls_certs_only([ca.clone()]);

    // With the CA and the client certificate, the API answers.
    let mutual = trusting().identity(identity).build()?;
    let answer = mutual
        .post(format!("{base}/v1/assessments"))
        .header("content-type", "application/json")
        .body(example_request())
        .send()
        .await?;
    assert_eq!(answer.status(), StatusCode::OK);

    // Without a client certificate: probes and scrapes still work (kubelet and Prometheus
    // present none), the API does not.
    let anonymous = trusting().build()?;
    let healthz = anonymous.get(format!("{base}/healthz")).send().await?;
    assert_eq!(healthz.status(), StatusCode::OK);
    let refused = anonymous
        .post(format!("{base}/v1/assessments"))
        .header("content-type", "application/json")
        .body(example_request())
        .send()
        .await?;
    let error = expect_error(refused, StatusCode::UNAUTHORIZED).await?;
    assert_eq!(error.field, "tls", "{}", error.reason);

    // A certificate from another CA fails the handshake.
    let stranger = TestPki::new("another CA")?;
    let foreign = trusting()
        .identity(reqwest::Identity::from_pem(
            &stranger.client_identity_pem()?,
        )?)
        .build()?;
    let handshake = foreign.get(format!("{base}/healthz")).send().await;
    assert!(
        handshake.is_err(),
        "a foreign client certificate: {handshake:?}"
    );

    // A client that does not trust the CA refuses the server.
    let untrusting = reqwest::Client::new();
    let unknown = untrusting.get(format!("{base}/healthz")).send().await;
    assert!(unknown.is_err(), "an unknown server CA: {unknown:?}");

    // Plain HTTP to the TLS port gets no answer from the API.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP is not served"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The controller through the token and TLS

#[tokio::test]
async fn a_controller_with_the_right_token_promotes_a_canary() -> Result<()> {
    capture_logs();
    let url = format!("http://{}", start_analytics_with(token_config()).await?);
    let client = analytics_client(&url, Some(SERVICE_TOKEN), &ClientTls::default())?;
    let setup = Setup::new("sec-token-ok", &url, client).await?;

    let exp = wait_for_phase(&setup.experiments(), "good", Phase::Completed).await?;
    let decision = exp.status.and_then(|s| s.decision).context("a decision")?;
    assert_eq!(decision.action, Action::Promote);
    assert_eq!(setup.split().await?, [0, 100]);
    setup.finish().await
}

#[tokio::test]
async fn a_wrong_token_holds_traffic_and_is_reported_without_revealing_it() -> Result<()> {
    capture_logs();
    let url = format!("http://{}", start_analytics_with(token_config()).await?);
    let client = analytics_client(&url, Some(WRONG_TOKEN), &ClientTls::default())?;
    let setup = Setup::new("sec-token-wrong", &url, client).await?;
    let api = setup.experiments();

    let exp = wait_for(
        "the AnalyticsUnauthorized condition",
        Duration::from_secs(60),
        async || {
            let exp = api.get("good").await?;
            Ok((condition_reason(&exp, "AnalyticsAvailable").as_deref()
                == Some("AnalyticsUnauthorized"))
            .then_some(exp))
        },
    )
    .await?;
    let status = exp.status.clone().context("status")?;
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "AnalyticsAvailable")
        .context("the condition")?;
    assert_eq!(condition.status, "False");
    assert!(
        condition.message.contains("refused authentication"),
        "{}",
        condition.message
    );
    assert_eq!(status.completed_iterations, 0);
    // A few more reconciles: traffic stays on the baseline throughout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(setup.split().await?, [100, 0], "no weight change");
    let exp = api.get("good").await?;
    assert_eq!(exp.status.as_ref().map_or(0, |s| s.completed_iterations), 0);

    let events = wait_for(
        "an AnalyticsUnauthorized event",
        Duration::from_secs(15),
        async || {
            let events = events_for(&setup.env.client, setup.ns(), "good").await?;
            let found = events
                .iter()
                .any(|e| e.reason.as_deref() == Some("AnalyticsUnauthorized"));
            Ok(found.then_some(events))
        },
    )
    .await?;
    let note = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("AnalyticsUnauthorized"))
        .and_then(|e| e.note.clone())
        .unwrap_or_default();
    assert!(note.contains("refused authentication"), "{note}");

    // The token is nowhere: not in the status, the Events, nor the log; the log does say why.
    let status_text = serde_json::to_string(&exp)?;
    let events_text = serde_json::to_string(&events)?;
    let log = captured_log();
    for token in [WRONG_TOKEN, SERVICE_TOKEN] {
        assert!(!status_text.contains(token), "token in the Experiment");
        assert!(!events_text.contains(token), "token in the Events");
        assert!(!log.contains(token), "token in the log");
    }
    assert!(
        log.contains("HTTP 401") && log.contains("refused authentication"),
        "the log names the refusal:\n{log}"
    );
    setup.finish().await
}

/// Review M11: an Experiment naming a Metric of another namespace would make the controller
/// read that namespace's Secret for whoever can create an Experiment. Unless that namespace is
/// shared (`--shared-metric-namespaces`), the Metric is refused before anything is read.
#[tokio::test]
async fn a_metric_with_credentials_in_a_foreign_namespace_is_refused() -> Result<()> {
    let h = Harness::new("sec-foreign-metric").await?;
    let foreign = format!("{}-foreign", h.ns());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.env.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": foreign}}))?,
        )
        .await?;
    // Someone else's Metric, with their Prometheus credentials.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(h.env.client.clone(), &foreign);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "prometheus-credentials"},
                "stringData": {"token": "their-secret-token"}
            }))?,
        )
        .await?;
    let metrics: Api<iter8_crd::Metric> = Api::namespaced(h.env.client.clone(), &foreign);
    metrics
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
                "metadata": {"name": "requests"},
                "spec": {"type": "counter",
                         "prometheus": {"query": "sum(requests_total{ {{labels}} })"},
                         "auth": {"type": "bearer", "secretName": "prometheus-credentials"}}
            }))?,
        )
        .await?;
    create_http_route(&h.env.client, h.ns(), "reviews").await?;
    h.metrics.set("v1", 5000.0, 5.0, 0.0);
    h.metrics.set("v2", 5000.0, 4.0, 0.0);
    let mut exp = canary("borrower", "reviews", 10)?;
    exp.spec.metrics[0].metric.namespace = Some(foreign.clone());
    let api = h.experiments();
    api.create(&PostParams::default(), &exp).await?;
    let held = wait_for(
        "the MetricNotAllowed condition",
        Duration::from_secs(30),
        async || {
            let exp = api.get("borrower").await?;
            Ok(
                (condition_reason(&exp, "MetricsAvailable").as_deref() == Some("MetricNotAllowed"))
                    .then_some(exp),
            )
        },
    )
    .await?;
    let status = held.status.clone().context("status")?;
    assert_eq!(status.completed_iterations, 0, "nothing was assessed");
    assert!(h.assessed.iterations().is_empty());
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains(&format!("{foreign}/requests")),
        "{message}"
    );
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [100, 0]);
    namespaces.delete(&foreign, &Default::default()).await?;
    h.finish().await
}

/// A Metric in the Experiment's own namespace names where its queries go, and a Secret whose
/// credentials go with them: without an allow-list, whoever can write a Metric could make the
/// controller send them (and requests of its own) anywhere. The controller here runs the real
/// metrics backends, so without the allow-list the token would reach the listener below; with
/// it, the Metric is refused and nothing is sent.
#[tokio::test]
async fn a_metric_backend_nobody_allowed_gets_no_request_and_no_credentials() -> Result<()> {
    let env = TestEnv::new("sec-metric-backend").await?;
    let ns = env.namespace.name().to_owned();
    install_crds(&env.client).await?;
    create_metrics(&env.client, &ns).await?;
    // Where the Metric points: a listener that records what reaches it.
    let (target, received, accepting) = recording_listener().await?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "prometheus-credentials"},
                "stringData": {"token": "the-teams-token"}
            }))?,
        )
        .await?;
    let metrics: Api<iter8_crd::Metric> = Api::namespaced(env.client.clone(), &ns);
    metrics
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
                "metadata": {"name": "exfiltrate"},
                "spec": {"type": "counter",
                         "http": {"url": format!("http://{target}/collect?v={{{{label \"version\"}}}}"),
                                  "jsonPath": "$.v"},
                         "auth": {"type": "bearer", "secretName": "prometheus-credentials"}}
            }))?,
        )
        .await?;
    create_http_route(&env.client, &ns, "reviews").await?;
    // The real backends; only their default Prometheus (none here) is allowed.
    let assessed = AssessmentLog::start(start_analytics().await?).await?;
    let (controller, _) = start_controller_with(
        &env.client,
        &ns,
        &format!("http://{}", assessed.addr),
        Backends::new(Settings::default())?,
        Duration::from_secs(5),
        None,
    )
    .await?;
    let mut exp = canary("sender", "reviews", 10)?;
    exp.spec.metrics[0].metric.name = "exfiltrate".into();
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &exp).await?;
    let held = wait_for(
        "the MetricBackendNotAllowed condition",
        Duration::from_secs(30),
        async || {
            let exp = api.get("sender").await?;
            Ok((condition_reason(&exp, "MetricsAvailable").as_deref()
                == Some("MetricBackendNotAllowed"))
            .then_some(exp))
        },
    )
    .await?;
    let status = held.status.clone().context("status")?;
    let message = status.message.unwrap_or_default();
    for words in [
        format!("Metric {ns}/exfiltrate (`requests`)"),
        "spec.http.url".to_owned(),
        format!("http://{target}/collect"),
        "--metric-backend-allowed-urls".to_owned(),
    ] {
        assert!(message.contains(&words), "{words:?} in {message}");
    }
    wait_for_warning(&env.client, &ns, "sender", "MetricBackendNotAllowed").await?;
    // Held over several retries: nothing sent there, nothing assessed, traffic unmoved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = api.get("sender").await?.status.context("status")?;
    assert!(status.consecutive_failures >= 2, "retried and counted");
    assert_eq!(status.completed_iterations, 0);
    assert!(assessed.iterations().is_empty());
    assert_eq!(
        *received.lock().expect("not poisoned"),
        Vec::<String>::new(),
        "no request (and no token) reached the address nobody allowed"
    );
    assert_eq!(reviews_split(&env.client, &ns).await?, [100, 0]);

    // The address is checked before the Secret is read: a Metric naming a Secret that does
    // not exist is refused for its address, not for the missing Secret (were the Secret read
    // first, the refusal would name it, and the controller would read Secrets on behalf of a
    // Metric it must refuse).
    metrics
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
                "metadata": {"name": "exfiltrate-unread"},
                "spec": {"type": "counter",
                         "http": {"url": format!("http://{target}/collect"), "jsonPath": "$.v"},
                         "auth": {"type": "bearer", "secretName": "no-such-secret"}}
            }))?,
        )
        .await?;
    create_http_route(&env.client, &ns, "reviews-2").await?;
    let mut second = canary("sender-2", "reviews-2", 10)?;
    second.spec.metrics[0].metric.name = "exfiltrate-unread".into();
    api.create(&PostParams::default(), &second).await?;
    let refused = wait_for(
        "the second experiment's refusal",
        Duration::from_secs(30),
        async || {
            let exp = api.get("sender-2").await?;
            let attempted = exp
                .status
                .as_ref()
                .is_some_and(|s| s.consecutive_failures >= 1);
            Ok(attempted
                .then(|| condition_reason(&exp, "MetricsAvailable"))
                .flatten()
                .map(|r| (r, exp)))
        },
    )
    .await?;
    let message = refused.1.status.and_then(|s| s.message).unwrap_or_default();
    assert_eq!(refused.0, "MetricBackendNotAllowed", "{message}");
    assert!(!message.contains("no-such-secret"), "{message}");
    controller.abort();
    accepting.abort();
    env.cleanup().await
}

#[tokio::test]
async fn a_controller_reaches_analytics_over_mtls_with_the_ca_and_its_certificate() -> Result<()> {
    let pki = TestPki::new("iter8 test CA")?;
    let config = AnalyticsConfig {
        token: token_config().token,
        ..tls_config(&pki, true)
    };
    let addr = start_analytics_with(config).await?;
    let url = format!("https://localhost:{}", addr.port());
    let tls = ClientTls {
        ca_pem: Some(std::fs::read(pki.ca())?),
        identity_pem: Some(pki.client_identity_pem()?),
    };
    let client = analytics_client(&url, Some(SERVICE_TOKEN), &tls)?;
    let setup = Setup::new("sec-mtls", &url, client).await?;
    let exp = wait_for_phase(&setup.experiments(), "good", Phase::Completed).await?;
    let decision = exp.status.and_then(|s| s.decision).context("a decision")?;
    assert_eq!(decision.action, Action::Promote);
    assert_eq!(setup.split().await?, [0, 100]);
    setup.finish().await?;

    // The same controller set-up without a client certificate is held, not promoted.
    let without_cert = ClientTls {
        ca_pem: Some(std::fs::read(pki.ca())?),
        identity_pem: None,
    };
    let client = analytics_client(&url, Some(SERVICE_TOKEN), &without_cert)?;
    let setup = Setup::new("sec-mtls-nocert", &url, client).await?;
    let api = setup.experiments();
    let exp = wait_for("the held experiment", Duration::from_secs(60), async || {
        let exp = api.get("good").await?;
        Ok(condition_reason(&exp, "AnalyticsAvailable")
            .is_some_and(|r| r == "AnalyticsUnauthorized")
            .then_some(exp))
    })
    .await?;
    assert_eq!(exp.status.map_or(0, |s| s.completed_iterations), 0);
    assert_eq!(setup.split().await?, [100, 0]);
    setup.finish().await
}

// ---------------------------------------------------------------------------------------------
// PromQL injection against a real Prometheus

/// Label values that would change a query's meaning if pasted into it unescaped.
const HOSTILE_VALUES: &[&str] = &[
    "v1\"} or vector(1) #",
    "nope\"}) or vector(42) or sum(iter8_sample_requests_total{version=\"nope",
    "v1\\",
    "v1\\\"} or vector(1) or {x=\"",
    "v1\n} or vector(1)",
    "v1' or vector(1) or '",
    "v1` or vector(1) or `",
    "v1\"}) or on() vector(1) #",
    "v1\r\t\u{0}\u{7f}",
    "}",
    "\"",
    "\\\\\"",
    ".+",
    "v.*",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_injection_through_labels_is_impossible_against_a_real_prometheus() -> Result<()> {
    prometheus_binary()?;
    // Two versions: v1, and one whose real label value is itself hostile; escaping must find
    // exactly each one's series.
    let weird = "we\"ird}\\ v2 or vector(7) '`";
    let mut addrs = Vec::new();
    for (version, seed) in [("v1", 1), (weird, 2)] {
        addrs.push(
            start_app(iter8_sample_app::Config {
                version: version.to_owned(),
                seed,
                ..iter8_sample_app::Config::default()
            })
            .await?,
        );
    }
    let prom = Prometheus::start(&addrs)?;
    let http = reqwest::Client::new();
    prom.wait_scraped(&http, 2, Duration::from_secs(60)).await?;
    let start = SystemTime::now();
    drive(&http, addrs[0], 30).await?;
    drive(&http, addrs[1], 11).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let backends = Backends::new(Settings {
        default_prometheus_address: Some(prom.url().to_owned()),
        ..Settings::default()
    })?;
    // `{{labels}}`, `{{label "version"}}` and `{{namespace}}` are the places values enter.
    let spec: MetricSpec = serde_json::from_value(json!({
        "type": "counter",
        "prometheus": {"query": "sum(iter8_sample_requests_total{ {{labels}} }) \
            and on() count(iter8_sample_requests_total{version=\"{{label \"version\"}}\"}) \
            and on() absent(nothing{namespace=\"{{namespace}}\"})"}
    }))?;
    let observe = async |labels: BTreeMap<String, String>, namespace: &str| {
        backends
            .observe(&Query {
                name: "requests",
                spec: &spec,
                labels: &labels,
                namespace,
                start,
                now: SystemTime::now(),
                credentials: None,
            })
            .await
    };
    let version = |v: &str| BTreeMap::from([("version".to_owned(), v.to_owned())]);

    // The literal values, hostile or not, find their own series and nothing more.
    assert_eq!(
        observe(version("v1"), "default").await,
        Ok(Observation::Counter(30.0))
    );
    assert_eq!(
        observe(version(weird), "default").await,
        Ok(Observation::Counter(11.0)),
        "a hostile real label value matches exactly its series"
    );
    // Hostile values match nothing: never v1's data, never a constant vector.
    for hostile in HOSTILE_VALUES {
        let got = observe(version(hostile), "default").await;
        assert!(
            matches!(got, Err(MetricsError::NoData { .. })),
            "label value {hostile:?}: {got:?}"
        );
        // Through the namespace too: a hostile one leaves v1's real data unchanged.
        let through_namespace = observe(version("v1"), hostile).await;
        assert_eq!(
            through_namespace,
            Ok(Observation::Counter(30.0)),
            "namespace {hostile:?}"
        );
    }
    // The second payload really is an injection when pasted unescaped into the same selector.
    let raw = prom
        .query(
            &http,
            &format!(
                "sum(iter8_sample_requests_total{{version=\"{}\"}})",
                HOSTILE_VALUES[1]
            ),
        )
        .await?;
    assert_eq!(raw["data"]["result"][0]["value"][1], "42", "{raw}");

    // Label names cannot be escaped, so hostile ones are refused, naming the label.
    for name in [
        "version\"}",
        "a b",
        "version=~\".*\",x",
        "1version",
        "",
        "vérsion",
    ] {
        let labels = BTreeMap::from([(name.to_owned(), "v1".to_owned())]);
        match observe(labels, "default").await {
            Err(MetricsError::Invalid { reason, .. }) => assert!(
                reason.contains("invalid label name") && reason.contains(name),
                "{name:?}: {reason}"
            ),
            other => panic!("label name {name:?}: {other:?}"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// No unsafe code

#[test]
fn every_crate_root_forbids_unsafe_code() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(&workspace)
        .output()
        .context("cargo metadata")?;
    ensure!(output.status.success(), "cargo metadata failed: {output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    let packages = metadata["packages"].as_array().context("packages")?;
    ensure!(
        packages.len() >= 10,
        "only {} packages found",
        packages.len()
    );
    let mut roots = 0;
    let mut missing = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        // Tests, benches and examples are covered by the workspace lint `unsafe_code =
        // "forbid"`, which every manifest must inherit.
        let manifest =
            std::fs::read_to_string(package["manifest_path"].as_str().unwrap_or_default())?;
        if !manifest.contains("[lints]\nworkspace = true") {
            missing.push(format!(
                "{name}: Cargo.toml lacks `[lints] workspace = true`"
            ));
        }
        for target in package["targets"].as_array().context("targets")? {
            let kinds = target["kind"].as_array().context("kind")?;
            let is_root = kinds.iter().any(|k| {
                matches!(
                    k.as_str(),
                    Some("lib" | "bin" | "proc-macro" | "rlib" | "cdylib")
                )
            });
            if !is_root {
                continue;
            }
            roots += 1;
            let path = target["src_path"].as_str().context("src_path")?;
            let source = std::fs::read_to_string(path)?;
            if !source
                .lines()
                .any(|l| l.trim() == "#![forbid(unsafe_code)]")
            {
                missing.push(format!("{name}: {path} lacks #![forbid(unsafe_code)]"));
            }
        }
    }
    ensure!(roots >= 14, "only {roots} crate roots found");
    if !missing.is_empty() {
        bail!("{}", missing.join("\n"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A namespace with the CRDs, the three counter Metrics, HTTPRoute `reviews`, a controller
/// using the given analytics client, and canary `good` whose data would promote.
struct Setup {
    env: TestEnv,
    controller: tokio::task::JoinHandle<()>,
}

impl Setup {
    async fn new(test: &str, analytics_url: &str, analytics: AnalyticsClient) -> Result<Self> {
        let env = TestEnv::new(test).await?;
        install_crds(&env.client).await?;
        let ns = env.namespace.name().to_owned();
        create_metrics(&env.client, &ns).await?;
        create_http_route(&env.client, &ns, "reviews").await?;
        let metrics = ScriptedMetrics::default();
        metrics.set("v1", 5000.0, 5.0, 0.0);
        metrics.set("v2", 5000.0, 4.0, 0.0);
        let (controller, _) =
            start_controller_using(&env.client, &ns, analytics_url, metrics, analytics, None)
                .await?;
        let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
        api.create(&PostParams::default(), &canary("good", "reviews", 10)?)
            .await?;
        Ok(Self { env, controller })
    }

    fn ns(&self) -> &str {
        self.env.namespace.name()
    }

    fn experiments(&self) -> Api<Experiment> {
        Api::namespaced(self.env.client.clone(), self.ns())
    }

    async fn split(&self) -> Result<[u64; 2]> {
        reviews_split(&self.env.client, self.ns()).await
    }

    async fn finish(self) -> Result<()> {
        self.controller.abort();
        self.env.cleanup().await
    }
}

fn analytics_client(url: &str, token: Option<&str>, tls: &ClientTls) -> Result<AnalyticsClient> {
    let mut config = test_client_config(&[url], Duration::from_secs(5))?;
    config.token = token.map(str::to_owned);
    config.tls = tls.clone();
    Ok(AnalyticsClient::new(config)?)
}

/// The analytics service requiring [`SERVICE_TOKEN`].
fn token_config() -> AnalyticsConfig {
    AnalyticsConfig {
        token: Some(BearerToken::new(SERVICE_TOKEN)),
        ..AnalyticsConfig::default()
    }
}

fn tls_config(pki: &TestPki, mutual: bool) -> AnalyticsConfig {
    AnalyticsConfig {
        tls_cert_file: Some(pki.server_cert()),
        tls_key_file: Some(pki.server_key()),
        tls_client_ca_file: mutual.then(|| pki.ca()),
        ..AnalyticsConfig::default()
    }
}

fn example_request() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/assessment-request.json");
    std::fs::read(path).unwrap_or_default()
}

async fn expect_error(
    response: reqwest::Response,
    status: StatusCode,
) -> Result<iter8_api::InvalidRequest> {
    ensure!(
        response.status() == status,
        "{} != {status}",
        response.status()
    );
    let body: ErrorResponse = response.json().await.context("an ErrorResponse")?;
    Ok(body.error)
}

/// Everything logged through `tracing` by this test process (controller and analytics alike).
static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct SharedLog(Arc<Mutex<Vec<u8>>>);

impl Write for SharedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log buffer poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once per process, a subscriber writing every event (debug for iter8's crates)
/// to a buffer the tests read.
fn capture_logs() {
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = SharedLog(buffer.clone());
        let filter = tracing_subscriber::EnvFilter::new(
            "info,iter8_controller=debug,iter8_analytics=debug,tower_http=debug",
        );
        // Another test may have installed one first; then this buffer stays empty and the
        // assertions on it say so.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

fn captured_log() -> String {
    LOG.get()
        .and_then(|b| {
            b.lock()
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default()
}

/// A listener that records the head of every request that reaches it.
async fn recording_listener() -> Result<(
    std::net::SocketAddr,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = received.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let n = tokio::io::AsyncReadExt::read(&mut socket, &mut head)
                .await
                .unwrap_or(0);
            recorded
                .lock()
                .expect("not poisoned")
                .push(String::from_utf8_lossy(&head[..n]).into_owned());
        }
    });
    Ok((addr, received, accepting))
}

/// An allowed backend that answers every request with a 307 to `to`: the allow-list is
/// checked on the Metric's address, so following the redirect would carry the query and its
/// credentials (an API-key header, a bearer token) to an address nobody allowed.
#[tokio::test]
async fn a_redirect_from_an_allowed_metric_backend_is_not_followed() -> Result<()> {
    let env = TestEnv::new("sec-metric-redirect").await?;
    let ns = env.namespace.name().to_owned();
    install_crds(&env.client).await?;
    create_metrics(&env.client, &ns).await?;
    let (target, received, accepting) = recording_listener().await?;
    let redirects = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = redirects.clone();
    let redirector = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", format!("http://{target}/stolen"))],
            )
        }
    });
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let allowed_addr = allowed.local_addr()?;
    tokio::spawn(axum::serve(allowed, redirector).into_future());

    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "backend-credentials"},
                "stringData": {"token": "the-teams-token"}
            }))?,
        )
        .await?;
    let metrics: Api<iter8_crd::Metric> = Api::namespaced(env.client.clone(), &ns);
    for (name, spec) in [
        (
            "via-http",
            json!({"type": "counter",
                   "http": {"url": format!("http://{allowed_addr}/q?v={{{{label \"version\"}}}}"),
                            "jsonPath": "$.v",
                            "headers": {"X-Api-Key": "{{token}}"}},
                   "auth": {"type": "bearer", "secretName": "backend-credentials"}}),
        ),
        (
            "via-prometheus",
            json!({"type": "counter",
                   "prometheus": {"address": format!("http://{allowed_addr}"),
                                  "query": "sum(errors{ {{labels}} })"},
                   "auth": {"type": "bearer", "secretName": "backend-credentials"}}),
        ),
    ] {
        metrics
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
                    "metadata": {"name": name}, "spec": spec
                }))?,
            )
            .await?;
    }
    create_http_route(&env.client, &ns, "reviews").await?;
    let assessed = AssessmentLog::start(start_analytics().await?).await?;
    let analytics_url = format!("http://{}", assessed.addr);
    let mut ctx = controller_context(
        &env.client,
        &analytics_url,
        Backends::new(Settings::default())?,
        AnalyticsClient::new(test_client_config(
            &[analytics_url.as_str()],
            Duration::from_secs(5),
        )?)?,
        None,
    )?;
    Arc::get_mut(&mut ctx)
        .context("a fresh context has one owner")?
        .settings
        .metric_backends =
        iter8_controller::analytics::Endpoints::only([format!("http://{allowed_addr}").as_str()])?;
    let controller = {
        let ns = ns.clone();
        tokio::spawn(async move {
            iter8_controller::run(ctx, Some(&ns), std::future::pending()).await;
        })
    };
    let mut exp = canary("redirected", "reviews", 10)?;
    exp.spec.metrics[0].metric.name = "via-http".into();
    exp.spec.metrics[1].metric.name = "via-prometheus".into();
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &exp).await?;
    // Both backends were asked (and answered with redirects) over several attempts.
    wait_for(
        "several redirected attempts",
        Duration::from_secs(30),
        async || {
            let status = api.get("redirected").await?.status.unwrap_or_default();
            Ok((status.consecutive_failures >= 2
                && redirects.load(std::sync::atomic::Ordering::SeqCst) >= 4)
                .then_some(()))
        },
    )
    .await?;
    assert_eq!(
        *received.lock().expect("not poisoned"),
        Vec::<String>::new(),
        "no request, token or API key followed the redirect"
    );
    let status = api.get("redirected").await?.status.context("status")?;
    assert_eq!(status.completed_iterations, 0, "nothing assessed");
    assert_eq!(reviews_split(&env.client, &ns).await?, [100, 0]);
    controller.abort();
    accepting.abort();
    env.cleanup().await
}
