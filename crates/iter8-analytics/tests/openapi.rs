//! The OpenAPI document: complete, self-consistent, and identical to the checked-in copy.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should fail loudly

use std::path::PathBuf;

use iter8_analytics::openapi;
use serde_json::Value;

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(openapi::CHECKED_IN_PATH)
}

#[test]
fn openapi_checked_in_document_is_up_to_date() {
    let path = checked_in_path();
    let generated = openapi::pretty();
    if std::env::var_os("ITER8_UPDATE_API").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date with the wire types in iter8-api; regenerate it with\n    \
         ITER8_UPDATE_API=1 cargo test -p iter8-analytics openapi\nand commit the result",
        openapi::CHECKED_IN_PATH
    );
}

#[test]
fn openapi_document_describes_every_endpoint_and_status() {
    let doc = openapi::document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/readyz",
            "/v1/assessments"
        ]
    );
    let responses = doc["paths"]["/v1/assessments"]["post"]["responses"]
        .as_object()
        .unwrap();
    for status in ["200", "400", "401", "413", "415", "422", "503"] {
        assert!(
            responses.contains_key(status),
            "no {status} for assessments"
        );
    }
    for schema in ["AssessmentRequest", "AssessmentResponse", "ErrorResponse"] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "no schema {schema}"
        );
    }
}

#[test]
fn openapi_every_ref_resolves_to_a_component_schema() {
    let doc = openapi::document();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points outside components/schemas"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => refs.push(r.clone()),
                    _ => collect_refs(v, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

#[test]
fn openapi_example_request_is_assessed_so_fuzzers_reach_the_200_answer() {
    let doc = openapi::document();
    let example = &doc["paths"]["/v1/assessments"]["post"]["requestBody"]["content"]["application/json"]
        ["examples"]["canary"]["value"];
    let request: iter8_api::AssessmentRequest = serde_json::from_value(example.clone()).unwrap();
    let response = iter8_engine::assess(&request).unwrap();
    assert_eq!(response.split.iter().map(|w| w.weight).sum::<u32>(), 100);
}
