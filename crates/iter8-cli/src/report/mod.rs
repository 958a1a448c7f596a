//! Reports of a finished run: text for the terminal, JSON, and a self-contained HTML page.

pub mod html;
pub mod model;
pub mod svg;
pub mod text;

pub use model::Report;

use crate::record::RunRecord;

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for the terminal.
    Text,
    /// The run as saved (pretty-printed).
    Json,
    /// A self-contained page with charts.
    Html,
}

/// Renders `run` in `format`.
pub fn render(run: &RunRecord, format: Format) -> Result<String, serde_json::Error> {
    Ok(match format {
        Format::Text => text::render(run),
        Format::Json => serde_json::to_string_pretty(run)? + "\n",
        Format::Html => html::render(run),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{IterationRecord, LoadSummary, RUN_FORMAT, RunOutcome};

    /// A one-iteration run built from the documented example request and the engine's answer.
    fn example_run(name: &str) -> RunRecord {
        let request: iter8_api::AssessmentRequest = serde_json::from_str(include_str!(
            "../../../../docs/examples/assessment-request.json"
        ))
        .expect("example request");
        let response = iter8_engine::assess(&request).expect("example assesses");
        let spec: iter8_crd::ExperimentSpec = serde_yaml::from_str(
            "kind: abn\nversions: [{name: reviews-v1}, {name: reviews-v2}, {name: reviews-v3}]\n\
             criteria:\n  rewards: [{metric: conversion-rate, preferredDirection: higher}]\n",
        )
        .expect("spec");
        let load = request
            .versions
            .iter()
            .map(|v| LoadSummary {
                version: v.name.clone(),
                requests: 1000,
                errors: 5,
                timeouts: 0,
                conversions: 100,
                mean_latency_ms: Some(12.5),
                p50_latency_ms: Some(10.0),
                p95_latency_ms: Some(40.0),
            })
            .collect();
        RunRecord {
            format: RUN_FORMAT.into(),
            name: name.into(),
            spec,
            analytics: "in-process".into(),
            started_at_ms: 0,
            outcome: RunOutcome {
                decision: response.decision.clone(),
                winner: response.winner.clone(),
                final_weights: vec![0, 100, 0],
                total_requests: 3000,
                wall_ms: 1234,
            },
            iterations: vec![IterationRecord {
                iteration: request.iteration,
                weights: request.versions.iter().map(|v| v.weight).collect(),
                load,
                elapsed_ms: 1234,
                assess_ms: 3,
                request,
                response,
            }],
        }
    }

    #[test]
    fn the_html_report_leads_with_the_decision_and_draws_every_chart() {
        let html = render(&example_run("reviews <a/b/n>"), Format::Html).expect("renders");
        let decision = html.find("promote reviews-v2").expect("decision shown");
        let first_chart = html.find("<svg id=").expect("charts drawn");
        assert!(
            decision < first_chart,
            "the decision comes before the charts"
        );
        assert!(
            html.contains("reviews &lt;a/b/n&gt;"),
            "the name is escaped"
        );
        assert!(!html.contains("<a/b/n>"));
        for id in [
            "chart-split",
            "chart-win",
            "chart-metric-0",
            "chart-criterion-0",
        ] {
            assert!(html.contains(&format!(r#"<svg id="{id}""#)), "{id}");
        }
        assert!(!html.contains("<script"), "no scripts needed");
    }

    #[test]
    fn the_text_report_names_the_winner_and_lists_the_iterations() {
        let text = render(&example_run("reviews"), Format::Text).expect("renders");
        assert!(
            text.contains("\nwinner: reviews-v2 (probability "),
            "{text}"
        );
        assert!(text.contains("final split: reviews-v1=0,reviews-v2=100,reviews-v3=0"));
        assert!(text.contains("    6  "), "iteration 6 is listed:\n{text}");
    }

    #[test]
    fn the_json_report_is_the_saved_run() {
        let run = example_run("reviews");
        let json = render(&run, Format::Json).expect("renders");
        let back: RunRecord = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.outcome.decision, run.outcome.decision);
        assert_eq!(back.iterations.len(), 1);
    }
}
