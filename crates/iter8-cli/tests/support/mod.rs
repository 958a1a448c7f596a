//! Headless Chromium for the HTML report tests (Debian `chromium`, installed by
//! integration-tests/setup.sh).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The charts every report draws, whatever its source.
pub const CHARTS: [&str; 4] = [
    "chart-split",
    "chart-win",
    "chart-metric-0",
    "chart-criterion-0",
];

/// The Chromium binary.
pub fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "chromium is not installed: the HTML report tests need it; run \
         `bash integration-tests/setup.sh` (it installs the Debian package chromium)"
    );
}

/// Runs headless Chromium on `page` with `extra` arguments and returns its stdout.
pub fn headless(page: &Path, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,2600",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM Chromium builds from `page`, checked to hold every chart.
pub fn dom_with_every_chart(page: &Path) -> String {
    let dom = headless(page, &["--dump-dom".into()]);
    for chart in CHARTS {
        assert!(
            dom.contains(&format!(r#"<svg id="{chart}""#)),
            "{chart} missing"
        );
    }
    dom
}

/// The inside of the chart `id` in `dom`.
pub fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    dom.split(&format!(r#"<svg id="{id}""#))
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap_or_else(|| panic!("no chart {id}"))
}

/// Asserts that `html` loads nothing from outside the page.
pub fn assert_self_contained(html: &str) {
    let outside_svg_namespace = html.replace("http://www.w3.org/2000/svg", "");
    for external in ["http://", "https://", "<script src", "@import", "url("] {
        assert!(
            !outside_svg_namespace.contains(external),
            "the report must load nothing from outside: found {external:?}"
        );
    }
}
