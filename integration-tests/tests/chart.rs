//! The Helm chart (`charts/iter8`): it lints, renders what each values combination promises,
//! installs on the real API server, and its RBAC is exactly enough: the controller binary,
//! running with the token of the chart's ServiceAccount, takes the leader Lease and runs a
//! canary to completion on metrics from a real Prometheus, while the same token is refused
//! everything else tried.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use iter8_api::Action;
use iter8_crd::{Experiment, Metric, Phase};
use iter8_integration_tests::chart::{
    self, Workloads, chart_dir, controller_kubeconfig, helm, helm_ok, install_chart, repo_root,
    sample_canary, wait_http_ok, wait_lease_holder,
};
use iter8_integration_tests::gateway::{
    BackendSpec, Backends, Gateway, Load, create_route, route_weights,
};
use iter8_integration_tests::process::{Process, workspace_binary};
use iter8_integration_tests::prometheus::{Prometheus, free_port};
use iter8_integration_tests::workloads::{create_deployment, report_deployment};
use iter8_integration_tests::{TestEnv, crds};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Renders the chart (release `iter8` in namespace `iter8-system`) with `--set` values.
fn render(sets: &[&str]) -> Result<Vec<Value>> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "iter8",
        chart.to_str().context("chart path")?,
        "--namespace",
        "iter8-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    parse_documents(&helm_ok(&args)?)
}

fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(serde_json::to_value(value)?);
        }
    }
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = of_kind(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    found[0]
}

fn kinds(docs: &[Value]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for d in docs {
        *kinds
            .entry(d["kind"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    kinds
}

/// `(apiGroup, resource, verbs, resourceNames)` of each rule, sorted.
type Rule = (String, String, BTreeSet<String>, BTreeSet<String>);

fn rules(role: &Value) -> BTreeSet<Rule> {
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.insert((
                    group.clone(),
                    resource,
                    strings(&rule["verbs"]),
                    strings(&rule["resourceNames"]),
                ));
            }
        }
    }
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: &[&str]) -> Rule {
    (
        group.to_string(),
        resource.to_string(),
        verbs.iter().map(|s| s.to_string()).collect(),
        names.iter().map(|s| s.to_string()).collect(),
    )
}

/// The controller's cluster-wide rules without metric auth.
fn controller_rules() -> BTreeSet<Rule> {
    BTreeSet::from([
        rule(
            "iter8.tools",
            "experiments",
            &["get", "list", "watch", "patch"],
            &[],
        ),
        rule("iter8.tools", "experiments/status", &["update"], &[]),
        rule("iter8.tools", "metrics", &["get", "list", "watch"], &[]),
        rule(
            "gateway.networking.k8s.io",
            "httproutes",
            &["get", "list", "watch", "patch"],
            &[],
        ),
        rule(
            "networking.istio.io",
            "virtualservices",
            &["get", "list", "watch", "patch"],
            &[],
        ),
        rule("events.k8s.io", "events", &["create", "patch"], &[]),
        rule("", "services", &["get"], &[]),
        rule("apps", "deployments", &["get"], &[]),
    ])
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn assert_hardened(deployment: &Value, port: u64) {
    let name = &deployment["metadata"]["name"];
    let pod = &deployment["spec"]["template"]["spec"];
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{name}");
    assert!(psc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{name}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    let c = container(deployment);
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(csc["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(csc["capabilities"]["drop"], json!(["ALL"]), "{name}");
    let port_name = c["ports"][0]["name"].clone();
    assert_eq!(c["ports"][0]["containerPort"], port, "{name}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{name} {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], port_name, "{name} {probe}");
    }
    assert!(c["resources"]["requests"].is_object(), "{name} resources");
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

// ---------------------------------------------------------------------------------------------
// Lint, CRDs, rendering

#[test]
fn chart_passes_helm_lint_strict_with_defaults_and_every_option_on() -> Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    helm_ok(&["lint", "--strict", chart])?;
    helm_ok(&[
        "lint",
        "--strict",
        chart,
        "--set",
        "analytics.autoscaling.enabled=true,analytics.podDisruptionBudget.enabled=true,\
         serviceMonitor.enabled=true,networkPolicy.enabled=true,grafanaDashboard.enabled=true,\
         metricAuth.secretNames={prom-creds},controller.watchNamespace=apps,controller.replicas=2,\
         controller.analyticsTokenSecret=analytics-token,analytics.tls.secretName=analytics-tls,\
         analytics.tls.requireClientCertificate=true,\
         controller.analyticsTLS.clientSecret=controller-tls,\
         notifications.secretNames={hook-key},notifications.allowedUrls={https://hooks.example},\
         notifications.receivers[0].name=ops,notifications.receivers[0].url=https://hooks.example/ops",
    ])?;
    Ok(())
}

#[test]
fn chart_crds_equal_the_generated_ones() -> Result<()> {
    let chart = std::fs::read_to_string(chart_dir().join("crds/iter8.tools.yaml"))?;
    let generated = std::fs::read_to_string(crds::iter8_crds())?;
    assert!(
        chart == generated,
        "charts/iter8/crds/iter8.tools.yaml differs from api/crds/iter8.tools.yaml: \
         run the iter8-crd drift test with ITER8_UPDATE_CRDS=1 (see crates/iter8-crd/tests)"
    );
    Ok(())
}

#[test]
fn default_values_render_a_hardened_least_privilege_install() -> Result<()> {
    let docs = render(&[])?;
    assert_eq!(
        kinds(&docs),
        BTreeMap::from([
            ("ClusterRole".into(), 1),
            ("ClusterRoleBinding".into(), 1),
            ("ConfigMap".into(), 1),
            ("Deployment".into(), 2),
            ("Metric".into(), 13),
            ("Role".into(), 1),
            ("RoleBinding".into(), 1),
            ("Service".into(), 2),
            ("ServiceAccount".into(), 2),
            ("ValidatingAdmissionPolicy".into(), 1),
            ("ValidatingAdmissionPolicyBinding".into(), 1),
        ])
    );
    for d in &docs {
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ];
        if !cluster_scoped.contains(&d["kind"].as_str().unwrap_or_default()) {
            assert_eq!(d["metadata"]["namespace"], "iter8-system", "{d}");
        }
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/instance"],
            "iter8"
        );
    }

    // The controller: leader election on, identity and Lease namespace from the downward API,
    // defaults from the ConfigMap.
    let controller = one(&docs, "Deployment", "iter8-controller");
    assert_hardened(controller, 8081);
    assert_eq!(controller["spec"]["replicas"], 1);
    let c = container(controller);
    assert_eq!(c["args"], json!(["--leader-elect=true"]));
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert_eq!(
            env_value(c, var).expect(var)["valueFrom"]["fieldRef"]["fieldPath"],
            field
        );
    }
    assert_eq!(
        env_value(c, "ITER8_LEASE_NAME").expect("lease")["value"],
        "iter8-controller"
    );
    // The setting the 1,000-experiment memory bound was measured with.
    assert_eq!(
        env_value(c, "MALLOC_ARENA_MAX").expect("malloc arenas")["value"],
        "2"
    );
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"], "iter8-defaults",
        "defaults come from the ConfigMap"
    );
    let defaults = one(&docs, "ConfigMap", "iter8-defaults");
    assert_eq!(
        defaults["data"],
        json!({
            "ITER8_ANALYTICS_URL": "http://iter8-analytics.iter8-system.svc:8080",
            "ITER8_RETRY_AFTER": "5s",
            "ITER8_ANALYTICS_TIMEOUT": "10s",
            "ITER8_ANALYTICS_RETRIES": "3",
        })
    );
    assert_eq!(
        controller["spec"]["template"]["spec"]["serviceAccountName"],
        "iter8-controller"
    );

    // The analytics service: no API access at all.
    let analytics = one(&docs, "Deployment", "iter8-analytics");
    assert_hardened(analytics, 8080);
    assert_eq!(analytics["spec"]["replicas"], 2);
    assert_eq!(
        analytics["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let service = one(&docs, "Service", "iter8-analytics");
    assert_eq!(
        service["spec"]["selector"],
        analytics["spec"]["selector"]["matchLabels"]
    );

    // RBAC: exactly the controller's calls; no Secrets; the Lease by name.
    let cluster_role = one(&docs, "ClusterRole", "iter8-controller-iter8-system");
    assert_eq!(rules(cluster_role), controller_rules());
    let binding = one(&docs, "ClusterRoleBinding", "iter8-controller-iter8-system");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "iter8-controller", "namespace": "iter8-system"}])
    );
    let lease_role = one(&docs, "Role", "iter8-controller-leader-election");
    assert_eq!(
        rules(lease_role),
        BTreeSet::from([
            rule("coordination.k8s.io", "leases", &["create"], &[]),
            rule(
                "coordination.k8s.io",
                "leases",
                &["get", "update"],
                &["iter8-controller"]
            ),
        ])
    );

    // The metric library: every file's Metrics, valid, in the release namespace.
    let metrics = of_kind(&docs, "Metric");
    for m in &metrics {
        let metric: Metric = serde_json::from_value((*m).clone())
            .with_context(|| format!("{} is not a Metric", m["metadata"]["name"]))?;
        assert!(metric.metadata.name.is_some());
    }
    let names: BTreeSet<&str> = metrics
        .iter()
        .filter_map(|m| m["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains("sample-app-request-count"), "{names:?}");
    assert_eq!(names.len(), metrics.len(), "metric names are unique");
    Ok(())
}

#[test]
fn autoscaling_and_disruption_budget_target_the_analytics_pods() -> Result<()> {
    let docs = render(&[
        "analytics.autoscaling.enabled=true",
        "analytics.autoscaling.maxReplicas=9",
        "analytics.podDisruptionBudget.enabled=true",
    ])?;
    let analytics = one(&docs, "Deployment", "iter8-analytics");
    assert!(
        analytics["spec"].get("replicas").is_none(),
        "the HPA owns the replica count"
    );
    let hpa = one(&docs, "HorizontalPodAutoscaler", "iter8-analytics");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "iter8-analytics"})
    );
    assert_eq!(hpa["spec"]["maxReplicas"], 9);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    let pdb = one(&docs, "PodDisruptionBudget", "iter8-analytics");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        analytics["spec"]["selector"]["matchLabels"]
    );
    let bad = helm(&[
        "template",
        "iter8",
        chart_dir().to_str().context("chart")?,
        "--set",
        "analytics.autoscaling.enabled=true,analytics.autoscaling.minReplicas=5,analytics.autoscaling.maxReplicas=2",
    ])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("minReplicas must not exceed"));
    Ok(())
}

#[test]
fn one_token_secret_serves_both_sides_and_tls_values_configure_https_and_mtls() -> Result<()> {
    // Defaults: no token, no TLS, plain http URL.
    let docs = render(&[])?;
    let analytics = container(one(&docs, "Deployment", "iter8-analytics"));
    assert!(env_value(analytics, "ITER8_ANALYTICS_TOKEN_FILE").is_none());
    assert!(env_value(analytics, "ITER8_ANALYTICS_TLS_CERT_FILE").is_none());
    assert_eq!(
        one(&docs, "ConfigMap", "iter8-defaults")["data"]["ITER8_ANALYTICS_URL"],
        "http://iter8-analytics.iter8-system.svc:8080"
    );

    let docs = render(&[
        "controller.analyticsTokenSecret=analytics-token",
        "analytics.tls.secretName=analytics-tls",
        "analytics.tls.requireClientCertificate=true",
        "controller.analyticsTLS.clientSecret=controller-tls",
        "serviceMonitor.enabled=true",
    ])?;
    let file_of = |deployment: &Value, var: &str| -> String {
        env_value(container(deployment), var)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    // The path of `file` inside the volume built from Secret `secret` (key `key`).
    let mounted = |deployment: &Value, secret: &str, key: &str| -> Option<String> {
        let pod = &deployment["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["secret"]["secretName"] == secret)?;
        let items = volume["secret"]["items"].as_array();
        let path = match items {
            Some(items) => items.iter().find(|i| i["key"] == key)?["path"]
                .as_str()?
                .to_owned(),
            None => key.to_owned(),
        };
        let mount = container(deployment)["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == volume["name"])?;
        assert_eq!(mount["readOnly"], true);
        Some(format!("{}/{path}", mount["mountPath"].as_str()?))
    };
    let analytics = one(&docs, "Deployment", "iter8-analytics");
    let controller = one(&docs, "Deployment", "iter8-controller");
    for (deployment, var) in [
        (analytics, "ITER8_ANALYTICS_TOKEN_FILE"),
        (controller, "ITER8_ANALYTICS_TOKEN_FILE"),
    ] {
        let path = mounted(deployment, "analytics-token", "token");
        assert_eq!(Some(file_of(deployment, var)), path, "{var}");
    }
    for (var, key) in [
        ("ITER8_ANALYTICS_TLS_CERT_FILE", "tls.crt"),
        ("ITER8_ANALYTICS_TLS_KEY_FILE", "tls.key"),
        ("ITER8_ANALYTICS_TLS_CLIENT_CA_FILE", "ca.crt"),
    ] {
        assert_eq!(
            Some(file_of(analytics, var)),
            mounted(analytics, "analytics-tls", key),
            "{var}"
        );
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container(analytics)[probe]["httpGet"]["scheme"], "HTTPS");
    }
    assert_eq!(
        Some(file_of(controller, "ITER8_ANALYTICS_CA_FILE")),
        mounted(controller, "analytics-tls", "ca.crt")
    );
    // The controller gets the CA only, never the analytics service's key.
    assert!(mounted(controller, "analytics-tls", "tls.key").is_none());
    for (var, key) in [
        ("ITER8_ANALYTICS_CLIENT_CERT_FILE", "tls.crt"),
        ("ITER8_ANALYTICS_CLIENT_KEY_FILE", "tls.key"),
    ] {
        assert_eq!(
            Some(file_of(controller, var)),
            mounted(controller, "controller-tls", key),
            "{var}"
        );
    }
    assert_eq!(
        one(&docs, "ConfigMap", "iter8-defaults")["data"]["ITER8_ANALYTICS_URL"],
        "https://iter8-analytics.iter8-system.svc:8080"
    );
    let monitor = one(&docs, "ServiceMonitor", "iter8-analytics");
    let endpoint = &monitor["spec"]["endpoints"][0];
    // /metrics has a plain-HTTP port of its own; TLS guards the API.
    assert_eq!(endpoint["port"], "http-metrics");
    assert!(endpoint.get("scheme").is_none(), "{endpoint}");

    // mTLS without the Secrets it needs is refused with the reason.
    assert_refused(&[
        (
            "analytics.tls.requireClientCertificate=true",
            "needs analytics.tls.secretName",
        ),
        (
            "analytics.tls.requireClientCertificate=true,analytics.tls.secretName=t",
            "needs controller.analyticsTLS.clientSecret",
        ),
    ])
}

/// Asserts that rendering with each `--set` fails with its reason on stderr.
fn assert_refused(cases: &[(&str, &str)]) -> Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart")?;
    for (set, reason) in cases {
        let out = helm(&["template", "iter8", chart, "--set", set])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(stderr.contains(reason), "{set}: {stderr}");
    }
    Ok(())
}

#[test]
fn service_monitors_scrape_the_named_metrics_ports_of_both_services() -> Result<()> {
    let docs = render(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prom",
    ])?;
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 2);
    for (monitor, service) in [
        ("iter8-controller-metrics", "iter8-controller-metrics"),
        ("iter8-analytics", "iter8-analytics"),
    ] {
        let sm = one(&docs, "ServiceMonitor", monitor);
        assert_eq!(sm["metadata"]["labels"]["release"], "prom");
        let svc = one(&docs, "Service", service);
        let labels = svc["metadata"]["labels"].as_object().expect("labels");
        for (k, v) in sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("selector")
        {
            assert_eq!(labels.get(k), Some(v), "{monitor} selects {service}");
        }
        let port = &sm["spec"]["endpoints"][0]["port"];
        assert!(
            svc["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == *port),
            "{monitor} names a port of {service}"
        );
        assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
        assert_eq!(
            *port, "http-metrics",
            "{monitor} scrapes a port of its own, not the API's"
        );
    }
    Ok(())
}

#[test]
fn the_controller_rolls_out_with_a_surge_pod_ready_as_a_standby() -> Result<()> {
    // A rollout completes only if the new pod can become Ready while the old one leads:
    // a surge pod, no unavailability, and a readiness probe that a standby passes (/readyz,
    // which does not depend on the Lease: see the standby process test below).
    for sets in [&[][..], &["controller.replicas=2"][..]] {
        let docs = render(sets)?;
        let deployment = one(&docs, "Deployment", "iter8-controller");
        assert_eq!(
            deployment["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
            "{sets:?}"
        );
        assert_eq!(
            container(deployment)["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": "http-metrics"})
        );
        let env = container(deployment);
        for (name, value) in [
            ("ITER8_LEASE_DURATION", "15s"),
            ("ITER8_LEASE_RENEW_DEADLINE", "10s"),
            ("ITER8_LEASE_RETRY_PERIOD", "2s"),
        ] {
            assert_eq!(
                env_value(env, name).map(|e| &e["value"]),
                Some(&json!(value)),
                "{name}"
            );
        }
    }
    Ok(())
}

#[test]
fn network_policies_admit_only_the_controller_and_scrapers_to_analytics() -> Result<()> {
    let docs = render(&[
        "networkPolicy.enabled=true",
        "networkPolicy.metricsNamespaceSelector.name=monitoring",
    ])?;
    let controller_pods =
        one(&docs, "Deployment", "iter8-controller")["spec"]["template"]["metadata"]["labels"]
            .clone();
    let analytics = one(&docs, "NetworkPolicy", "iter8-analytics");
    assert_eq!(analytics["spec"]["policyTypes"], json!(["Ingress"]));
    let release_ns = analytics["metadata"]["namespace"].clone();
    let ingress = analytics["spec"]["ingress"].as_array().expect("ingress");
    // The API port admits the controller's pods, in the release namespace only.
    assert_eq!(ingress.len(), 2, "{ingress:#?}");
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": "http", "protocol": "TCP"}])
    );
    let from = ingress[0]["from"].as_array().expect("from");
    assert_eq!(
        from.len(),
        1,
        "only the controller reaches the API: {from:#?}"
    );
    let selector = from[0]["podSelector"]["matchLabels"]
        .as_object()
        .expect("pod selector");
    for (k, v) in selector {
        assert_eq!(&controller_pods[k], v, "the controller's pods are admitted");
    }
    assert_eq!(
        from[0]["namespaceSelector"],
        json!({"matchLabels": {"kubernetes.io/metadata.name": release_ns}})
    );
    // Scrapers reach the metrics port, and nothing else.
    assert_eq!(
        ingress[1],
        json!({
            "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "ports": [{"port": "http-metrics", "protocol": "TCP"}]
        })
    );
    let deployment = one(&docs, "Deployment", "iter8-analytics");
    let c = container(deployment);
    assert!(
        c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "http-metrics" && p["containerPort"] == 9090),
        "{c:#?}"
    );
    assert!(
        c["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--metrics-listen=0.0.0.0:9090")),
        "{c:#?}"
    );
    let controller = one(&docs, "NetworkPolicy", "iter8-controller");
    assert_eq!(
        controller["spec"]["ingress"][0]["ports"],
        json!([{"port": "http-metrics", "protocol": "TCP"}])
    );
    // Without scrapers, nothing may connect to the controller.
    let docs = render(&["networkPolicy.enabled=true"])?;
    assert_eq!(
        one(&docs, "NetworkPolicy", "iter8-controller")["spec"]["ingress"],
        json!([])
    );
    Ok(())
}

#[test]
fn metric_auth_grants_get_on_the_named_secrets_only() -> Result<()> {
    let docs = render(&["metricAuth.secretNames={prom-creds,datadog-key}"])?;
    let role = one(&docs, "ClusterRole", "iter8-controller-iter8-system");
    let mut expected = controller_rules();
    expected.insert(rule(
        "",
        "secrets",
        &["get"],
        &["prom-creds", "datadog-key"],
    ));
    assert_eq!(rules(role), expected);
    Ok(())
}

#[test]
fn notifications_grant_get_on_their_named_secrets_only_and_configure_the_controller() -> Result<()>
{
    let docs = render(&[
        "notifications.secretNames={hook-key,prom-creds}",
        "metricAuth.secretNames={prom-creds}",
        "notifications.allowedUrls={https://hooks.slack.com/services,http://receiver.ops:8080}",
        "notifications.receivers[0].name=platform",
        "notifications.receivers[0].url=https://hooks.example/iter8",
    ])?;
    let role = one(&docs, "ClusterRole", "iter8-controller-iter8-system");
    let mut expected = controller_rules();
    expected.insert(rule("", "secrets", &["get"], &["prom-creds", "hook-key"]));
    assert_eq!(rules(role), expected, "one Secret rule, by name only");
    let defaults = one(&docs, "ConfigMap", "iter8-defaults");
    assert_eq!(
        defaults["data"]["ITER8_NOTIFICATION_ALLOWED_URLS"],
        "https://hooks.slack.com/services,http://receiver.ops:8080"
    );
    let receivers: Value = serde_json::from_str(
        defaults["data"]["ITER8_NOTIFICATIONS"]
            .as_str()
            .context("ITER8_NOTIFICATIONS")?,
    )?;
    assert_eq!(
        receivers,
        json!([{"name": "platform", "url": "https://hooks.example/iter8"}])
    );
    // The controller takes them as they are rendered.
    let parsed: Vec<iter8_crd::NotificationReceiver> = serde_json::from_value(receivers)?;
    assert_eq!(parsed[0].name, "platform");
    Ok(())
}

#[test]
fn metric_backend_allowed_urls_reach_the_controller_and_only_the_prometheus_url_by_default()
-> Result<()> {
    // By default nothing but defaults.prometheusURL (which the controller always allows).
    let docs = render(&["defaults.prometheusURL=http://prometheus.monitoring:9090"])?;
    let defaults = one(&docs, "ConfigMap", "iter8-defaults");
    assert_eq!(
        defaults["data"]["ITER8_PROMETHEUS_URL"],
        "http://prometheus.monitoring:9090"
    );
    assert!(
        defaults["data"]
            .get("ITER8_METRIC_BACKEND_ALLOWED_URLS")
            .is_none(),
        "{defaults}"
    );
    let docs = render(&[
        "metricBackends.allowedUrls={https://api.datadoghq.com/api/v1,http://thanos.monitoring:9090}",
    ])?;
    let defaults = one(&docs, "ConfigMap", "iter8-defaults");
    assert_eq!(
        defaults["data"]["ITER8_METRIC_BACKEND_ALLOWED_URLS"],
        "https://api.datadoghq.com/api/v1,http://thanos.monitoring:9090"
    );
    // The schema refuses what the controller would refuse at startup.
    let refused = render(&["metricBackends.allowedUrls={https://api.example/v1?key}"])
        .expect_err("a URL with a query is refused by the schema");
    assert!(
        refused.to_string().contains("metricBackends.allowedUrls"),
        "{refused}"
    );
    let refused = render(&["metricBackends.allowedUrls={http://user:secret@thanos:9090}"])
        .expect_err("a URL with credentials is refused by the schema");
    assert!(
        refused.to_string().contains("metricBackends.allowedUrls"),
        "{refused}"
    );
    Ok(())
}

#[test]
fn the_metric_library_can_be_turned_off_or_narrowed() -> Result<()> {
    let docs = render(&["metricLibrary.enabled=false"])?;
    assert!(of_kind(&docs, "Metric").is_empty());
    let docs = render(&["metricLibrary.libraries={sample-app}"])?;
    let metrics = of_kind(&docs, "Metric");
    assert_eq!(metrics.len(), 5);
    assert!(
        metrics
            .iter()
            .all(|m| m["metadata"]["labels"]["iter8.tools/metric-library"] == "sample-app")
    );
    Ok(())
}

#[test]
fn a_watch_namespace_scopes_the_controller_and_its_rbac() -> Result<()> {
    let docs = render(&["controller.watchNamespace=apps"])?;
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let binding = one(&docs, "RoleBinding", "iter8-controller");
    assert_eq!(binding["metadata"]["namespace"], "apps");
    assert_eq!(
        binding["roleRef"]["name"], "iter8-controller-iter8-system",
        "the ClusterRole, granted in one namespace"
    );
    // Experiments in `apps` may use the library in the release namespace: read and watch.
    let metrics_role = one(&docs, "Role", "iter8-controller-metrics");
    assert_eq!(
        rules(metrics_role),
        BTreeSet::from([rule(
            "iter8.tools",
            "metrics",
            &["get", "list", "watch"],
            &[]
        )])
    );
    let c = container(one(&docs, "Deployment", "iter8-controller"));
    assert_eq!(
        c["args"],
        json!(["--leader-elect=true", "--namespace=apps"])
    );
    Ok(())
}

#[test]
fn invalid_values_are_refused_with_the_reason() -> Result<()> {
    assert_refused(&[
        (
            "controller.replicas=2,controller.leaderElection.enabled=false",
            "needs controller.leaderElection.enabled",
        ),
        (
            "controller.replica=2",
            "additional properties 'replica' not allowed",
        ),
        ("defaults.retryAfter=soon", "retryAfter"),
        ("metricLibrary.libraries={linkerd}", "value must be one of"),
        (
            "analytics.enabled=false",
            "defaults.analyticsURL is required",
        ),
    ])?;
    // With an external analytics service, none is installed.
    let docs = render(&[
        "analytics.enabled=false",
        "defaults.analyticsURL=https://analytics.example.com",
    ])?;
    assert!(of_kind(&docs, "Deployment").len() == 1);
    assert_eq!(
        one(&docs, "ConfigMap", "iter8-defaults")["data"]["ITER8_ANALYTICS_URL"],
        "https://analytics.example.com"
    );
    Ok(())
}

#[test]
fn the_grafana_dashboard_charts_metrics_the_services_export() -> Result<()> {
    let docs = render(&["grafanaDashboard.enabled=true"])?;
    let cm = one(&docs, "ConfigMap", "iter8-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value =
        serde_json::from_str(cm["data"]["iter8.json"].as_str().expect("dashboard json"))?;
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("iter8_"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    // The names the two services register (crates/iter8-controller/src/telemetry.rs,
    // crates/iter8-analytics/src/metrics.rs), with the suffixes of histograms.
    let mut exported = String::new();
    for path in [
        "crates/iter8-controller/src/telemetry.rs",
        "crates/iter8-analytics/src/metrics.rs",
    ] {
        exported.push_str(&std::fs::read_to_string(repo_root().join(path))?);
    }
    for name in &used {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            exported.contains(&format!("\"{base}\"")),
            "the dashboard uses {name}, which no service exports"
        );
    }
    for required in [
        "iter8_controller_reconciles_total",
        "iter8_controller_iterations_total",
        "iter8_controller_iteration_duration_seconds_bucket",
        "iter8_controller_experiments",
        "iter8_analytics_http_requests_total",
        "iter8_analytics_http_request_duration_seconds_bucket",
    ] {
        assert!(used.contains(required), "no panel shows {required}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// docs/install.md's configuration table, generated from values.yaml and values.schema.json

const TABLE_START: &str =
    "<!-- values-table:start (generated by integration-tests/tests/chart.rs) -->";
const TABLE_END: &str = "<!-- values-table:end -->";

/// One row per leaf of values.yaml (objects without documented keys are leaves), with the
/// schema's type and description.
fn values_table() -> Result<String> {
    let chart = chart_dir();
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml"))?)?;
    let values = serde_json::to_value(values)?;
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json"))?)?;
    let mut rows = Vec::new();
    let mut undocumented = Vec::new();
    walk(&values, &schema, "", &mut rows, &mut undocumented);
    ensure!(
        undocumented.is_empty(),
        "values without a description in values.schema.json: {undocumented:?}"
    );
    let mut table =
        String::from("| key | type | default | description |\n| --- | --- | --- | --- |\n");
    for (key, ty, default, description) in rows {
        let default = default.replace('|', "\\|");
        table.push_str(&format!(
            "| `{key}` | {ty} | `{default}` | {description} |\n"
        ));
    }
    Ok(table)
}

fn walk(
    value: &Value,
    schema: &Value,
    prefix: &str,
    rows: &mut Vec<(String, String, String, String)>,
    undocumented: &mut Vec<String>,
) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (key, v) in object {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let node = &schema["properties"][key];
        if v.is_object() && node["properties"].is_object() {
            walk(v, node, &path, rows, undocumented);
            continue;
        }
        let Some(description) = node["description"].as_str() else {
            undocumented.push(path);
            continue;
        };
        let ty = match &node["type"] {
            Value::String(s) => s.clone(),
            Value::Array(types) => types
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
            _ => String::new(),
        };
        rows.push((path, ty, v.to_string(), description.to_string()));
    }
}

#[test]
fn install_doc_configuration_table_matches_the_chart_values() -> Result<()> {
    let path = repo_root().join("docs/install.md");
    let doc = std::fs::read_to_string(&path)?;
    let (head, rest) = doc
        .split_once(TABLE_START)
        .with_context(|| format!("{} has no {TABLE_START} marker", path.display()))?;
    let (current, tail) = rest
        .split_once(TABLE_END)
        .with_context(|| format!("{} has no {TABLE_END} marker", path.display()))?;
    let table = values_table()?;
    let expected = format!("\n{table}");
    if current == expected {
        return Ok(());
    }
    if std::env::var_os("ITER8_UPDATE_DOCS").is_some() {
        std::fs::write(
            &path,
            format!("{head}{TABLE_START}{expected}{TABLE_END}{tail}"),
        )?;
        return Ok(());
    }
    bail!(
        "docs/install.md's configuration table is out of date with charts/iter8/values.yaml and \
         values.schema.json; regenerate it with \
         `ITER8_UPDATE_DOCS=1 cargo test -p iter8-integration-tests --test chart install_doc`"
    )
}

// ---------------------------------------------------------------------------------------------
// Install, and the controller binary on the chart's ServiceAccount token

async fn client_from(kubeconfig: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// A kubeconfig file holding a token of the chart's controller ServiceAccount, and nothing
/// else.
async fn service_account_kubeconfig(env: &TestEnv, dir: &Path) -> Result<PathBuf> {
    let (path, _) =
        controller_kubeconfig(env.control_plane, &env.client, env.namespace.name(), dir).await?;
    Ok(path)
}

/// The controller binary as the installed chart's Deployment runs it, as pod `pod_name`, on
/// `kubeconfig`, serving its probes on a free loopback port (returned).
async fn spawn_chart_controller(
    admin: &Client,
    ns: &str,
    (name, pod_name): (&'static str, &str),
    kubeconfig: &Path,
    dir: &Path,
) -> Result<(Process, u16)> {
    let (process, port, args) =
        chart::spawn_chart_controller(admin, ns, (name, pod_name), kubeconfig, dir).await?;
    assert_eq!(
        args,
        vec![
            "--leader-elect=true".to_string(),
            format!("--namespace={ns}")
        ]
    );
    Ok((process, port))
}

/// Waits until the process serving probes on loopback `port` is Ready.
async fn wait_ready(port: u16, logs: &dyn Fn() -> String) -> Result<()> {
    wait_http_ok(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(30),
        logs,
    )
    .await
}

/// An HTTP GET's status code, or `None` when nothing answers.
async fn status_of(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn a_standby_controller_process_is_ready_and_takes_over_when_the_old_one_stops() -> Result<()>
{
    // A rollout as the chart's strategy runs it: the old pod leads; a surge pod starts and
    // must become Ready while the old one still holds the Lease; then the old pod gets
    // SIGTERM and the new one takes over.
    let env = TestEnv::new("chart-rollout").await?;
    let ns = env.namespace.name().to_string();
    let admin = env.client.clone();
    let work = tempfile::tempdir()?;
    let kubeconfig = env
        .control_plane
        .kubeconfig_path()
        .to_str()
        .context("path")?;
    let chart = chart_dir();
    helm_ok(&[
        "install",
        "iter8",
        chart.to_str().context("chart")?,
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        &ns,
        "--skip-crds",
        "--set",
        &format!(
            "controller.watchNamespace={ns},metricLibrary.enabled=false,analytics.enabled=false,defaults.analyticsURL=http://127.0.0.1:9,\
             controller.logJson=false,controller.leaderElection.leaseDuration=6s,\
             controller.leaderElection.renewDeadline=4s,controller.leaderElection.retryPeriod=500ms"
        ),
    ])?;
    crds::install(&admin, &crds::iter8_crds(), None).await?;
    let sa_kubeconfig = service_account_kubeconfig(&env, work.path()).await?;

    let (old_pod, new_pod) = ("iter8-controller-old-aaaaa", "iter8-controller-new-bbbbb");
    let (mut old, old_port) =
        spawn_chart_controller(&admin, &ns, ("old", old_pod), &sa_kubeconfig, work.path()).await?;
    wait_lease_holder(&admin, &ns, old_pod, &|| old.log()).await?;
    let (new, new_port) =
        spawn_chart_controller(&admin, &ns, ("new", new_pod), &sa_kubeconfig, work.path()).await?;
    let logs = || format!("{}\n{}", old.log(), new.log());
    // The surge pod is Ready as a standby: the Deployment may now stop the old pod.
    wait_ready(new_port, &logs).await?;
    assert_eq!(
        status_of(&format!("http://127.0.0.1:{old_port}/readyz")).await,
        Some(200),
        "the leader is Ready too"
    );
    wait_lease_holder(&admin, &ns, old_pod, &logs).await?;
    let metrics = reqwest::get(format!("http://127.0.0.1:{new_port}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("iter8_controller_leader 0"),
        "the standby says it does not lead\n{metrics}"
    );

    // The old pod is stopped; it releases the Lease and the standby takes over at once
    // (well within the 6 s lease duration it would otherwise wait).
    let stopped = tokio::time::Instant::now();
    let status = old.terminate()?;
    assert!(
        status.success(),
        "old controller exited with {status}\n{}",
        old.log()
    );
    wait_lease_holder(&admin, &ns, new_pod, &|| new.log()).await?;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stopped.elapsed()
    );
    assert_eq!(
        status_of(&format!("http://127.0.0.1:{new_port}/readyz")).await,
        Some(200)
    );
    drop(new);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_on_the_charts_service_account_runs_a_canary_and_can_do_nothing_else()
-> Result<()> {
    // Both binaries must be built (run.sh does): fail before setting anything up.
    workspace_binary("iter8-controller")?;
    workspace_binary("iter8-analytics")?;
    let env = TestEnv::new("chart-install").await?;
    let ns = env.namespace.name().to_string();
    let admin = env.client.clone();
    let work = tempfile::tempdir()?;
    crds::install(&admin, &crds::http_route_crd(), None).await?;

    // Two versions of the sample app in a network namespace behind their Services, a real
    // gateway (Traefik) routing by the HTTPRoute, and a Prometheus scraping the apps. All load
    // goes through the gateway, so the apps see the split the controller writes.
    let http = reqwest::Client::new();
    let specs: Vec<BackendSpec> = [("v1", 1), ("v2", 2)]
        .into_iter()
        .map(|(version, seed)| BackendSpec {
            service: format!("sample-{version}"),
            config: iter8_sample_app::Config {
                version: version.into(),
                latency_ms: 1.0,
                latency_sigma: 0.3,
                error_rate: 0.002,
                conversion_rate: 0.0,
                seed,
                buckets_ms: vec![1.0, 2.0, 5.0, 10.0],
            },
        })
        .collect();
    let backends = Backends::start(&admin, &ns, &specs).await?;
    let gateway = Gateway::start(env.control_plane, &admin, &ns).await?;
    create_route(&admin, &ns, &gateway, "sample", &[("sample-v1", 100)]).await?;
    let prometheus = Prometheus::start(&backends.addrs())?;
    prometheus
        .wait_scraped(&http, backends.apps().len(), Duration::from_secs(60))
        .await?;
    let load = Load::start(&gateway.url(), 4);

    // helm install, scoped to the test's namespace, with the defaults pointing at the loopback
    // analytics service and Prometheus; a Secret for metric auth allowed by name.
    let analytics_port = free_port()?;
    let kubeconfig = env
        .control_plane
        .kubeconfig_path()
        .to_str()
        .context("path")?;
    let chart = chart_dir();
    let install = install_chart(
        env.control_plane,
        &ns,
        analytics_port,
        prometheus.url(),
        "metricAuth.secretNames={prometheus-credentials},notifications.secretNames={iter8-hook}",
    )?;
    assert!(install.contains("STATUS: deployed"), "{install}");
    assert!(
        install.contains(&format!("watching namespace {ns}")),
        "{install}"
    );
    let metrics: Api<Metric> = Api::namespaced(admin.clone(), &ns);
    assert_eq!(metrics.list(&ListParams::default()).await?.items.len(), 13);

    // The analytics and controller binaries, as the chart's Deployments run them, the
    // controller with a token of the chart's ServiceAccount and nothing else.
    let pod_name = "iter8-controller-7d9f-abcde";
    let mut workloads = Workloads::start(
        env.control_plane,
        &admin,
        &ns,
        analytics_port,
        pod_name,
        work.path(),
    )
    .await?;
    assert!(
        workloads
            .analytics_args
            .contains(&"--listen=0.0.0.0:8080".to_string()),
        "{:?}",
        workloads.analytics_args
    );
    assert_eq!(
        workloads.controller_args,
        vec![
            "--leader-elect=true".to_string(),
            format!("--namespace={ns}")
        ]
    );
    let sa_kubeconfig = workloads.controller_kubeconfig.clone();
    // It leads (Workloads::start waited for the Lease): the Lease RBAC works.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    let lease = leases.get("iter8-controller").await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(pod_name)
    );

    // A canary on the chart's sample-app Metrics, through HTTPRoute `sample` (created above
    // with the baseline only: the controller adds the candidate's backendRef).
    // Its versions name their Deployments, Available: the controller reads them (and their
    // Services) with the chart's token before traffic moves.
    let mut experiment = sample_canary(0.05, 50, "2s", 2);
    for (i, name) in ["sample-v1", "sample-v2"].into_iter().enumerate() {
        create_deployment(&admin, &ns, name).await?;
        report_deployment(&admin, &ns, name, true).await?;
        experiment["spec"]["versions"][i]["workload"] = json!({"name": name});
    }
    let experiments: Api<Experiment> = Api::namespaced(admin.clone(), &ns);
    let experiment: Experiment = serde_json::from_value(experiment)?;
    experiments
        .create(&PostParams::default(), &experiment)
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let exp = experiments.get("sample-canary").await?;
        if exp.status.as_ref().map(|s| s.phase) == Some(Phase::Completed) {
            break exp;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the canary did not complete within 120 s; status: {:?}\n{}",
                exp.status,
                workloads.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = done.status.context("status")?;
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "VersionsReady" && c.status == "True"),
        "the Services and Deployments were read and found ready: {:?}",
        status.conditions
    );
    let decision = status.decision.context("decision")?;
    assert_eq!(decision.action, Action::Promote, "{}", decision.reason);
    assert_eq!(status.recommended_version.as_deref(), Some("candidate"));
    assert_eq!(
        route_weights(&admin, &ns, "sample").await?,
        BTreeMap::from([("sample-v1".to_string(), 0), ("sample-v2".to_string(), 100)])
    );
    // ... and the gateway honours it: a moment after, only the candidate serves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = backends.served(&http).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = backends.served(&http).await?;
    load.stop();
    assert_eq!(
        after[0], before[0],
        "the baseline gets no traffic after the promotion"
    );
    assert!(
        after[1] > before[1] + 20,
        "the candidate serves the load: {before:?} -> {after:?} (load: {:?})",
        load.counts()
    );
    assert!(
        done.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == iter8_controller::FINALIZER),
        "the controller set its finalizer"
    );
    // Events are published after the status write that ends the experiment: wait for them.
    let events_api = Api::<Event>::namespaced(admin.clone(), &ns);
    let mut events: Vec<String> = Vec::new();
    for _ in 0..30 {
        events = events_api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        if events.iter().any(|r| r == "Promoted") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        events.iter().any(|r| r == "Promoted"),
        "{events:?}\n{}",
        workloads.logs()
    );
    let log = workloads.controller.log();
    // Every refusal the API server gives says "forbidden" (reason Forbidden, code 403); a
    // bare "403" would also match a port number in the log.
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the controller was refused something it needs:\n{log}"
    );

    // ... and nothing more: the same token, refused.
    let sa = client_from(&sa_kubeconfig).await?;
    let secrets_admin: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    for name in ["prometheus-credentials", "iter8-hook", "unrelated"] {
        secrets_admin
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "stringData": {"token": "s3cr3t"}
                }))?,
            )
            .await?;
    }
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ns);
    secrets
        .get("prometheus-credentials")
        .await
        .context("the Secret named in metricAuth.secretNames is readable")?;
    secrets
        .get("iter8-hook")
        .await
        .context("the Secret named in notifications.secretNames is readable")?;
    forbidden("get an unrelated Secret", secrets.get("unrelated").await);
    forbidden("list Secrets", secrets.list(&ListParams::default()).await);
    forbidden(
        "get a Secret in another namespace",
        Api::<Secret>::namespaced(sa.clone(), "kube-system")
            .get("prometheus-credentials")
            .await,
    );
    // Readiness reads one Service and one Deployment by name; nothing more.
    Api::<Service>::namespaced(sa.clone(), &ns)
        .get("sample-v2")
        .await
        .context("a version's Service is readable")?;
    Api::<Deployment>::namespaced(sa.clone(), &ns)
        .get("iter8-analytics")
        .await
        .context("a Deployment is readable")?;
    forbidden(
        "list Services",
        Api::<Service>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "list Deployments",
        Api::<Deployment>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "scale a Deployment",
        Api::<Deployment>::namespaced(sa.clone(), &ns)
            .patch(
                "iter8-analytics",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await,
    );
    forbidden(
        "delete a Service",
        Api::<Service>::namespaced(sa.clone(), &ns)
            .delete("sample-v2", &DeleteParams::default())
            .await,
    );
    forbidden(
        "delete a Deployment",
        Api::<Deployment>::namespaced(sa.clone(), &ns)
            .delete("iter8-analytics", &DeleteParams::default())
            .await,
    );
    forbidden(
        "create a ClusterRole",
        Api::<ClusterRole>::all(sa.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": format!("{ns}-escalate")},
                    "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
                }))?,
            )
            .await,
    );
    forbidden(
        "create a Pod",
        Api::<Pod>::namespaced(sa.clone(), &ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "shell"},
                    "spec": {"containers": [{"name": "sh", "image": "busybox"}]}
                }))?,
            )
            .await,
    );
    forbidden(
        "delete an Experiment",
        Api::<Experiment>::namespaced(sa.clone(), &ns)
            .delete("sample-canary", &DeleteParams::default())
            .await,
    );
    forbidden(
        "list Experiments outside the watched namespace",
        Api::<Experiment>::namespaced(sa.clone(), "default")
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "create a Metric",
        Api::<Metric>::namespaced(sa.clone(), &ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "iter8.tools/v3alpha1", "kind": "Metric",
                    "metadata": {"name": "injected"},
                    "spec": {"type": "counter", "prometheus": {"query": "vector(1)"}}
                }))?,
            )
            .await,
    );
    forbidden(
        "read another Lease",
        Api::<Lease>::namespaced(sa.clone(), &ns)
            .get("someone-else")
            .await,
    );
    forbidden(
        "list ConfigMaps",
        Api::<ConfigMap>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await,
    );

    // SIGTERM: the controller stops cleanly and gives the Lease up for a standby.
    let exit = workloads.controller.terminate()?;
    assert!(
        exit.success(),
        "controller exit {exit:?}\n{}",
        workloads.controller.log()
    );
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("iter8-controller")
        .await?;
    assert_eq!(lease.spec.and_then(|s| s.holder_identity), None);

    // helm upgrade changes the install in place; helm uninstall removes it.
    helm_ok(&[
        "upgrade",
        "iter8",
        chart.to_str().context("chart")?,
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        &ns,
        "--reuse-values",
        "--set",
        "controller.replicas=2",
    ])?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let upgraded = deployments.get("iter8-controller").await?;
    assert_eq!(upgraded.spec.replicas, Some(2));
    helm_ok(&[
        "uninstall",
        "iter8",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        &ns,
    ])?;
    assert!(deployments.get_opt("iter8-controller").await?.is_none());
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    assert!(
        cluster_roles
            .get_opt(&format!("iter8-controller-{ns}"))
            .await?
            .is_none()
    );
    drop(workloads);
    gateway.stop().await?;
    env.cleanup().await
}

/// The YAML blocks of a document under `docs/` that hold `kind: Experiment`.
fn documented_experiments(doc: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(repo_root().join("docs").join(doc))?;
    let mut found = Vec::new();
    for block in text.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap_or_default();
        if yaml.contains("kind: Experiment") {
            found.extend(parse_documents(yaml)?);
        }
    }
    Ok(found)
}

#[tokio::test]
async fn the_docs_example_experiment_is_admitted_and_names_metrics_the_chart_ships() -> Result<()> {
    let env = TestEnv::new("docs-example").await?;
    let ns = env.namespace.name().to_string();
    crds::install(&env.client, &crds::iter8_crds(), None).await?;
    // The chart's Metric library, as `helm install` puts it in the release namespace.
    let chart = chart_dir();
    let rendered = parse_documents(&helm_ok(&[
        "template",
        "iter8",
        chart.to_str().context("chart path")?,
        "--namespace",
        &ns,
    ])?)?;
    let metrics: Api<Metric> = Api::namespaced(env.client.clone(), &ns);
    for doc in of_kind(&rendered, "Metric") {
        metrics
            .create(
                &PostParams::default(),
                &serde_json::from_value(doc.clone())?,
            )
            .await?;
    }
    let examples = documented_experiments("experiments.md")?;
    ensure!(
        !examples.is_empty(),
        "docs/experiments.md shows no Experiment"
    );
    let experiments: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    for example in examples {
        // The docs install into iter8-system; here the release namespace is the test's.
        let text = serde_json::to_string(&example)?.replace("\"iter8-system\"", &format!("{ns:?}"));
        let experiment: Experiment = serde_json::from_str(&text)?;
        let name = experiment.metadata.name.clone().unwrap_or_default();
        experiments
            .create(&PostParams::default(), &experiment)
            .await
            .with_context(|| format!("the API server refused the docs' {name}"))?;
        for reference in &experiment.spec.metrics {
            let metric = &reference.metric;
            let namespace = metric.namespace.as_deref().unwrap_or(&ns);
            ensure!(
                Api::<Metric>::namespaced(env.client.clone(), namespace)
                    .get_opt(&metric.name)
                    .await?
                    .is_some(),
                "the docs' {name} names Metric {namespace}/{}, which the chart does not ship",
                metric.name
            );
        }
    }
    env.cleanup().await
}

// ---------------------------------------------------------------------------------------------
// The approval policy

/// The chart's ValidatingAdmissionPolicy, on the real API server: an approval naming anyone but
/// the user who writes it is refused with a sentence that says why; the writer's own name (what
/// `iter8 approve` writes) is admitted, and so is an unrelated edit of an approved Experiment.
#[tokio::test]
async fn the_approval_policy_admits_only_the_writers_own_name() -> Result<()> {
    let env = TestEnv::new("approval-policy").await?;
    let ns = env.namespace.name().to_string();
    crds::install(&env.client, &crds::iter8_crds(), None).await?;
    // Cluster-scoped objects: a name and a namespace label of this test's own, so that the
    // policy holds only here while other tests share the API server.
    let release = format!("iter8-{ns}");
    let label = format!("iter8-approval-policy-test={ns}");
    let chart = chart_dir();
    let rendered = parse_documents(&helm_ok(&[
        "template",
        &release,
        chart.to_str().context("chart path")?,
        "--namespace",
        &ns,
        "--set",
        &format!("approvalPolicy.namespaceSelector.matchLabels.iter8-approval-policy-test={ns}"),
    ])?)?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    let (key, value) = label.split_once('=').context("label")?;
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await?;
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let api: Api<DynamicObject> =
            Api::all_with(env.client.clone(), &ApiResource::from_gvk(&gvk));
        for doc in of_kind(&rendered, kind) {
            api.create(
                &PostParams::default(),
                &serde_json::from_value(doc.clone())?,
            )
            .await
            .with_context(|| format!("creating the chart's {kind}"))?;
        }
    }

    let experiments: Api<Experiment> = Api::namespaced(env.client.clone(), &ns);
    let mut canary = sample_canary(0.05, 20, "1s", 1);
    canary["metadata"] = json!({"name": "approved"});
    experiments
        .create(&PostParams::default(), &serde_json::from_value(canary)?)
        .await?;
    let me = Api::<SelfSubjectReview>::all(env.client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .context("the API server names the test's user")?;
    let approve = |by: &str| json!({"spec": {"approval": {"gate": "promotion@3", "by": by}}});

    // The policy takes effect once the API server has compiled it: wait for the refusal.
    let refusal = wait_for_refusal(&experiments, &approve("somebody-else")).await?;
    assert!(
        refusal.contains("spec.approval.by must be the name of the user who writes it")
            && refusal.contains(&me),
        "{refusal}"
    );
    experiments
        .patch(
            "approved",
            &PatchParams::default(),
            &Patch::Merge(approve(&me)),
        )
        .await
        .context("the writer's own name is admitted")?;
    experiments
        .patch(
            "approved",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "checkout"}}})),
        )
        .await
        .context("an edit that leaves the approval as it is is admitted")?;
    let written = experiments.get("approved").await?;
    assert_eq!(
        written.spec.approval.map(|a| a.by),
        Some(me.clone()),
        "the record names its writer"
    );

    // Another person (or the controller) editing an approved Experiment leaves the approval as
    // it is: admitted. Changing the approved gate under somebody else's name is not.
    let bob = Api::<Experiment>::namespaced(as_user(&env, &ns, "bob").await?, &ns);
    bob.patch(
        "approved",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"manualOverride": {"action": "pause"}}})),
    )
    .await
    .context("another user's edit that keeps the approval is admitted")?;
    let forged = bob
        .patch(
            "approved",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"approval": {"gate": "promotion@4"}}})),
        )
        .await;
    match forged {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "refused as invalid, not forbidden: {status:?}"
            );
            assert!(
                status.message.contains("spec.approval.by") && status.message.contains("bob"),
                "{}",
                status.message
            );
        }
        other => bail!("a changed gate under {me}'s name was admitted for bob: {other:?}"),
    }

    // An empty approval (`null`, as a restore or a JSON patch may write it) is no approval.
    let mut nulled = sample_canary(0.05, 20, "1s", 1);
    nulled["metadata"] = json!({"name": "nulled"});
    nulled["spec"]["approval"] = Value::Null;
    experiments
        .create(&PostParams::default(), &serde_json::from_value(nulled)?)
        .await
        .context("creating with `approval: null` is admitted")?;
    experiments
        .patch(
            "approved",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "replace", "path": "/spec/approval", "value": null}
            ]))?),
        )
        .await
        .context("replacing an approval with null is admitted")?;

    // Removing a finalizer of an Experiment being deleted (as the controller does) is admitted.
    let approved = json!({"spec": {"approval": {"gate": "promotion@3", "by": me}}});
    experiments
        .patch("approved", &PatchParams::default(), &Patch::Merge(approved))
        .await?;
    experiments
        .patch(
            "approved",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test.iter8.tools/hold"]}})),
        )
        .await?;
    experiments
        .delete("approved", &DeleteParams::default())
        .await?;
    bob.patch(
        "approved",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .context("another user's removal of the last finalizer is admitted")?;

    for kind in [
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ] {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let api: Api<DynamicObject> =
            Api::all_with(env.client.clone(), &ApiResource::from_gvk(&gvk));
        for doc in of_kind(&rendered, kind) {
            let name = doc["metadata"]["name"].as_str().context("a name")?;
            api.delete(name, &DeleteParams::default()).await?;
        }
    }
    env.cleanup().await
}

/// The policy holds in every namespace by default, in the watched one for a scoped controller,
/// in the selected ones when given, and not at all when turned off.
#[test]
fn the_approval_policy_applies_where_the_values_say() -> Result<()> {
    let selector = |sets: &[&str]| -> Result<Option<Value>> {
        let docs = render(sets)?;
        let bindings = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
        Ok(bindings
            .first()
            .map(|b| b["spec"]["matchResources"]["namespaceSelector"].clone()))
    };
    assert_eq!(selector(&[])?, Some(Value::Null));
    assert_eq!(
        selector(&["controller.watchNamespace=shop"])?,
        Some(json!({"matchLabels": {"kubernetes.io/metadata.name": "shop"}}))
    );
    assert_eq!(
        selector(&["approvalPolicy.namespaceSelector.matchLabels.team=checkout"])?,
        Some(json!({"matchLabels": {"team": "checkout"}}))
    );
    let off = render(&["approvalPolicy.enabled=false"])?;
    assert!(of_kind(&off, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&off, "ValidatingAdmissionPolicyBinding").is_empty());
    Ok(())
}

/// The policy's API (`admissionregistration.k8s.io/v1`) exists from Kubernetes 1.30: the chart
/// says so, and Helm refuses an older cluster with a message naming the requirement.
#[test]
fn the_chart_refuses_a_cluster_older_than_its_admission_policy_api() -> Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    let old = helm(&["template", "iter8", chart, "--kube-version", "1.29.9"])?;
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(
        !old.status.success() && stderr.contains(">=1.30.0-0"),
        "{stderr}"
    );
    let docs = parse_documents(&helm_ok(&[
        "template",
        "iter8",
        chart,
        "--kube-version",
        "1.30.0",
    ])?)?;
    assert_eq!(of_kind(&docs, "ValidatingAdmissionPolicy").len(), 1);
    Ok(())
}

/// An admin-built client that acts as `user`, who may get, patch and update Experiments in
/// `ns` (and nothing else).
async fn as_user(env: &TestEnv, ns: &str, user: &str) -> Result<Client> {
    let rules = json!([{
        "apiGroups": ["iter8.tools"],
        "resources": ["experiments"],
        "verbs": ["get", "patch", "update"],
    }]);
    let name = format!("iter8-test-{user}");
    Api::<DynamicObject>::namespaced_with(env.client.clone(), ns, &rbac("Role"))
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": name}, "rules": rules,
            }))?,
        )
        .await?;
    Api::<DynamicObject>::namespaced_with(env.client.clone(), ns, &rbac("RoleBinding"))
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            }))?,
        )
        .await?;
    let mut config = env.control_plane.config().await?;
    config.auth_info.impersonate = Some(user.to_string());
    Ok(Client::try_from(config)?)
}

fn rbac(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "rbac.authorization.k8s.io",
        "v1",
        kind,
    ))
}

/// Patches `patch` into Experiment `approved` until the API server refuses it; its message.
async fn wait_for_refusal(experiments: &Api<Experiment>, patch: &Value) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match experiments
            .patch("approved", &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => {
                return Ok(status.message);
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {
                // Admitted before the policy was in force: take it back and try again.
                experiments
                    .patch(
                        "approved",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"approval": null}})),
                    )
                    .await?;
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the approval policy never refused an approval naming somebody else"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}
