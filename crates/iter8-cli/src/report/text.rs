//! The terminal report of a run, and of a single assessment.

use std::fmt::Write as _;

use iter8_api::{Action, AssessmentResponse};

use crate::record::RunRecord;

/// The run in words and tables: outcome, last assessment, iterations.
pub fn render(run: &RunRecord) -> String {
    let mut out = String::new();
    let names = run.version_names();
    let _ = writeln!(out, "iter8 local run: {}", run.name);
    let _ = writeln!(
        out,
        "{:?} experiment, {} iterations, {} requests in {:.1}s, analytics {}",
        run.spec.kind,
        run.iterations.len(),
        run.outcome.total_requests,
        run.outcome.wall_ms as f64 / 1000.0,
        run.analytics
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "decision: {}", run.outcome.decision);
    out.push_str(&winner_line(run));
    out.push('\n');
    let _ = writeln!(
        out,
        "final split: {}",
        iter8_crd::weights_summary(&run.spec.versions, &run.outcome.final_weights)
    );
    if let Some(last) = run.last() {
        let _ = writeln!(out);
        let _ = writeln!(out, "last assessment (iteration {}):", last.iteration);
        out.push_str(&assessment_table(&last.response));
        let _ = writeln!(out);
        let _ = writeln!(out, "load (cumulative):");
        let _ = writeln!(
            out,
            "  {:<16} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9}",
            "version", "requests", "errors", "conv", "mean ms", "p50 ms", "p95 ms"
        );
        for l in &last.load {
            let pct = |n: u64| {
                if l.requests == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}%", 100.0 * n as f64 / l.requests as f64)
                }
            };
            let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                out,
                "  {:<16} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9}",
                l.version,
                l.requests,
                pct(l.errors),
                pct(l.conversions),
                ms(l.mean_latency_ms),
                ms(l.p50_latency_ms),
                ms(l.p95_latency_ms)
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "iterations:");
    for it in &run.iterations {
        let _ = writeln!(
            out,
            "  {:>3}  {:>6.1}s  {:<40} {}",
            it.iteration,
            it.elapsed_ms as f64 / 1000.0,
            names
                .iter()
                .zip(&it.weights)
                .map(|(n, w)| format!("{n}={w}"))
                .collect::<Vec<_>>()
                .join(" "),
            it.response.decision
        );
    }
    out
}

/// `winner: NAME (P = …): REASON`, or why there is none; always one line ending in a newline.
pub fn winner_line(run: &RunRecord) -> String {
    let reason = &run.outcome.decision.reason;
    match (&run.outcome.winner, run.outcome.decision.action) {
        (Some(w), _) => format!(
            "winner: {} (probability {:.3}): {reason}\n",
            w.version, w.probability
        ),
        (None, Action::Promote) => format!(
            "winner: {}: {reason}\n",
            run.outcome.decision.version.as_deref().unwrap_or("?")
        ),
        (None, _) => format!("no winner: {reason}\n"),
    }
}

/// A table of versions with win probability and each criterion's probability, then the
/// decision.
pub fn assessment_table(response: &AssessmentResponse) -> String {
    let mut out = String::new();
    let criteria: Vec<&str> = response
        .versions
        .first()
        .map(|v| v.criteria.iter().map(|c| c.description.as_str()).collect())
        .unwrap_or_default();
    let width = criteria.iter().map(|c| c.len()).max().unwrap_or(0).max(8);
    let _ = write!(
        out,
        "  {:<16} {:>6} {:>8} {:>8}",
        "version", "weight", "P(win)", "P(all)"
    );
    for c in &criteria {
        let _ = write!(out, "  {c:>width$}");
    }
    out.push('\n');
    for (i, v) in response.versions.iter().enumerate() {
        let weight = response.split.get(i).map_or(0, |w| w.weight);
        let _ = write!(
            out,
            "  {:<16} {:>5}% {:>8.3} {:>8.3}",
            v.name, weight, v.win_probability, v.probability_all_criteria
        );
        for c in &v.criteria {
            let _ = write!(out, "  {:>width$.3}", c.probability);
        }
        out.push('\n');
    }
    for v in &response.versions {
        for m in &v.metrics {
            if let (Some(value), Some(ci)) = (m.value, m.credible_interval) {
                let metric = match m.quantile {
                    Some(q) => format!("{}/p{}", m.metric, q.fraction() * 100.0),
                    None => m.metric.clone(),
                };
                let _ = writeln!(
                    out,
                    "    {:<16} {:<22} {:>12.4}  [{:.4}, {:.4}]  n={}",
                    v.name, metric, value, ci.lower, ci.upper, m.sample_size
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "next split: {}",
        response
            .split
            .iter()
            .map(|w| format!("{}={}", w.version, w.weight))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(w) = &response.winner {
        let _ = writeln!(
            out,
            "winner: {} (probability {:.3})",
            w.version, w.probability
        );
    }
    let _ = writeln!(
        out,
        "decision: {}: {}",
        response.decision, response.decision.reason
    );
    for w in &response.warnings {
        let _ = writeln!(
            out,
            "warning: {}{}",
            w.field
                .as_deref()
                .map(|f| format!("{f}: "))
                .unwrap_or_default(),
            w.message
        );
    }
    out
}
