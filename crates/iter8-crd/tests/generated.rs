//! The checked-in CRD YAML must equal what the Rust types generate.
//! Regenerate with `ITER8_UPDATE_API=1 cargo test -p iter8-crd`.

use std::path::PathBuf;

fn checked_in() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    vec![
        root.join("api/crds/iter8.tools.yaml"),
        root.join("charts/iter8/crds/iter8.tools.yaml"),
    ]
}

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = iter8_crd::crds_yaml().expect("CRDs serialize");
    for path in checked_in() {
        if std::env::var_os("ITER8_UPDATE_API").is_some() {
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&path, &generated).expect("write CRDs");
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is out of date with crates/iter8-crd; regenerate with \
             `ITER8_UPDATE_API=1 cargo test -p iter8-crd`",
            path.display()
        );
    }
}

#[test]
fn experiment_schema_carries_the_cel_rules_and_printer_columns() {
    let yaml = iter8_crd::crds_yaml().expect("CRDs serialize");
    assert!(yaml.contains("x-kubernetes-validations"));
    assert!(yaml.contains("a performance test experiment needs exactly one version"));
    assert!(yaml.contains("version names must be unique"));
    assert!(yaml.contains("jsonPath: .status.weightsSummary"));
    assert!(yaml.contains("subresources:\n      status: {}"));
}

/// Every `pattern` of a duration in `schema` (a JSON Schema), with its path.
fn duration_patterns(schema: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(p)) = map.get("pattern")
                && (p.contains("ms|") || p.contains("(ms"))
            {
                out.push((path.to_string(), p.clone()));
            }
            for (k, v) in map {
                duration_patterns(v, &format!("{path}.{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                duration_patterns(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_duration_pattern_is_the_parsers_grammar() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    for crd in iter8_crd::crds() {
        duration_patterns(
            &serde_json::to_value(&crd).expect("json"),
            "crd",
            &mut found,
        );
    }
    let values: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("charts/iter8/values.schema.json")).expect("schema"),
    )
    .expect("values schema is JSON");
    duration_patterns(&values, "values", &mut found);
    assert!(found.len() >= 8, "{found:#?}");
    for (path, pattern) in &found {
        assert_eq!(pattern, iter8_crd::duration::PATTERN, "{path}");
    }
    // The pattern accepts exactly what the parser does.
    let pattern = regex::Regex::new(iter8_crd::duration::PATTERN).expect("pattern compiles");
    for text in [
        "30s", "5m", "1h30m", "250ms", "0s", "1m30s", "10s5ms", "5", "s", "", "1.5s", "-1s", " 5s",
        "5s ", "5 s", "1d", "1M", "2y", "ms", "5sm",
    ] {
        assert_eq!(
            pattern.is_match(text),
            iter8_crd::parse_duration(text).is_some(),
            "{text:?}"
        );
    }
}
