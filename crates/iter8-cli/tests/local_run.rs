//! `iter8 run` against sample versions whose right answer is known: a candidate that breaks
//! an objective is rolled back, a better one is promoted; the saved JSON says so.

use iter8_api::Action;
use iter8_cli::progress::{Mode, Progress};
use iter8_cli::report::{self, Format};
use iter8_cli::{Analytics, RunRecord, local, spec};
use iter8_sample_app::{App, Config};

/// Starts a sample version on loopback; returns its URL and the sender that stops it.
async fn sample(
    version: &str,
    latency_ms: f64,
    error_rate: f64,
    seed: u64,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let app = App::new(Config {
        version: version.into(),
        latency_ms,
        latency_sigma: 0.3,
        error_rate,
        conversion_rate: 0.0,
        seed,
        ..Config::default()
    })
    .expect("valid sample config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(iter8_sample_app::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}/"), stop)
}

fn canary(baseline: &str, candidate: &str) -> String {
    format!(
        "\
apiVersion: iter8.tools/v3alpha1
kind: Experiment
metadata:
  name: checkout-canary
spec:
  kind: canary
  versions:
  - name: v1
    url: {baseline}
  - name: v2
    url: {candidate}
  criteria:
    objectives:
    - metric: error-rate
      upperLimit: 0.05
    - metric: latency
      quantile: 0.95
      upperLimit: 250
  strategy:
    maxCandidateWeightIncrement: 30
  duration:
    minIterations: 2
    maxIterations: 25
  load:
    concurrency: 16
    requestsPerIteration: 600
    timeout: 2s
    seed: 7
"
    )
}

async fn run_canary(candidate_error_rate: f64) -> RunRecord {
    let (v1, stop1) = sample("v1", 3.0, 0.01, 1).await;
    let (v2, stop2) = sample("v2", 2.0, candidate_error_rate, 2).await;
    let experiment =
        spec::parse("canary.yaml", &canary(&v1, &v2), "canary").expect("valid experiment");
    let run = local::run(
        &experiment,
        &Analytics::new(None).expect("in-process analytics"),
        &mut Progress::new(Mode::Plain),
    )
    .await
    .expect("the run completes");
    let _ = stop1.send(());
    let _ = stop2.send(());
    // The saved form round-trips (floats up to their last digit, so compare the facts).
    let json = report::render(&run, Format::Json).expect("serializes");
    let saved: RunRecord = serde_json::from_str(&json).expect("the saved run parses");
    assert_eq!(saved.outcome.decision, run.outcome.decision);
    assert_eq!(saved.outcome.final_weights, run.outcome.final_weights);
    assert_eq!(saved.spec, run.spec);
    let weights = |r: &RunRecord| -> Vec<Vec<u32>> {
        r.iterations.iter().map(|i| i.weights.clone()).collect()
    };
    assert_eq!(weights(&saved), weights(&run));
    saved
}

fn check_bookkeeping(run: &RunRecord) {
    assert!(!run.iterations.is_empty());
    for (i, it) in run.iterations.iter().enumerate() {
        assert_eq!(it.iteration as usize, i + 1);
        assert_eq!(it.weights.iter().sum::<u32>(), 100, "{:?}", it.weights);
        assert_eq!(it.request.iteration, it.iteration);
        assert_eq!(it.request.versions.len(), 2);
        // Cumulative: each iteration adds the 600 requests it handed out.
        let requests: u64 = it.load.iter().map(|l| l.requests).sum();
        assert!(requests >= 600 * it.iteration as u64, "{requests}");
    }
    assert_eq!(
        run.outcome.total_requests,
        run.last()
            .expect("an iteration")
            .load
            .iter()
            .map(|l| l.requests)
            .sum::<u64>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_breaks_the_error_objective_is_rolled_back() {
    let run = run_canary(0.25).await;
    check_bookkeeping(&run);
    assert_eq!(
        run.outcome.decision.action,
        Action::Rollback,
        "{:?}",
        run.outcome.decision
    );
    assert_eq!(run.outcome.final_weights, vec![100, 0]);
    let last = run.last().expect("an iteration");
    let v2 = &last.load[1];
    assert!(v2.requests > 0, "the candidate got traffic");
    let rate = v2.errors as f64 / v2.requests as f64;
    assert!((0.15..0.35).contains(&rate), "measured error rate {rate}");
    assert_ne!(
        run.outcome.winner.as_ref().map(|w| w.version.as_str()),
        Some("v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_meets_every_objective_is_promoted() {
    let run = run_canary(0.0).await;
    check_bookkeeping(&run);
    assert_eq!(
        (
            run.outcome.decision.action,
            run.outcome.decision.version.as_deref()
        ),
        (Action::Promote, Some("v2")),
        "{:?}",
        run.outcome.decision
    );
    assert_eq!(run.outcome.final_weights, vec![0, 100]);
    let text = report::text::render(&run);
    assert!(text.contains("decision: promote v2"), "{text}");
    // The latency the generator measured is the sample app's (2-3 ms plus loopback).
    let last = run.last().expect("an iteration");
    let mean = last.load[0].mean_latency_ms.expect("baseline answered");
    assert!(
        (2.0..50.0).contains(&mean),
        "baseline mean latency {mean} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_test_iterates_by_interval_at_the_given_rate() {
    let (url, stop) = sample("v1", 1.0, 0.0, 3).await;
    let text = format!(
        "\
apiVersion: iter8.tools/v3alpha1
kind: Experiment
metadata:
  name: perf
spec:
  kind: performanceTest
  versions:
  - name: v1
    url: {url}
  criteria:
    objectives:
    - metric: mean-latency
      upperLimit: 500
  duration:
    interval: 500ms
    minIterations: 2
    maxIterations: 3
  load:
    concurrency: 4
    rate: 200
"
    );
    let experiment = spec::parse("perf.yaml", &text, "perf").expect("valid experiment");
    let run = local::run(
        &experiment,
        &Analytics::new(None).expect("in-process analytics"),
        &mut Progress::new(Mode::Quiet),
    )
    .await
    .expect("the run completes");
    let _ = stop.send(());
    let first = &run.iterations[0];
    assert!(
        first.elapsed_ms >= 500,
        "the first iteration took {} ms",
        first.elapsed_ms
    );
    // 200 requests/s for half a second: about 100.
    let sent = first.load[0].requests;
    assert!(
        (50..=150).contains(&sent),
        "{sent} requests in the first iteration"
    );
    assert!(run.iterations.len() >= 2, "minIterations is 2");
    assert_eq!(
        run.outcome.decision.action,
        Action::Promote,
        "{:?}",
        run.outcome.decision
    );
}
