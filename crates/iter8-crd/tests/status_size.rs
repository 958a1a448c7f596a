//! The status stays within its stated budget for the largest experiment the API admits, with
//! the engine's real evidence in its ledger.

use std::collections::BTreeMap;

use iter8_api::{Bucket, BucketBound, HistogramObservation, InfinityLiteral, MeanObservation};
use iter8_api::{Observation, RECENT_INTERVALS};
use iter8_crd::{
    ExperimentSpec, ExperimentStatus, HISTORY_LIMIT, IterationRecord, Ledger, STATUS_SIZE_BUDGET,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const VERSIONS: usize = 16;
const BUCKETS: usize = 256;

fn spec(max_iterations: u32) -> ExperimentSpec {
    let versions: Vec<_> = (0..VERSIONS)
        .map(|v| serde_json::json!({"name": format!("version-with-a-long-name-{v:02}")}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "kind": "abn",
        "versions": versions,
        "ratios": [
            {"name": "error-rate", "numerator": "errors", "denominator": "requests"},
            {"name": "conversion-rate", "numerator": "conversions", "denominator": "requests"}
        ],
        "criteria": {
            "objectives": [
                {"metric": "error-rate", "upperLimit": 0.01},
                {"metric": "latency", "quantile": 0.95, "upperLimit": 800.0},
                {"metric": "latency-mean", "upperLimit": 500.0}
            ],
            "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]
        },
        "strategy": {"draws": 100},
        "duration": {"maxIterations": max_iterations}
    }))
    .expect("spec")
}

/// Cumulative observations after `k` intervals of 1,000 requests per version.
fn observations(k: u32) -> Vec<BTreeMap<String, Observation>> {
    let n = 1000.0 * f64::from(k);
    (0..VERSIONS)
        .map(|v| {
            let mut buckets: Vec<Bucket> = (0..BUCKETS - 1)
                .map(|b| Bucket {
                    le: BucketBound::Finite(1.37 * (b + 1) as f64 + 0.001 * v as f64),
                    count: (n * (b + 1) as f64 / BUCKETS as f64).floor(),
                })
                .collect();
            buckets.push(Bucket {
                le: BucketBound::Infinite(InfinityLiteral::PlusInf),
                count: n,
            });
            BTreeMap::from([
                ("requests".into(), Observation::Counter(n)),
                ("errors".into(), Observation::Counter((n * 0.0049).floor())),
                (
                    "conversions".into(),
                    Observation::Counter((n * 0.05).floor()),
                ),
                (
                    "latency".into(),
                    Observation::Histogram(HistogramObservation {
                        buckets,
                        sum: Some(n * 173.123_456_789),
                    }),
                ),
                (
                    "latency-mean".into(),
                    Observation::Mean(MeanObservation {
                        sum: n * 173.123_456_789 + f64::from(k * k),
                        count: n,
                        sum_of_squares: None,
                    }),
                ),
            ])
        })
        .collect()
}

#[test]
fn status_with_16_versions_256_buckets_64_metric_digests_and_a_full_history_stays_within_budget() {
    let max_iterations = 10_000;
    let spec = spec(max_iterations);
    let mut ledger = Ledger::start(&spec);
    let mut last = None;
    // Enough iterations to fill the evidence's window of recent intervals.
    for k in 1..=(RECENT_INTERVALS as u32 + 2) {
        let request = ledger.request(&spec, observations(k));
        let response = iter8_engine::assess(&request).expect("valid request");
        ledger = ledger.record(&spec, &response);
        last = Some(response);
    }
    let last = last.expect("assessed");
    let time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    // History keeps at most HISTORY_LIMIT records, whatever maxIterations is.
    let records = (max_iterations as usize).min(HISTORY_LIMIT);
    let status = ExperimentStatus {
        completed_iterations: max_iterations,
        versions: last.versions.clone(),
        decision: Some(last.decision.clone()),
        history: (1..=records as u32)
            .map(|i| IterationRecord {
                iteration: i,
                time: time.clone(),
                weights: ledger.weights.clone(),
                action: iter8_api::Action::Continue,
                version: None,
            })
            .collect(),
        pending: Some(iter8_crd::PendingIteration {
            iteration: max_iterations,
            weights: ledger.weights.clone(),
            next_phase: iter8_crd::Phase::Running,
            ledger: Some(ledger.clone()),
        }),
        ledger: Some(ledger),
        // The most Metrics an experiment names (64), with long names.
        metric_digests: (0..64)
            .map(|i| {
                (
                    format!("{i:02}-{}", "m".repeat(60)),
                    "0123456789abcdef".repeat(2),
                )
            })
            .collect(),
        ..ExperimentStatus::default()
    };
    let bytes = serde_json::to_vec(&status).expect("serialises").len();
    eprintln!(
        "status: {bytes} bytes (budget {STATUS_SIZE_BUDGET}); ledger {}, history {}, versions {}",
        serde_json::to_vec(&status.ledger).map_or(0, |b| b.len()),
        serde_json::to_vec(&status.history).map_or(0, |b| b.len()),
        serde_json::to_vec(&status.versions).map_or(0, |b| b.len()),
    );
    assert!(
        bytes <= STATUS_SIZE_BUDGET,
        "status takes {bytes} bytes, over the budget of {STATUS_SIZE_BUDGET}"
    );
}
