//! The Helm chart (`charts/iter8`) and its workloads run as processes: helm against the test
//! control plane, and the command line and environment the chart gives each container, so the
//! binaries run exactly as the chart configures them (there is no kubelet here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;

use crate::helm_binary;

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
