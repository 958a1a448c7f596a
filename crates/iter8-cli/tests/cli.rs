//! The `iter8` binary: errors name the file, line and field; `assess` prints a table and the
//! decision; `report` renders a saved run.

use std::path::PathBuf;
use std::process::{Command, Output};

fn iter8(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iter8"))
        .args(args)
        .output()
        .expect("the iter8 binary runs")
}

fn example_request() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/assessment-request.json")
}

#[test]
fn a_version_without_url_fails_with_the_line_and_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("exp.yaml");
    std::fs::write(
        &file,
        "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\nspec:\n  kind: canary\n  versions:\n  - name: v1\n    url: http://127.0.0.1:1/\n  - name: v2\n",
    )
    .expect("write file");
    let out = iter8(&["run", "-f", file.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exp.yaml:8: spec.versions[1].url: version \"v2\" has no url"),
        "{stderr}"
    );
}

#[test]
fn a_missing_field_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("exp.yaml");
    std::fs::write(
        &file,
        "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\nspec:\n  versions:\n  - name: v1\n    url: http://127.0.0.1:1/\n",
    )
    .expect("write file");
    let out = iter8(&["run", "-f", file.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exp.yaml:4: spec: missing field `kind`"),
        "{stderr}"
    );
}

#[test]
fn assess_prints_the_versions_and_the_decision() {
    let example = example_request();
    let out = iter8(&["assess", "-f", example.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for v in ["reviews-v1", "reviews-v2", "reviews-v3", "P(win)"] {
        assert!(stdout.contains(v), "{v} missing:\n{stdout}");
    }
    assert!(stdout.contains("decision: promote reviews-v2"), "{stdout}");

    let out = iter8(&[
        "assess",
        "-f",
        example.to_str().expect("utf-8 path"),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(json["decision"]["version"], "reviews-v2");
}

#[test]
fn assess_names_the_field_of_a_malformed_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("req.json");
    std::fs::write(
        &file,
        r#"{"kind": "abn", "iteration": "two", "versions": []}"#,
    )
    .expect("write file");
    let out = iter8(&["assess", "-f", file.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("iteration"), "{stderr}");
}

#[test]
fn the_documented_example_experiment_is_valid() {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/local-canary.yaml");
    let experiment = iter8_cli::spec::load_file(&file).expect("the example parses");
    assert_eq!(experiment.name, "checkout-canary");
    assert_eq!(experiment.load.requests_per_iteration, Some(1000));
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "_iter8()"),
        ("zsh", "#compdef iter8"),
        ("fish", "complete -c iter8"),
    ] {
        let out = iter8(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for command in ["get", "describe", "watch", "split", "terminate"] {
            assert!(script.contains(command), "{shell}: {command} not completed");
        }
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("iter8.bash");
    std::fs::write(&file, iter8(&["completion", "bash"]).stdout).expect("write");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
        .expect("bash runs");
    assert!(status.success(), "bash -n refused the completion script");
}

#[test]
fn cluster_commands_check_their_arguments_before_connecting() {
    // `split` needs weights; `report` and `watch` need a name. A usage error exits 1, never
    // 2, which `iter8 watch` keeps for "rolled back".
    let out = iter8(&["split", "reviews"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<WEIGHTS>..."));
    let out = iter8(&["report"]);
    assert_eq!(out.status.code(), Some(1));
    let out = iter8(&["watch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<NAME>"));
    let out = iter8(&["watch", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    // A kubeconfig that does not exist is named.
    let out = iter8(&["get", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot use the kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );
}
