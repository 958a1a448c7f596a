//! `iter8 demo` names the winner and writes an HTML report whose charts render in headless
//! Chromium (Debian `chromium`, installed by integration-tests/setup.sh).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use iter8_api::Action;
use iter8_cli::progress::{Mode, Progress};
use iter8_cli::{Analytics, demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_names_the_winner_and_its_report_renders_in_chromium() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("demo");
    let started = Instant::now();
    let outcome = demo::run(
        &out,
        &Analytics::new(None).expect("in-process analytics"),
        &mut Progress::new(Mode::Plain),
    )
    .await
    .expect("the demo runs");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "the demo took {took:?}");
    let run = &outcome.run;
    assert_eq!(
        (
            run.outcome.decision.action,
            run.outcome.decision.version.as_deref()
        ),
        (Action::Promote, Some("v2")),
        "{:?}",
        run.outcome.decision
    );
    let line = iter8_cli::report::text::winner_line(run);
    assert!(line.starts_with("winner: v2 "), "{line}");
    assert!(outcome.json.exists() && outcome.html.exists());

    // `iter8 report` renders the saved run again, as text and as the same HTML page.
    let report = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_iter8"))
            .arg("report")
            .arg("-f")
            .arg(&outcome.json)
            .args(args)
            .output()
            .expect("iter8 report runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = report(&[]);
    assert!(text.contains("decision: promote v2"), "{text}");
    assert!(text.contains("\nwinner: v2 "), "{text}");
    let again = dir.path().join("again.html");
    report(&[
        "--format",
        "html",
        "-o",
        again.to_str().expect("utf-8 path"),
    ]);
    let rendered = std::fs::read_to_string(&again).expect("report written");
    let html = std::fs::read_to_string(&outcome.html).expect("report written");
    // Floats come back from JSON up to their last digit: compare the structure.
    assert_eq!(
        rendered.matches("<svg id=").count(),
        html.matches("<svg id=").count(),
        "the saved run renders the same charts"
    );
    assert!(rendered.contains("promote v2"));
    support::assert_self_contained(&html);

    // The DOM as Chromium builds it: every chart is there with a series per version.
    let dom = support::dom_with_every_chart(&outcome.html);
    assert!(dom.contains("promote v2"), "decision at the top");
    assert!(dom.contains(r#"id="reason""#));
    let win = support::chart(&dom, "chart-win");
    for v in ["v1", "v2", "v3"] {
        assert!(
            win.contains(&format!(r#"<g class="series" data-series="{v}""#)),
            "win chart has no series for {v}"
        );
    }
    assert!(dom.matches(r#"<rect class="segment""#).count() >= run.iterations.len());
    assert!(
        dom.matches("<polygon class=\"band\"").count() >= 3,
        "credible bands drawn"
    );

    // A screenshot, kept as an artifact.
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("iter8-cli-report");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    std::fs::copy(&outcome.html, artifacts.join("report.html")).expect("copy report");
    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    support::headless(&outcome.html, &[format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    println!("report screenshot: {}", shot.display());
}
