//! The `iter8` command steering a running controller: what `iter8 split`, `resume` and
//! `terminate` write moves the traffic of a real HTTPRoute, and `watch` and `describe` report
//! what the controller did. The binary is the one `integration-tests/run.sh` builds
//! (`cargo build -p iter8-cli --bins`); the commands' own tests are in
//! `crates/iter8-cli/tests/cluster.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context as _, Result, ensure};
use iter8_crd::Phase;

use common::*;

/// `target/debug/iter8`, next to this test's own executable (`target/debug/deps/cli-*`).
fn iter8_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no target directory")?;
    let binary = dir.join("iter8");
    ensure!(
        binary.is_file(),
        "{} not found: build it with `cargo build -p iter8-cli --bins` (integration-tests/run.sh does)",
        binary.display()
    );
    Ok(binary)
}

async fn iter8(h: &Harness, args: &[&str]) -> Result<Output> {
    let kubeconfig = h.env.control_plane.kubeconfig_path();
    Ok(tokio::process::Command::new(iter8_binary()?)
        .args(args)
        .args(["-n", h.ns()])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await?)
}

async fn ok(h: &Harness, args: &[&str]) -> Result<String> {
    let out = iter8(h, args).await?;
    ensure!(
        out.status.success(),
        "iter8 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn split_resume_and_terminate_from_the_cli_move_the_routes_traffic() -> Result<()> {
    let h = Harness::new("cli-steer").await?;
    let api = h.undecided_canary("steered").await?;
    wait_for_iterations(&api, "steered", 1).await?;

    // `iter8 split` holds the given split on the route.
    ok(&h, &["split", "steered", "70", "30"]).await?;
    let paused = wait_for_phase(&api, "steered", Phase::Paused).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [70, 30]);
    let held = paused.status.context("status")?.completed_iterations;
    let get = ok(&h, &["get", "steered"]).await?;
    assert!(
        get.lines()
            .nth(1)
            .is_some_and(|l| l.contains(" Paused ") && l.contains("stable=70,next=30")),
        "{get}"
    );

    // `iter8 resume` hands the split back to the analytics: iterations go on.
    ok(&h, &["resume", "steered"]).await?;
    wait_for_iterations(&api, "steered", held + 1).await?;

    // `iter8 terminate` with a split ends it there.
    ok(&h, &["terminate", "steered", "90", "10"]).await?;
    wait_for_phase(&api, "steered", Phase::Aborted).await?;
    assert_eq!(reviews_split(&h.env.client, h.ns()).await?, [90, 10]);

    // `watch` on the ended experiment reports the abort at once, with its exit code.
    let watched = iter8(&h, &["watch", "steered"]).await?;
    let text = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(4), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("experiment aborted; final split stable=90,next=10")),
        "{text}"
    );
    // `describe` shows the controller's own account: phase, conditions and its Events.
    let described = ok(&h, &["describe", "steered"]).await?;
    assert!(described.contains("Phase:        Aborted"), "{described}");
    assert!(described.contains("Override:     terminate with split stable=90,next=10"));
    let events = described
        .split("\nEvents:\n")
        .nth(1)
        .context("events section")?;
    assert!(
        !events.contains("<none>") && events.contains("Normal"),
        "the controller's Events are listed:\n{described}"
    );
    h.finish().await
}
