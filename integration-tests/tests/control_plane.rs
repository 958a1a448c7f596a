//! Tests proving the control plane is a real one: CRD admission with CEL
//! rules, watches, server-side apply on the status subresource, optimistic
//! concurrency, RBAC, and a real `helm install` against it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use iter8_integration_tests::{TestEnv, helm_binary};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};

const CEL_MESSAGE: &str = "minReplicas must not exceed maxReplicas";

/// Create a namespaced `Widget` CRD in a group unique to this test, with a
/// CEL rule on spec and a status subresource; wait until it is established.
async fn create_widget_crd(client: &Client, group: &str) -> Result<ApiResource> {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["minReplicas", "maxReplicas"],
                            "properties": {
                                "minReplicas": { "type": "integer", "minimum": 0 },
                                "maxReplicas": { "type": "integer", "minimum": 0 },
                                "replicas": { "type": "integer" }
                            },
                            "x-kubernetes-validations": [{
                                "rule": "self.minReplicas <= self.maxReplicas",
                                "message": CEL_MESSAGE
                            }]
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": { "type": "string" },
                                "observedReplicas": { "type": "integer" }
                            }
                        }
                    }
                }}
            }]
        }
    }))
    .context("CRD manifest")?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .context("creating CRD")?;

    let name = format!("widgets.{group}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let crd = crds.get(&name).await.context("reading CRD")?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("CRD {name} not established within 60s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, "v1", "Widget"),
        "widgets",
    ))
}

fn widget(ar: &ApiResource, name: &str, min: i64, max: i64) -> Result<DynamicObject> {
    serde_json::from_value(json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": { "name": name },
        "spec": { "minReplicas": min, "maxReplicas": max, "replicas": min }
    }))
    .context("widget manifest")
}

#[tokio::test]
async fn crd_cel_validation_watch_and_status_server_side_apply() -> Result<()> {
    let env = TestEnv::new("crd-cel").await?;
    let client = env.client.clone();
    let group = format!("{}.it.iter8.tools", env.namespace.name());
    let ar = create_widget_crd(&client, &group).await?;
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), env.namespace.name(), &ar);

    // Admission: a valid object is accepted...
    let created = widgets
        .create(&PostParams::default(), &widget(&ar, "good", 1, 5)?)
        .await
        .context("a valid Widget must be accepted")?;
    assert_eq!(created.data["spec"]["maxReplicas"], json!(5));
    assert!(created.metadata.uid.is_some(), "server assigned no uid");

    // ...and one violating the CEL rule is rejected with the rule's message.
    let err = widgets
        .create(&PostParams::default(), &widget(&ar, "bad", 7, 2)?)
        .await
        .expect_err("a Widget with minReplicas > maxReplicas must be rejected");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.is_invalid(), "{status:?}");
    assert!(
        status.message.contains(CEL_MESSAGE),
        "message was: {}",
        status.message
    );
    assert!(
        widgets.get_opt("bad").await?.is_none(),
        "the rejected Widget must not have been stored"
    );

    // The OpenAPI schema is enforced too (minimum: 0).
    let err = widgets
        .create(&PostParams::default(), &widget(&ar, "negative", -1, 2)?)
        .await
        .expect_err("a negative minReplicas must be rejected");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.minReplicas")),
        "{err:?}"
    );

    // Watch: after the initial list, a change made elsewhere arrives as an event.
    let config = watcher::Config::default().fields("metadata.name=good");
    let mut events = watcher(widgets.clone(), config).boxed();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.try_next().await? {
            if matches!(event, watcher::Event::InitDone) {
                return Ok::<_, anyhow::Error>(());
            }
        }
        bail!("watch ended before the initial list completed")
    })
    .await
    .context("watch did not complete its initial list")??;

    widgets
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .context("patching spec.replicas")?;
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.try_next().await? {
            if let watcher::Event::Apply(obj) = event {
                return Ok::<_, anyhow::Error>(obj);
            }
        }
        bail!("watch ended without an event")
    })
    .await
    .context("no watch event within 30s after the patch")??;
    assert_eq!(seen.metadata.name.as_deref(), Some("good"));
    assert_eq!(
        seen.data["spec"]["replicas"],
        json!(3),
        "event carries the new spec"
    );
    drop(events);

    // Server-side apply on the status subresource: status is written, and a
    // spec sneaked into the same request is ignored by the subresource.
    let before = widgets.get("good").await?;
    let applied = widgets
        .patch_status(
            "good",
            &PatchParams::apply("iter8-it-status").force(),
            &Patch::Apply(json!({
                "apiVersion": ar.api_version,
                "kind": ar.kind,
                "metadata": { "name": "good" },
                "spec": { "minReplicas": 0, "maxReplicas": 100, "replicas": 99 },
                "status": { "phase": "Ready", "observedReplicas": 3 }
            })),
        )
        .await
        .context("server-side apply of status")?;
    assert_eq!(applied.data["status"]["phase"], json!("Ready"));
    assert_eq!(applied.data["status"]["observedReplicas"], json!(3));

    let after = widgets.get("good").await?;
    assert_eq!(
        after.data["status"]["phase"],
        json!("Ready"),
        "status persisted"
    );
    assert_eq!(
        after.data["spec"], before.data["spec"],
        "spec untouched by the status apply"
    );
    assert_eq!(after.data["spec"]["replicas"], json!(3));
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "a status write must not bump metadata.generation"
    );
    let managed = after.metadata.managed_fields.clone().unwrap_or_default();
    let status_manager = managed
        .iter()
        .find(|m| m.manager.as_deref() == Some("iter8-it-status"))
        .context("no managedFields entry for the status field manager")?;
    assert_eq!(status_manager.operation.as_deref(), Some("Apply"));
    assert_eq!(status_manager.subresource.as_deref(), Some("status"));

    Api::<CustomResourceDefinition>::all(client)
        .delete(&format!("widgets.{group}"), &DeleteParams::default())
        .await
        .context("deleting CRD")?;
    env.cleanup().await
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() -> Result<()> {
    let env = TestEnv::new("conflict").await?;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), env.namespace.name());
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "c" },
        "data": { "k": "v1" }
    }))?;
    let created = cms.create(&PostParams::default(), &cm).await?;
    cm.metadata.resource_version = created.metadata.resource_version.clone();
    cm.data = Some([("k".to_owned(), "v2".to_owned())].into());
    let updated = cms.replace("c", &PostParams::default(), &cm).await?;
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );

    // Replacing again with the now stale resourceVersion must fail with 409.
    cm.data = Some([("k".to_owned(), "v3".to_owned())].into());
    let err = cms
        .replace("c", &PostParams::default(), &cm)
        .await
        .expect_err("a stale resourceVersion must be rejected");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.is_conflict() && s.code == 409),
        "{err:?}"
    );
    let stored = cms.get("c").await?;
    assert_eq!(
        stored.data.unwrap_or_default().get("k").map(String::as_str),
        Some("v2")
    );
    env.cleanup().await
}

#[tokio::test]
async fn rbac_is_enforced() -> Result<()> {
    let env = TestEnv::new("rbac").await?;

    // The harness identity is an admin (system:masters).
    let review = Api::<SelfSubjectReview>::all(env.client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context("SelfSubjectReview")?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .context("no user info")?;
    assert!(
        user.groups
            .unwrap_or_default()
            .iter()
            .any(|g| g == "system:masters"),
        "admin identity is not in system:masters"
    );

    // An identity without bindings is forbidden by RBAC.
    let mut config = env.control_plane.config().await?;
    config.auth_info.impersonate = Some("iter8-it-nobody".to_owned());
    let nobody = Client::try_from(config)?;
    let err = Api::<Secret>::namespaced(nobody, env.namespace.name())
        .list(&ListParams::default())
        .await
        .expect_err("an unbound user must not list secrets");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn helm_installs_a_chart() -> Result<()> {
    let env = TestEnv::new("helm").await?;
    let helm = helm_binary()?;

    let version = tokio::process::Command::new(&helm)
        .arg("version")
        .output()
        .await?;
    assert!(version.status.success(), "helm version failed: {version:?}");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.contains("v3."),
        "unexpected helm version: {version}"
    );

    let dir = tempfile::tempdir()?;
    let chart = dir.path().join("demo");
    std::fs::create_dir_all(chart.join("templates"))?;
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\ndescription: integration-test chart\n",
    )?;
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n")?;
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )?;

    let out = tokio::process::Command::new(&helm)
        .arg("install")
        .arg("demo")
        .arg(&chart)
        .args([
            "--namespace",
            env.namespace.name(),
            "--set",
            "greeting=hi",
            "--wait",
            "--timeout",
            "60s",
        ])
        .arg("--kubeconfig")
        .arg(env.control_plane.kubeconfig_path())
        .output()
        .await?;
    assert!(
        out.status.success(),
        "helm install failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), env.namespace.name())
        .get("demo-cm")
        .await
        .context("the chart's ConfigMap")?;
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hi")
    );
    let releases = Api::<Secret>::namespaced(env.client.clone(), env.namespace.name())
        .list(&ListParams::default().labels("owner=helm,name=demo"))
        .await?;
    assert_eq!(
        releases.items.len(),
        1,
        "helm stores exactly one release record"
    );
    let value: Value = serde_json::to_value(&releases.items[0].metadata.labels)?;
    assert_eq!(value["status"], json!("deployed"));
    env.cleanup().await
}
