//! Engine time per request: 2, 5 and 10 versions x 6 metrics, 10,000 posterior draws.
//!
//! `cargo bench -p iter8-analytics --bench engine`; reports median, p90 and p99 per size, and
//! for `docs/examples/assessment-request.json` (3 versions, 4 criteria), which the throughput
//! runs send.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use iter8_api::AssessmentRequest;

const DRAWS: u32 = 10_000;
/// How long each size is measured, after a warm-up of a tenth of it.
const BUDGET: Duration = Duration::from_secs(4);

fn main() {
    if !common::invoked_as_bench() {
        println!("engine bench: skipped (run it with cargo bench)");
        return;
    }
    println!("engine time per assessment, {DRAWS} draws, abn, 5 criteria");
    println!(
        "{:>9} {:>8} {:>10} {:>10} {:>10}",
        "versions", "runs", "p50 ms", "p90 ms", "p99 ms"
    );
    let mut cases: Vec<(String, AssessmentRequest)> = [2, 5, 10]
        .into_iter()
        .map(|n| (n.to_string(), common::request(n, DRAWS)))
        .collect();
    cases.push(("example".to_owned(), example()));
    for (label, request) in cases {
        if let Err(e) = iter8_engine::assess(&request) {
            panic!("the engine refuses the {label} request: {e}");
        }
        let warm_up = Instant::now();
        while warm_up.elapsed() < BUDGET / 10 {
            let _ = black_box(iter8_engine::assess(black_box(&request)));
        }
        let mut micros = Vec::new();
        let start = Instant::now();
        while start.elapsed() < BUDGET {
            let t = Instant::now();
            let _ = black_box(iter8_engine::assess(black_box(&request)));
            micros.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let s = common::summarize(micros);
        println!(
            "{label:>9} {:>8} {:>10.3} {:>10.3} {:>10.3}",
            s.n,
            s.p50 / 1e3,
            s.p90 / 1e3,
            s.p99 / 1e3
        );
    }
}

fn example() -> AssessmentRequest {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/assessment-request.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the example does not decode: {e}"))
}
