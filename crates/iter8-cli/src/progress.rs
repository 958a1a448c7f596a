//! The live progress display: on a terminal, a status line redrawn while an iteration runs
//! and a table after each; otherwise one plain log line per iteration.

use std::io::{IsTerminal, Write};

use crate::record::IterationRecord;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A terminal: redrawn status line and tables.
    Terminal,
    /// Plain log lines (stdout is a file or a pipe).
    Plain,
    /// Nothing.
    Quiet,
}

/// Writes progress to stdout.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    live: bool,
}

impl Progress {
    /// Terminal mode when stdout is a terminal, plain otherwise.
    pub fn detect() -> Self {
        Self::new(if std::io::stdout().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        })
    }

    /// Progress in the given mode.
    pub fn new(mode: Mode) -> Self {
        Self { mode, live: false }
    }

    /// A one-off message (start, end).
    pub fn say(&mut self, line: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        self.clear_live();
        println!("{line}");
    }

    /// The status line while iteration `iteration` runs.
    pub fn tick(&mut self, iteration: u32, max: u32, completed: u64, elapsed_s: f64) {
        if self.mode != Mode::Terminal {
            return;
        }
        let rate = if elapsed_s > 0.0 {
            completed as f64 / elapsed_s
        } else {
            0.0
        };
        print!(
            "\r\x1b[2K  iteration {iteration}/{max} running: {completed} requests, {rate:.0} req/s, {elapsed_s:.1}s"
        );
        // A failed flush of the status line is not worth stopping the run for.
        let _ = std::io::stdout().flush();
        self.live = true;
    }

    /// The result of an iteration.
    pub fn iteration(&mut self, names: &[&str], record: &IterationRecord, max: u32) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => println!("{}", plain_line(names, record)),
            Mode::Terminal => {
                self.clear_live();
                println!("{}", table(names, record, max));
            }
        }
    }

    fn clear_live(&mut self) {
        if self.live {
            print!("\r\x1b[2K");
            self.live = false;
        }
    }
}

/// One log line: iteration, weights, requests, errors, decision.
pub fn plain_line(names: &[&str], r: &IterationRecord) -> String {
    let weights = iter8_crd_summary(names, &r.weights);
    let requests: u64 = r.load.iter().map(|l| l.requests).sum();
    let errors: u64 = r.load.iter().map(|l| l.errors).sum();
    let winner = r
        .response
        .winner
        .as_ref()
        .map(|w| format!(" winner={}({:.3})", w.version, w.probability))
        .unwrap_or_default();
    format!(
        "iteration={} elapsed={:.1}s weights={weights} requests={requests} errors={errors} decision={}{winner}",
        r.iteration,
        r.elapsed_ms as f64 / 1000.0,
        r.response.decision
    )
}

fn iter8_crd_summary(names: &[&str], weights: &[u32]) -> String {
    names
        .iter()
        .zip(weights)
        .map(|(n, w)| format!("{n}={w}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A small table of the iteration: per version weight, load numbers and win probability.
pub fn table(names: &[&str], r: &IterationRecord, max: u32) -> String {
    let mut out = format!(
        "iteration {}/{max} at {:.1}s: {}\n",
        r.iteration,
        r.elapsed_ms as f64 / 1000.0,
        r.response.decision
    );
    out.push_str(&format!(
        "  {:<14} {:>6} {:>9} {:>7} {:>8} {:>8} {:>7} {:>7}\n",
        "version", "weight", "requests", "errors", "mean ms", "p95 ms", "conv", "P(win)"
    ));
    for (i, name) in names.iter().enumerate() {
        let load = r.load.get(i);
        let pct = |n: u64| {
            load.filter(|l| l.requests > 0).map_or_else(
                || "-".into(),
                |l| format!("{:.1}%", 100.0 * n as f64 / l.requests as f64),
            )
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        let win = r
            .response
            .versions
            .get(i)
            .map_or_else(|| "-".into(), |v| format!("{:.3}", v.win_probability));
        out.push_str(&format!(
            "  {:<14} {:>5}% {:>9} {:>7} {:>8} {:>8} {:>7} {:>7}\n",
            name,
            r.weights.get(i).copied().unwrap_or(0),
            load.map_or(0, |l| l.requests),
            pct(load.map_or(0, |l| l.errors)),
            ms(load.and_then(|l| l.mean_latency_ms)),
            ms(load.and_then(|l| l.p95_latency_ms)),
            pct(load.map_or(0, |l| l.conversions)),
            win,
        ));
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use iter8_api::AssessmentRequest;
    use serde_json::json;

    use super::*;

    /// The record of an iteration the in-process engine assessed, with the candidate's
    /// metrics as given (none at iteration 1, as the demo starts).
    fn record(iteration: u32, candidate: serde_json::Value) -> IterationRecord {
        let counters = json!({"requests": {"counter": 4000.0}, "conversions": {"counter": 240.0}});
        let request: AssessmentRequest = serde_json::from_value(json!({
            "kind": "ab", "iteration": iteration, "maxIterations": 12,
            "versions": [
                {"name": "v1", "weight": 100, "metrics": counters},
                {"name": "v2", "weight": 0, "metrics": candidate}
            ],
            "ratios": [{"name": "conversion-rate", "numerator": "conversions",
                        "denominator": "requests"}],
            "criteria": {"rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]}
        }))
        .expect("request decodes");
        let response = iter8_engine::assess(&request).expect("request is valid");
        IterationRecord {
            iteration,
            weights: vec![100, 0],
            load: Vec::new(),
            elapsed_ms: 1000,
            assess_ms: 1,
            request,
            response,
        }
    }

    #[test]
    fn the_line_shows_the_winner_the_response_names_and_no_other() {
        // The engine names none while a version has no data, and the line adds none.
        let mut first = record(1, json!({}));
        let line = plain_line(&["v1", "v2"], &first);
        assert!(!line.contains("winner="), "{line}");
        // Whatever the analytics service answers is shown as it is (the same as the
        // report): the CLI keeps no second copy of the engine's rules.
        first.response.winner = Some(iter8_api::Winner {
            version: "v1".into(),
            probability: 0.97,
        });
        let line = plain_line(&["v1", "v2"], &first);
        assert!(line.contains(" winner=v1(0.970)"), "{line}");
    }

    #[test]
    fn the_winner_is_printed_once_every_version_has_data() {
        let data = json!({"requests": {"counter": 4000.0}, "conversions": {"counter": 400.0}});
        let later = record(6, data);
        let line = plain_line(&["v1", "v2"], &later);
        assert!(line.contains(" winner=v2("), "{line}");
    }
}
