//! `iter8` on a cluster, against a real kube-apiserver (integration-tests/kube-env; run with
//! `bash integration-tests/run.sh -p iter8-cli --test cluster`). Experiments are created as a
//! user would and given the status the controller writes (through the status subresource,
//! with an assessment computed by the engine); the `iter8` binary then reads and writes them
//! through a kubeconfig, as kubectl would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use iter8_crd::Experiment;
use iter8_integration_tests::{ControlPlane, TestEnv, crds};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Event, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

mod support;

/// The engine's answer to the documented example request: an A/B/n assessment shaped
/// exactly as the controller stores it in `status.versions`.
fn assessment() -> iter8_api::AssessmentResponse {
    let request: iter8_api::AssessmentRequest = serde_json::from_str(include_str!(
        "../../../docs/examples/assessment-request.json"
    ))
    .expect("example request");
    iter8_engine::assess(&request).expect("the example assesses")
}

/// An A/B/n Experiment over the example's versions.
fn experiment(name: &str) -> Experiment {
    serde_json::from_value(json!({
        "apiVersion": "iter8.tools/v3alpha1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "kind": "abn",
            "versions": [
                {"name": "reviews-v1", "backend": {"name": "reviews-v1", "port": 9080}},
                {"name": "reviews-v2", "backend": {"name": "reviews-v2", "port": 9080}},
                {"name": "reviews-v3", "backend": {"name": "reviews-v3", "port": 9080}},
            ],
            "router": {"httpRoute": {"name": "reviews"}},
            "criteria": {
                "objectives": [
                    {"metric": "error-rate", "upperLimit": 0.01},
                    {"metric": "latency", "quantile": 0.95, "upperLimit": 500}
                ],
                "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]
            },
            "duration": {"interval": "30s", "minIterations": 3, "maxIterations": 20}
        }
    }))
    .expect("experiment")
}

/// The status after six iterations, as the controller writes it.
fn running_status(assessment: &iter8_api::AssessmentResponse) -> Value {
    let splits = [
        [100, 0, 0],
        [60, 20, 20],
        [50, 25, 25],
        [40, 30, 30],
        [40, 35, 25],
        [35, 45, 20],
    ];
    let history: Vec<Value> = splits
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({
                "iteration": i + 1,
                "time": format!("2026-11-30T10:0{i}:00Z"),
                "weights": w,
                "action": "continue",
            })
        })
        .collect();
    let weights: Vec<Value> = assessment
        .versions
        .iter()
        .zip(splits[5])
        .map(|(v, w)| json!({"version": v.name, "weight": w}))
        .collect();
    json!({"status": {
        "phase": "Running",
        "completedIterations": 6,
        "startTime": "2026-11-30T10:00:00Z",
        "lastIterationTime": "2026-11-30T10:05:00Z",
        "weights": weights,
        "weightsSummary": "reviews-v1=35,reviews-v2=45,reviews-v3=20",
        "versions": assessment.versions,
        "decision": {"action": "continue", "reason": "reviews-v2 leads but is not sure enough yet"},
        "winner": assessment.winner,
        "history": history,
        "conditions": [{
            "type": "TrafficApplied", "status": "True", "reason": "SplitApplied",
            "message": "HTTPRoute reviews carries the split",
            "lastTransitionTime": "2026-11-30T10:05:00Z"
        }]
    }})
}

/// Creates the Experiment and writes its status through the status subresource.
async fn create(client: &Client, namespace: &str, name: &str, status: &Value) -> Experiment {
    let api: Api<Experiment> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &experiment(name))
        .await
        .expect("the Experiment is admitted");
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("status written")
}

/// Sets up CRDs and a namespace.
async fn env(test: &str) -> TestEnv {
    let env = TestEnv::new(test).await.expect("control plane");
    crds::install(&env.client, &crds::iter8_crds(), None)
        .await
        .expect("iter8 CRDs");
    env
}

/// A running A/B/n `reviews` (its status as the controller writes it) in a fresh namespace, and
/// a kubeconfig (in the returned directory) for it.
async fn running_reviews(
    test: &str,
) -> (TestEnv, String, Api<Experiment>, tempfile::TempDir, PathBuf) {
    let env = env(test).await;
    let ns = env.namespace.name().to_string();
    create(&env.client, &ns, "reviews", &running_status(&assessment())).await;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(env.control_plane, dir.path(), &ns);
    (env, ns, api, dir, config)
}

/// `iter8 -n NS ARGS...`.
fn iter8_in(kubeconfig: &Path, ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    iter8(kubeconfig, &all)
}

fn iter8(kubeconfig: &Path, args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_iter8")), kubeconfig, args)
}

/// Runs `binary` with `KUBECONFIG` set, as a user's shell would.
fn run(binary: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("ITER8_TEST_KUBECONFIG")
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of_failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The admin kubeconfig, rewritten with two contexts: `elsewhere` (current, with a bogus
/// namespace) and `test` (the test's namespace as its default).
fn kubeconfig(control_plane: &ControlPlane, dir: &Path, namespace: &str) -> PathBuf {
    let admin: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(control_plane.kubeconfig_path()).expect("admin kubeconfig"),
    )
    .expect("kubeconfig yaml");
    let cluster = admin["clusters"][0]["cluster"].clone();
    let user = admin["users"][0]["user"].clone();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": serde_json::to_value(&cluster).expect("cluster")}],
        "users": [{"name": "admin", "user": serde_json::to_value(&user).expect("user")}],
        "contexts": [
            {"name": "elsewhere", "context": {"cluster": "test", "user": "admin", "namespace": "no-such-namespace"}},
            {"name": "test", "context": {"cluster": "test", "user": "admin", "namespace": namespace}},
        ],
        "current-context": "elsewhere",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("write");
    path
}

/// The rows of a table without the last column (AGE ticks between two runs).
fn without_age(table: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split_whitespace().collect();
            cells.pop();
            cells.join(" ")
        })
        .collect()
}

#[tokio::test]
async fn get_lists_experiments_like_kubectl_in_every_output_and_as_a_kubectl_plugin() {
    let env = env("cli-get").await;
    let ns = env.namespace.name().to_string();
    let answer = assessment();
    create(&env.client, &ns, "reviews", &running_status(&answer)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(env.control_plane, dir.path(), &ns);

    // The context's namespace is used when -n is not given; --context picks it.
    let table = stdout(&iter8(&config, &["get", "--context", "test"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "PHASE",
            "ITERATION",
            "WINNER",
            "WEIGHTS",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    let winner = answer.winner.as_ref().map_or("-", |w| w.version.as_str());
    assert_eq!(
        row[..6],
        [
            "reviews",
            "abn",
            "Running",
            "6/20",
            winner,
            "reviews-v1=35,reviews-v2=45,reviews-v3=20"
        ],
        "{table}"
    );
    assert!(row[6].ends_with('s') || row[6].ends_with('m'), "{table}");

    // The current context's namespace does not exist: nothing there.
    let elsewhere = stdout(&iter8(&config, &["get"]));
    assert_eq!(
        elsewhere,
        "No experiments found in namespace no-such-namespace.\n"
    );

    // -n, -A (with the NAMESPACE column) and a single name.
    let named = stdout(&iter8(&config, &["get", "-n", &ns, "reviews"]));
    assert_eq!(without_age(&named), without_age(&table));
    let all = stdout(&iter8(&config, &["get", "-A"]));
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.split_whitespace().take(2).eq([ns.as_str(), "reviews"])),
        "{all}"
    );

    // JSON and YAML: a List for a listing, the object for a name.
    let list: Value =
        serde_json::from_str(&stdout(&iter8(&config, &["get", "-n", &ns, "-o", "json"])))
            .expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["name"], "reviews");
    assert_eq!(list["items"][0]["status"]["completedIterations"], 6);
    let one: Value = serde_yaml::from_str(&stdout(&iter8(
        &config,
        &["get", "-n", &ns, "reviews", "--output", "yaml"],
    )))
    .expect("yaml");
    assert_eq!(one["kind"], "Experiment");
    // As kubectl prints them: without the API server's managedFields.
    assert!(one["metadata"].get("managedFields").is_none(), "{one:?}");
    assert!(list["items"][0]["metadata"].get("managedFields").is_none());
    assert_eq!(one["spec"]["versions"][1]["name"], "reviews-v2");

    // Not found names the namespace and the name.
    let missing = stderr_of_failure(&iter8(&config, &["get", "-n", &ns, "ratings"]));
    assert!(
        missing.contains(&format!(
            "experiment \"ratings\" not found in namespace \"{ns}\""
        )),
        "{missing}"
    );

    // Linked as kubectl-iter8, the binary is the kubectl plugin: same output, help says
    // `kubectl iter8`.
    let plugin = dir.path().join("kubectl-iter8");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_iter8"), &plugin).expect("symlink");
    let via_plugin = stdout(&run(&plugin, &config, &["get", "-n", &ns]));
    assert_eq!(without_age(&via_plugin), without_age(&table));
    let help = stdout(&run(&plugin, &config, &["--help"]));
    assert!(help.contains("Usage: kubectl iter8 "), "{help}");

    env.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn describe_explains_the_decision_with_estimates_criteria_conditions_history_and_events() {
    let env = env("cli-describe").await;
    let ns = env.namespace.name().to_string();
    let answer = assessment();
    let created = create(&env.client, &ns, "reviews", &running_status(&answer)).await;
    // An Event about it, as the controller's recorder writes them.
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "reviews."},
        "involvedObject": {
            "apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
            "name": "reviews", "namespace": ns, "uid": created.uid()
        },
        "reason": "IterationCompleted",
        "message": "iteration 6: continue; split reviews-v1=35,reviews-v2=45,reviews-v3=20",
        "type": "Normal",
        "source": {"component": "iter8-controller"},
        "firstTimestamp": "2026-11-30T10:05:00Z",
        "lastTimestamp": "2026-11-30T10:05:00Z",
        "count": 1
    }))
    .expect("event");
    Api::<Event>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
        .expect("event created");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(env.control_plane, dir.path(), &ns);

    let text = stdout(&iter8(&config, &["describe", "reviews", "-n", &ns]));
    for expected in [
        "Phase:        Running",
        "Iteration:    6 of 20",
        "Decision:     continue",
        "Reason:       reviews-v2 leads but is not sure enough yet",
        "reviews-v1 (baseline, weight 35%): P(win) ",
        "reviews-v2 (candidate, weight 45%): P(win) ",
        "METRIC",
        "95% CREDIBLE INTERVAL",
        "Criteria (probability each version meets it):",
        "error-rate <= 0.01",
        "TrafficApplied   True     SplitApplied",
        "IterationCompleted",
        "iteration 6: continue",
        "iter8-controller",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    // Every estimate with its interval, as the engine computed it.
    for v in &answer.versions {
        for m in &v.metrics {
            if let (Some(value), Some(ci)) = (m.value, m.credible_interval) {
                let (value, interval) = (
                    format!(" {value:.4} "),
                    format!(" [{:.4}, {:.4}] ", ci.lower, ci.upper),
                );
                assert!(
                    text.lines()
                        .any(|l| l.contains(&value) && l.contains(&interval)),
                    "{value} {interval} missing:\n{text}"
                );
            }
        }
    }
    // The history of splits, oldest first.
    let history = text
        .split("History (splits, oldest first):\n")
        .nth(1)
        .expect("history section");
    let first = history.find("reviews-v1=100,reviews-v2=0,reviews-v3=0");
    let last = history.find("reviews-v1=35,reviews-v2=45,reviews-v3=20");
    assert!(first.is_some() && first < last, "{history}");

    // JSON: the object and its Events.
    let json: Value = serde_json::from_str(&stdout(&iter8(
        &config,
        &["describe", "reviews", "-n", &ns, "-o", "json"],
    )))
    .expect("json");
    assert_eq!(json["experiment"]["metadata"]["name"], "reviews");
    assert_eq!(json["events"][0]["reason"], "IterationCompleted");

    env.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn report_renders_the_local_mode_page_from_the_experiment_in_chromium() {
    let env = env("cli-report").await;
    let ns = env.namespace.name().to_string();
    let answer = assessment();
    create(&env.client, &ns, "reviews", &running_status(&answer)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(env.control_plane, dir.path(), &ns);
    let page = dir.path().join("reviews.html");
    let said = stdout(&iter8(
        &config,
        &[
            "report",
            "reviews",
            "-n",
            &ns,
            "-o",
            page.to_str().expect("utf-8"),
        ],
    ));
    assert_eq!(said, format!("report: {}\n", page.display()));
    let html = std::fs::read_to_string(&page).expect("report written");
    support::assert_self_contained(&html);
    let dom = support::dom_with_every_chart(&page);
    assert!(dom.contains("iter8 experiment: reviews"), "title");
    assert!(dom.contains(r#"<span class="decision continue">continue</span>"#));
    assert!(dom.contains("reviews-v2 leads but is not sure enough yet"));
    assert!(dom.contains("Current split: reviews-v1=35,reviews-v2=45,reviews-v3=20"));
    // One bar per recorded iteration, a segment per version with traffic.
    let split = support::chart(&dom, "chart-split");
    assert_eq!(split.matches(r#"<rect class="segment""#).count(), 16);
    // The latest estimates, each with its interval as an error bar.
    let metric = support::chart(&dom, "chart-metric-0");
    for v in ["reviews-v1", "reviews-v2", "reviews-v3"] {
        assert!(
            metric.contains(&format!(r#"<line class="interval" data-series="{v}""#)),
            "no interval for {v}"
        );
    }
    // The summary table gives each estimate with its interval.
    let first = &answer.versions[0].metrics[0];
    let (value, ci) = (
        first.value.expect("value"),
        first.credible_interval.expect("interval"),
    );
    assert!(
        dom.contains(&format!("{value:.4} [{:.4}, {:.4}]", ci.lower, ci.upper)),
        "estimate missing from the summary"
    );

    env.cleanup().await.expect("cleanup");
}

fn manual_override(e: &Experiment) -> Value {
    serde_json::to_value(&e.spec.manual_override).expect("json")
}

#[tokio::test]
async fn pause_split_resume_and_terminate_write_the_override_the_controller_reads() {
    let (env, ns, api, _dir, config) = running_reviews("cli-control").await;
    let cli = |args: &[&str]| iter8_in(&config, &ns, args);

    let said = stdout(&cli(&["pause", "reviews"]));
    assert!(said.contains(&format!("experiment {ns}/reviews pause requested")));
    let e = api.get("reviews").await.expect("get");
    assert_eq!(manual_override(&e), json!({"action": "pause"}));

    stdout(&cli(&["split", "reviews", "70", "20", "10"]));
    let e = api.get("reviews").await.expect("get");
    assert_eq!(
        manual_override(&e),
        json!({"action": "pause", "split": [70, 20, 10]})
    );
    let fields = e.metadata.managed_fields.unwrap_or_default();
    assert!(
        fields
            .iter()
            .any(|f| f.manager.as_deref() == Some("iter8-cli")),
        "the write is attributed to iter8-cli"
    );

    // Resume clears the held split.
    stdout(&cli(&["resume", "reviews"]));
    let e = api.get("reviews").await.expect("get");
    assert_eq!(manual_override(&e), json!({"action": "resume"}));

    // Bad weights: refused before anything is written, naming the versions.
    let wrong = stderr_of_failure(&cli(&["split", "reviews", "70", "30"]));
    assert!(
        wrong.contains(
            "experiment reviews has 3 versions (reviews-v1, reviews-v2, reviews-v3): give one weight per version, in that order; got 2"
        ),
        "{wrong}"
    );
    let sum = stderr_of_failure(&cli(&["terminate", "reviews", "70", "20", "20"]));
    assert!(
        sum.contains(
            "the weights must sum to 100: reviews-v1=70 + reviews-v2=20 + reviews-v3=20 sums to 110"
        ),
        "{sum}"
    );
    let missing = stderr_of_failure(&cli(&["pause", "ratings"]));
    assert!(
        missing.contains(&format!(
            "experiment \"ratings\" not found in namespace \"{ns}\""
        )),
        "{missing}"
    );
    let e = api.get("reviews").await.expect("get");
    assert_eq!(
        manual_override(&e),
        json!({"action": "resume"}),
        "unchanged"
    );

    stdout(&cli(&["terminate", "reviews", "0", "100", "0"]));
    let e = api.get("reviews").await.expect("get");
    assert_eq!(
        manual_override(&e),
        json!({"action": "terminate", "split": [0, 100, 0]})
    );

    // Once ended, there is nothing to steer.
    api.patch_status(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Aborted"}})),
    )
    .await
    .expect("status");
    let ended = stderr_of_failure(&cli(&["pause", "reviews"]));
    assert!(
        ended.contains(&format!(
            "experiment {ns}/reviews has already ended (phase Aborted); there is nothing to pause"
        )),
        "{ended}"
    );

    env.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn resume_moves_the_generation_past_a_failure_policy_pause_even_when_the_override_says_resume()
 {
    let env = env("cli-resume").await;
    let ns = env.namespace.name().to_string();
    let answer = assessment();
    create(&env.client, &ns, "reviews", &running_status(&answer)).await;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    // An earlier resume, then the failure policy paused it at the current generation: the
    // controller waits for the spec to change (status.pausedAtGeneration).
    let resumed = api
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"manualOverride": {"action": "resume"}}})),
        )
        .await
        .expect("override");
    let paused_at = resumed.metadata.generation.expect("generation");
    api.patch_status(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Paused", "pausedAtGeneration": paused_at}})),
    )
    .await
    .expect("status");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(env.control_plane, dir.path(), &ns);

    let said = stdout(&iter8(&config, &["resume", "reviews", "-n", &ns]));
    assert!(said.contains("resume requested"), "{said}");
    let e = api.get("reviews").await.expect("get");
    assert!(
        e.metadata.generation.expect("generation") > paused_at,
        "the spec changed, so the controller goes on"
    );
    assert_eq!(manual_override(&e), json!({"action": "resume"}));

    env.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn approve_opens_only_the_gate_that_waits_as_the_api_server_names_the_caller() {
    let (env, ns, api, _dir, config) = running_reviews("cli-approve").await;
    let cli = |args: &[&str]| iter8_in(&config, &ns, args);

    let missing = stderr_of_failure(&cli(&["approve", "nope"]));
    assert!(
        missing.contains(&format!(
            "experiment \"nope\" not found in namespace \"{ns}\""
        )),
        "{missing}"
    );
    let nothing = stderr_of_failure(&cli(&["approve", "reviews"]));
    assert!(
        nothing.contains(&format!(
            "experiment {ns}/reviews is not waiting at an approval gate; there is nothing to approve"
        )),
        "{nothing}"
    );
    assert!(
        api.get("reviews")
            .await
            .expect("get")
            .spec
            .approval
            .is_none()
    );

    // The controller holds the promotion at its gate.
    api.patch_status(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"gate": {"name": "promotion@7", "since": "2026-11-30T10:06:00Z"}}}),
        ),
    )
    .await
    .expect("status");
    let said = stdout(&cli(&["approve", "reviews"]));
    // Who: the API server's own account of the kubeconfig's user.
    let me =
        Api::<k8s_openapi::api::authentication::v1::SelfSubjectReview>::all(env.client.clone())
            .create(&PostParams::default(), &Default::default())
            .await
            .expect("review")
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .expect("user name");
    let e = api.get("reviews").await.expect("get");
    let approval = e.spec.approval.clone().expect("approval written");
    assert_eq!(
        (approval.gate.as_str(), approval.by.as_str()),
        ("promotion@7", me.as_str())
    );
    // When: the API server's time of the write, which the account prints.
    let at = iter8_crd::approval_time(&e.metadata).expect("managedFields time of the approval");
    assert!(
        said.contains(&format!(
            "experiment {ns}/reviews gate promotion@7 approved by {me} at {}",
            at.0
        )),
        "{said}"
    );
    let age = k8s_openapi::jiff::Timestamp::now().as_second() - at.0.as_second();
    assert!((0..120).contains(&age), "a server time of now: {at:?}");

    // An ended experiment has nothing to approve.
    api.patch_status(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Completed"}})),
    )
    .await
    .expect("status");
    let ended = stderr_of_failure(&cli(&["approve", "reviews"]));
    assert!(
        ended.contains("has already ended (phase Completed); there is nothing to approve"),
        "{ended}"
    );

    env.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn a_user_who_may_only_read_can_get_but_a_write_is_refused_in_a_sentence() {
    let env = env("cli-rbac").await;
    let ns = env.namespace.name().to_string();
    let answer = assessment();
    create(&env.client, &ns, "reviews", &running_status(&answer)).await;
    // A ServiceAccount that may read Experiments, nothing else (not even Events).
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "iter8-viewer"},
        "rules": [
            {"apiGroups": ["iter8.tools"], "resources": ["experiments"], "verbs": ["get", "list", "watch"]}
        ]
    }))
    .expect("role");
    Api::<Role>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "iter8-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "iter8-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "viewer"}})).expect("sa");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("sa");
    let token = accounts
        .create_token_request(
            "viewer",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .expect("token")
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest's status");
    let admin: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(env.control_plane.kubeconfig_path()).expect("kubeconfig"),
    )
    .expect("yaml");
    let cluster = serde_json::to_value(&admin["clusters"][0]["cluster"]).expect("cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("viewer.kubeconfig");
    std::fs::write(
        &config,
        serde_yaml::to_string(&json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "viewer", "user": {"token": token}}],
            "contexts": [{"name": "viewer", "context": {"cluster": "test", "user": "viewer", "namespace": ns}}],
            "current-context": "viewer",
        }))
        .expect("yaml"),
    )
    .expect("write");

    // Reading works...
    let table = stdout(&iter8(&config, &["get"]));
    assert!(table.contains("reviews "), "{table}");
    // `describe` without Events, as kubectl's does, saying why on both streams.
    let described = iter8(&config, &["describe", "reviews"]);
    let text = stdout(&described);
    assert!(text.contains("Phase:        Running"), "{text}");
    assert!(
        text.ends_with("\nEvents:\n  <not shown: no permission to list events>\n"),
        "{text}"
    );
    let warning = String::from_utf8_lossy(&described.stderr);
    assert!(
        warning.contains("may not list events in namespace"),
        "{warning}"
    );
    // ... writing is refused, in a sentence naming who, the verb and the resource.
    let refused = stderr_of_failure(&iter8(&config, &["pause", "reviews"]));
    assert!(
        refused.contains(&format!(
            "permission denied: user \"system:serviceaccount:{ns}:viewer\" may not patch experiments.iter8.tools in namespace \"{ns}\"; ask for a Role that grants \"patch\" on experiments.iter8.tools"
        )),
        "{refused}"
    );
    // ... and so is an approval of a gate the experiment waits at.
    Api::<Experiment>::namespaced(env.client.clone(), &ns)
        .patch_status(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"gate": {"name": "promotion@7", "since": "2026-11-30T10:06:00Z"}}})),
        )
        .await
        .expect("status");
    let refused = stderr_of_failure(&iter8(&config, &["approve", "reviews"]));
    assert!(
        refused.contains(&format!(
            "permission denied: user \"system:serviceaccount:{ns}:viewer\" may not patch experiments.iter8.tools in namespace \"{ns}\""
        )),
        "{refused}"
    );
    // ... and so is listing every namespace.
    let all = stderr_of_failure(&iter8(&config, &["get", "-A"]));
    assert!(
        all.contains("may not list experiments.iter8.tools in namespace \"*\""),
        "{all}"
    );
    let e = Api::<Experiment>::namespaced(env.client.clone(), &ns)
        .get("reviews")
        .await
        .expect("get");
    assert!(e.spec.manual_override.is_none(), "nothing was written");
    assert!(e.spec.approval.is_none(), "no approval was written");

    env.cleanup().await.expect("cleanup");
}

/// Starts `iter8 watch` on `name`, waits for its first line, then lets `advance` move the
/// experiment on; returns the lines printed and the exit code.
async fn watch_while(
    config: &Path,
    ns: &str,
    name: &str,
    advance: impl AsyncFnOnce(),
) -> (Vec<String>, Option<i32>) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_iter8"))
        .args(["watch", name, "-n", ns])
        .env("KUBECONFIG", config)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("iter8 watch starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a first line within 30 s")
        .expect("read")
        .expect("a line");
    seen.push(first);
    advance().await;
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        child.wait().await.expect("exit status").code()
    })
    .await
    .expect("watch ends within 60 s once the experiment ends");
    (seen, rest)
}

#[tokio::test]
async fn watch_prints_a_line_per_iteration_and_exits_with_the_outcome() {
    let env = env("cli-watch").await;
    let ns = env.namespace.name().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(env.control_plane, dir.path(), &ns);
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    let step = |iteration: u32, phase: &'static str, weights: [u32; 3], decision: Value| {
        let api = api.clone();
        let name = "promoted";
        async move {
            let weights: Vec<Value> = ["reviews-v1", "reviews-v2", "reviews-v3"]
                .iter()
                .zip(weights)
                .map(|(v, w)| json!({"version": v, "weight": w}))
                .collect();
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": phase, "completedIterations": iteration,
                    "weights": weights, "decision": decision,
                }})),
            )
            .await
            .expect("status");
            // Give the watch time to see each update on its own.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };

    create(
        &env.client,
        &ns,
        "promoted",
        &json!({"status": {"phase": "Running", "completedIterations": 0}}),
    )
    .await;
    let (lines, code) = watch_while(&config, &ns, "promoted", async || {
        step(
            1,
            "Running",
            [60, 20, 20],
            json!({"action": "continue", "reason": "learning"}),
        )
        .await;
        step(
            2,
            "Running",
            [40, 40, 20],
            json!({"action": "continue", "reason": "v2 leads"}),
        )
        .await;
        step(
            3,
            "Completed",
            [0, 100, 0],
            json!({"action": "promote", "version": "reviews-v2", "reason": "reviews-v2 wins"}),
        )
        .await;
    })
    .await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(lines[0].starts_with("iteration 0/20 "), "{lines:#?}");
    let iterations: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("iteration "))
        .collect();
    assert_eq!(iterations.len(), 4, "one line per iteration: {lines:#?}");
    assert!(iterations[1].contains("1/20") && iterations[1].contains("reviews-v1=60,"));
    assert!(iterations[3].contains("Completed") && iterations[3].contains("promote reviews-v2"));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("experiment completed; final split reviews-v1=0,reviews-v2=100,reviews-v3=0")
    );

    // A rollback ends with exit code 2.
    create(
        &env.client,
        &ns,
        "rolled-back",
        &json!({"status": {"phase": "Running", "completedIterations": 1}}),
    )
    .await;
    let (lines, code) = watch_while(&config, &ns, "rolled-back", async || {
        api.patch_status(
            "rolled-back",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Completed", "completedIterations": 2,
                "decision": {"action": "rollback", "reason": "reviews-v3 breaks error-rate <= 0.01"},
            }})),
        )
        .await
        .expect("status");
    })
    .await;
    assert_eq!(code, Some(2), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rollback: reviews-v3 breaks")),
        "{lines:#?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("experiment rolled back"))
    );

    // Watching a missing experiment fails at once.
    let missing = stderr_of_failure(&iter8(&config, &["watch", "ratings", "-n", &ns]));
    assert!(missing.contains("not found in namespace"), "{missing}");

    env.cleanup().await.expect("cleanup");
}
