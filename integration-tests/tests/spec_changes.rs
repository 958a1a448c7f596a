//! What an experiment tests is fixed once it exists (review M10): the API server refuses, by
//! CEL transition rules, edits of the versions (a reorder moves traffic, as weights are kept by
//! position), the criteria, the strategy (alpha), the duration, the metrics and the router.
//! The edits a person needs while it runs (pause, resume, terminate, the analytics URL, the
//! failure policy) are still accepted.

mod common;

use anyhow::Result;
use iter8_crd::Experiment;
use iter8_integration_tests::TestEnv;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use common::*;

/// Applies a JSON merge patch to `spec`; the API server's refusal message, if it refused.
async fn edit(api: &Api<Experiment>, patch: Value) -> Result<Option<String>> {
    match api
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": patch })),
        )
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(Some(status.message)),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn what_an_experiment_tests_cannot_change_once_it_exists() -> Result<()> {
    let env = TestEnv::new("spec-changes").await?;
    install_crds(&env.client).await?;
    let api: Api<Experiment> = Api::namespaced(env.client.clone(), env.namespace.name());
    let exp = canary("fixed", "reviews", 10)?;
    api.create(&PostParams::default(), &exp).await?;
    let versions = serde_json::to_value(&exp.spec.versions)?;
    let mut reordered = versions.clone();
    reordered.as_array_mut().expect("a list").reverse();
    let mut renamed = versions.clone();
    renamed[1]["name"] = json!("other");

    let refused = [
        (
            "a reorder of the versions",
            json!({"versions": reordered}),
            "spec.versions",
        ),
        (
            "a renamed version",
            json!({"versions": renamed}),
            "spec.versions",
        ),
        (
            "an alpha change",
            json!({"strategy": {"alpha": 0.2}}),
            "spec.strategy",
        ),
        (
            "a criteria change",
            json!({"criteria": {"objectives": [{"metric": "error-rate", "upperLimit": 0.5}]}}),
            "spec.criteria",
        ),
        (
            "a maxIterations change",
            json!({"duration": {"maxIterations": 50}}),
            "spec.duration",
        ),
        (
            "a router change",
            json!({"router": {"httpRoute": {"name": "other"}}}),
            "spec.router",
        ),
        ("a metrics change", json!({"metrics": []}), "spec.metrics"),
    ];
    for (what, patch, field) in refused {
        let message = edit(&api, patch)
            .await?
            .unwrap_or_else(|| panic!("{what} was accepted"));
        assert!(message.contains(field), "{what}: {message}");
        assert!(message.contains("cannot change"), "{what}: {message}");
    }
    assert_eq!(api.get("fixed").await?.spec, exp.spec, "nothing changed");

    let accepted = [
        json!({"manualOverride": {"action": "pause"}}),
        json!({"manualOverride": {"action": "resume"}}),
        json!({"analytics": {"url": "http://elsewhere:8080"}}),
        json!({"failurePolicy": {"maxConsecutiveFailures": 9, "action": "pause"}}),
    ];
    for patch in accepted {
        assert_eq!(
            edit(&api, patch.clone()).await?,
            None,
            "{patch} is accepted"
        );
    }
    env.cleanup().await
}
