//! Installing CustomResourceDefinitions from YAML files: iter8's own (`api/crds/`) and the
//! official router CRDs copied by `integration-tests/router-crds.sh`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;

/// iter8's generated CRDs.
pub fn iter8_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/crds/iter8.tools.yaml")
}

/// The official Gateway API HTTPRoute CRD.
pub fn http_route_crd() -> PathBuf {
    crate::cache_dir().join("crds/gateway-api-httproutes.yaml")
}

/// The official Gateway API standard-channel CRDs a gateway implementation watches
/// (GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant, BackendTLSPolicy).
pub fn gateway_api_crds() -> PathBuf {
    crate::cache_dir().join("crds/gateway-api-standard.yaml")
}

/// The official Istio CRDs (VirtualService among them).
pub fn istio_crds() -> PathBuf {
    crate::cache_dir().join("crds/istio-crds.yaml")
}

/// Applies the CRDs in `file` whose names pass `keep` (all when `None`) and waits until the
/// API server serves them. Idempotent, so concurrent tests may call it.
pub async fn install(client: &Client, file: &Path, keep: Option<&[&str]>) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "reading {} (run `bash integration-tests/setup.sh` first)",
            file.display()
        )
    })?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("parsing {}", file.display()))?;
        if value.is_null() {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml::from_value(value)
            .with_context(|| format!("reading a CRD from {}", file.display()))?;
        let name = crd.name_any();
        if keep.is_some_and(|k| !k.contains(&name.as_str())) {
            continue;
        }
        api.patch(
            &name,
            &PatchParams::apply("iter8-integration-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        names.push(name);
    }
    for name in names {
        wait_established(&api, &name).await?;
    }
    Ok(())
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    for _ in 0..100 {
        let crd = api.get(name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("CRD {name} was not established within 10 s")
}
