//! The Helm chart (`charts/iter8`) and its workloads run as processes: helm against the test
//! control plane, and the command line and environment the chart gives each container, so the
//! binaries run exactly as the chart configures them (there is no kubelet here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;

use crate::gateway::service_account_token;
use crate::process::{Process, workspace_binary};
use crate::prometheus::free_port;
use crate::{ControlPlane, helm_binary};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests has a parent")
        .to_path_buf()
}

/// The chart's directory, `charts/iter8`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/iter8")
}

/// Runs helm with `args`.
pub fn helm(args: &[&str]) -> Result<Output> {
    let helm = helm_binary()?;
    let out = Command::new(&helm)
        .args(args)
        .output()
        .with_context(|| format!("running {}", helm.display()))?;
    Ok(out)
}

/// Runs helm with `args`; fails with its output unless it succeeds, else returns its stdout.
pub fn helm_ok(args: &[&str]) -> Result<String> {
    let out = helm(args)?;
    ensure!(
        out.status.success(),
        "helm {} failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The command line and environment the chart gives a container, from the installed
/// Deployment (and ConfigMaps it loads with envFrom), with downward-API fields filled in.
pub async fn container_command(
    client: &Client,
    ns: &str,
    deployment: &str,
    pod_name: &str,
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(deployment)
        .await?;
    let pod = d.spec.template.spec.context("pod spec")?;
    let c = &pod.containers[0];
    let mut env = BTreeMap::new();
    for source in c.env_from.iter().flatten() {
        let name = &source.config_map_ref.as_ref().context("configMapRef")?.name;
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(name)
            .await?;
        env.extend(cm.data.unwrap_or_default());
    }
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod_name.to_string(),
                Some("metadata.namespace") => ns.to_string(),
                other => bail!("unexpected valueFrom {other:?} in {deployment}"),
            },
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    Ok((c.args.clone().unwrap_or_default(), env))
}

/// Waits until GET `url` answers 2xx; on timeout fails with `logs()`.
pub async fn wait_http_ok(url: &str, timeout: Duration, logs: &dyn Fn() -> String) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} not OK within {timeout:?}\n{}", logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The chart's two workloads run as processes, as its installed Deployments configure them.
pub struct Workloads {
    /// `iter8-analytics`, listening on the loopback port the chart's defaults were pointed at.
    pub analytics: Process,
    /// `iter8-controller`, with only the token of the chart's ServiceAccount.
    pub controller: Process,
    /// The controller's health and metrics port.
    pub controller_port: u16,
    /// The analytics container's arguments, as the chart gives them.
    pub analytics_args: Vec<String>,
    /// The controller container's arguments, as the chart gives them.
    pub controller_args: Vec<String>,
    /// The controller's kubeconfig: the API server, its CA and the ServiceAccount's token.
    pub controller_kubeconfig: String,
}

impl Workloads {
    /// Runs the analytics binary of the release in `ns` on `127.0.0.1:<analytics_port>` (in
    /// place of the chart's `0.0.0.0:8080`), then the controller binary as pod `pod_name`
    /// with a token of the chart's `iter8-controller` ServiceAccount, and waits until each
    /// is ready and the controller holds the Lease. Logs go to `dir`.
    pub async fn start(
        control_plane: &ControlPlane,
        client: &Client,
        ns: &str,
        analytics_port: u16,
        pod_name: &str,
        dir: &Path,
    ) -> Result<Self> {
        let (analytics_args, vars) =
            container_command(client, ns, "iter8-analytics", "iter8-analytics-0").await?;
        let mut cmd = Command::new(workspace_binary("iter8-analytics")?);
        cmd.env_clear()
            .envs(&vars)
            .args(
                analytics_args
                    .iter()
                    .filter(|a| !a.starts_with("--listen=") && !a.starts_with("--metrics-listen=")),
            )
            .arg(format!("--listen=127.0.0.1:{analytics_port}"));
        // The chart serves /metrics on a port of its own (0.0.0.0:9090 in a pod); here a free
        // loopback port, so parallel tests and Prometheus's own 9090 do not collide.
        if analytics_args
            .iter()
            .any(|a| a.starts_with("--metrics-listen="))
        {
            cmd.arg(format!("--metrics-listen=127.0.0.1:{}", free_port()?));
        }
        let analytics = Process::spawn("analytics", cmd, dir)?;
        wait_http_ok(
            &format!("http://127.0.0.1:{analytics_port}/readyz"),
            Duration::from_secs(30),
            &|| analytics.log(),
        )
        .await?;

        let (kubeconfig_path, controller_kubeconfig) =
            controller_kubeconfig(control_plane, client, ns, dir).await?;
        let (controller, controller_port, controller_args) =
            spawn_chart_controller(client, ns, ("controller", pod_name), &kubeconfig_path, dir)
                .await?;
        wait_http_ok(
            &format!("http://127.0.0.1:{controller_port}/readyz"),
            Duration::from_secs(30),
            &|| format!("{}\n{}", controller.log(), analytics.log()),
        )
        .await?;
        // Ready means up (a standby is ready too): wait until it leads.
        wait_lease_holder(client, ns, pod_name, &|| {
            format!("{}\n{}", controller.log(), analytics.log())
        })
        .await?;
        Ok(Self {
            analytics,
            controller,
            controller_port,
            analytics_args,
            controller_args,
            controller_kubeconfig,
        })
    }

    /// Both logs (for failure messages).
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.controller.log(), self.analytics.log())
    }
}

/// Canary `sample-canary` of `sample-v2` (version `candidate`) against `sample-v1` (`stable`)
/// on HTTPRoute `sample`, on the chart's sample-app Metrics, with an error-rate limit and a
/// 50 ms mean-latency limit.
pub fn sample_canary(
    error_rate_limit: f64,
    max_increment: u32,
    interval: &str,
    min_iterations: u32,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
        "metadata": {"name": "sample-canary"},
        "spec": {
            "kind": "canary",
            "versions": [
                {"name": "stable", "backend": {"name": "sample-v1", "port": 8080}, "labels": {"version": "v1"}},
                {"name": "candidate", "backend": {"name": "sample-v2", "port": 8080}, "labels": {"version": "v2"}}
            ],
            "router": {"httpRoute": {"name": "sample"}},
            "metrics": [
                {"name": "requests", "metric": {"name": "sample-app-request-count"}},
                {"name": "errors", "metric": {"name": "sample-app-error-count"}},
                {"name": "latency", "metric": {"name": "sample-app-mean-latency"}}
            ],
            "ratios": [{"name": "error-rate", "numerator": "errors", "denominator": "requests"}],
            "criteria": {"objectives": [
                {"metric": "error-rate", "upperLimit": error_rate_limit},
                {"metric": "latency", "upperLimit": 50.0}
            ]},
            "strategy": {"maxCandidateWeightIncrement": max_increment},
            "duration": {"interval": interval, "minIterations": min_iterations, "maxIterations": 20}
        }
    })
}

/// `helm install iter8 charts/iter8` into `ns` of `control_plane`, watching only `ns`, with
/// the defaults pointing at the analytics service on `127.0.0.1:<analytics_port>` and at
/// `prometheus_url`, plain-text logs, and `extra_sets` (comma-separated, may be empty).
/// Returns helm's output.
pub fn install_chart(
    control_plane: &ControlPlane,
    ns: &str,
    analytics_port: u16,
    prometheus_url: &str,
    extra_sets: &str,
) -> Result<String> {
    let kubeconfig = control_plane.kubeconfig_path().to_str().context("path")?;
    let chart = chart_dir();
    let mut sets = format!(
        "controller.watchNamespace={ns},defaults.analyticsURL=http://127.0.0.1:{analytics_port},\
         defaults.prometheusURL={prometheus_url},defaults.retryAfter=1s,\
         controller.logJson=false,analytics.logJson=false"
    );
    if !extra_sets.is_empty() {
        sets = format!("{sets},{extra_sets}");
    }
    helm_ok(&[
        "install",
        "iter8",
        chart.to_str().context("chart")?,
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        ns,
        "--set",
        &sets,
    ])
}

/// Waits until `identity` holds the chart's controller Lease (`iter8-controller` in `ns`).
pub async fn wait_lease_holder(
    client: &Client,
    ns: &str,
    identity: &str,
    logs: &dyn Fn() -> String,
) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let holder = leases
            .get_opt("iter8-controller")
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if holder.as_deref() == Some(identity) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{identity} did not take the Lease (holder {holder:?})\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A kubeconfig holding a token of the chart's `iter8-controller` ServiceAccount in `ns` and
/// nothing else, written to `dir`: its path and its text.
pub async fn controller_kubeconfig(
    control_plane: &ControlPlane,
    client: &Client,
    ns: &str,
    dir: &Path,
) -> Result<(PathBuf, String)> {
    let token = service_account_token(client, ns, "iter8-controller").await?;
    let text = control_plane.token_kubeconfig("iter8-controller", &token)?;
    let path = dir.join("controller.kubeconfig");
    std::fs::write(&path, &text)?;
    Ok((path, text))
}

/// The controller binary as the installed chart's Deployment in `ns` runs it, as pod
/// `pod_name`, on `kubeconfig`, serving its probes on a free loopback port: the process, that
/// port and the container's arguments as the chart gives them.
pub async fn spawn_chart_controller(
    client: &Client,
    ns: &str,
    (name, pod_name): (&str, &str),
    kubeconfig: &Path,
    dir: &Path,
) -> Result<(Process, u16, Vec<String>)> {
    let (args, mut vars) = container_command(client, ns, "iter8-controller", pod_name).await?;
    let port = free_port()?;
    vars.insert(
        "ITER8_CONTROLLER_LISTEN".into(),
        format!("127.0.0.1:{port}"),
    );
    vars.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    vars.insert("RUST_LOG".into(), "info,kube=warn".into());
    let mut cmd = Command::new(workspace_binary("iter8-controller")?);
    cmd.env_clear().envs(&vars).args(&args);
    Ok((Process::spawn(name, cmd, dir)?, port, args))
}
