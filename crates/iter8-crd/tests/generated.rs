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
    assert!(yaml.contains("a performanceTest has exactly one version"));
    assert!(yaml.contains("version names must be unique"));
    assert!(yaml.contains("jsonPath: .status.weightsSummary"));
    assert!(yaml.contains("subresources:\n      status: {}"));
}
