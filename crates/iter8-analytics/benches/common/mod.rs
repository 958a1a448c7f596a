//! Requests of a chosen size, built the way a controller would send them.

use iter8_api::AssessmentRequest;
use serde_json::{Value, json};

/// Latency bucket bounds (ms): 12 buckets, the last one `+Inf`.
const BOUNDS: [f64; 11] = [
    10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0,
];

/// An A/B/n request with `versions` versions, each reporting requests, errors and conversions
/// (counters), a 12-bucket latency histogram and a mean latency, plus the ratios error-rate
/// and conversion-rate: six metrics the five criteria read.
pub fn request(versions: usize, draws: u32) -> AssessmentRequest {
    let share = 100 / versions as u32;
    let versions: Vec<Value> = (0..versions)
        .map(|i| {
            let weight = if i == 0 {
                100 - share * (versions as u32 - 1)
            } else {
                share
            };
            version(i, weight)
        })
        .collect();
    let value = json!({
        "kind": "abn",
        "iteration": 5,
        "minIterations": 3,
        "maxIterations": 20,
        "versions": versions,
        "ratios": [
            {"name": "error-rate", "numerator": "errors", "denominator": "requests"},
            {"name": "conversion-rate", "numerator": "conversions", "denominator": "requests"}
        ],
        "criteria": {
            "objectives": [
                {"metric": "error-rate", "upperLimit": 0.01},
                {"metric": "latency", "quantile": 0.95, "upperLimit": 500},
                {"metric": "mean-latency", "upperLimit": 200}
            ],
            "relativeObjectives": [
                {"metric": "latency", "quantile": 0.95, "preferredDirection": "lower",
                 "maxDegradation": 0.1}
            ],
            "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]
        },
        "strategy": {"algorithm": "progressive", "draws": draws}
    });
    match serde_json::from_value(value) {
        Ok(request) => request,
        Err(e) => panic!("the bench request does not decode: {e}"),
    }
}

fn version(i: usize, weight: u32) -> Value {
    let f = i as f64;
    let requests = (4000.0 + 150.0 * f).round();
    let errors = (requests * (0.004 + 0.0007 * f)).round();
    let conversions = (requests * (0.10 + 0.004 * f)).round();
    // A log-normal-ish latency shape, a little slower for each later version.
    let scale = 1.0 + 0.03 * f;
    let cdf = |x: f64| {
        let z = ((x / scale).ln() - 110f64.ln()) / 0.6;
        0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
    };
    let mut buckets: Vec<Value> = BOUNDS
        .iter()
        .map(|&le| json!({"le": le, "count": (requests * cdf(le)).floor()}))
        .collect();
    buckets.push(json!({"le": "+Inf", "count": requests}));
    let mean = 125.0 * scale;
    let sd = 70.0 * scale;
    json!({
        "name": format!("v{i}"),
        "weight": weight,
        "metrics": {
            "requests": {"counter": requests},
            "errors": {"counter": errors},
            "conversions": {"counter": conversions},
            "latency": {"histogram": {"sum": requests * mean, "buckets": buckets}},
            "mean-latency": {"mean": {
                "sum": requests * mean,
                "count": requests,
                "sumOfSquares": requests * (sd * sd + mean * mean)
            }}
        }
    })
}

/// Abramowitz-Stegun 7.1.26; plenty for making up bucket counts.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

/// Summary of a sample of durations in microseconds.
pub struct Summary {
    /// How many were measured.
    pub n: usize,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
}

/// Sorts the sample and reads its percentiles (nearest rank).
pub fn summarize(mut micros: Vec<f64>) -> Summary {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len().max(1)) - 1;
        micros.get(i).copied().unwrap_or(f64::NAN)
    };
    Summary {
        n: micros.len(),
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
    }
}

/// Only `cargo bench` passes `--bench`; under `cargo test --all-targets` the benches skip.
pub fn invoked_as_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}
