//! The load generator against wrk on the same loopback target: a trivial axum handler.
//!
//! ```sh
//! cargo bench -p iter8-cli --bench loadgen -- [--seconds 5] [--runs 5] [--connections 64]
//! ```
//!
//! The target runs on one Tokio worker thread; the generator runs on one worker thread and
//! wrk (when it is on PATH) with one thread (`-t1`), each with the same number of
//! connections. Prints every run and the medians, and checks that the generator's latency
//! histogram accounts for every answer.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use iter8_cli::load::{Conversion, LoadConfig, LoadGenerator};
use iter8_cli::stats::DEFAULT_BUCKETS_MS;

struct Options {
    seconds: u64,
    runs: usize,
    connections: u32,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 5,
        runs: 5,
        connections: 64,
    };
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(v) = value("--seconds") {
        o.seconds = v;
    }
    if let Some(v) = value("--runs") {
        o.runs = v as usize;
    }
    if let Some(v) = value("--connections") {
        o.connections = v as u32;
    }
    o
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs benches without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("loadgen bench: skipped (run it with cargo bench)");
        return;
    }
    let o = options();
    // The target: "ok" on every path, on its own single-threaded runtime.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("target runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            addr_tx
                .send(listener.local_addr().expect("address"))
                .expect("send address");
            let app = axum::Router::new().fallback(|| async { "ok" });
            axum::serve(listener, app).await.expect("serve");
        });
    });
    let addr = addr_rx.recv().expect("target address");
    let url = format!("http://{addr}/");
    println!(
        "target {url}; {} runs of {} s, {} connections",
        o.runs, o.seconds, o.connections
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("generator runtime");
    let wrk = Command::new("wrk").arg("--version").output().is_ok();
    if !wrk {
        println!("wrk is not installed (Debian package wrk): no comparison");
    }
    // Runs alternate, so that load from elsewhere on the machine falls on both alike.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 1..=o.runs {
        ours.push(run_ours(&rt, &url, &o, run));
        if wrk && let Some(rps) = run_wrk(&url, &o, run) {
            theirs.push(rps);
        }
    }
    let ours = median(ours);
    println!("iter8 load generator median: {ours:.0} req/s");
    if theirs.is_empty() {
        return;
    }
    let theirs = median(theirs);
    println!("wrk median: {theirs:.0} req/s");
    println!("iter8 / wrk: {:.0} %", 100.0 * ours / theirs);
}

/// One run of the load generator; prints it and returns its answers per second.
fn run_ours(rt: &tokio::runtime::Runtime, url: &str, o: &Options, run: usize) -> f64 {
    let config = LoadConfig {
        urls: vec![url.parse().expect("url")],
        concurrency: o.connections,
        rate: None,
        method: hyper::Method::GET,
        headers: Vec::new(),
        body: Bytes::new(),
        timeout: Duration::from_secs(5),
        conversion: Conversion::default(),
        // 0.1 ms steps up to 5 ms, so that sub-millisecond quantiles compare with wrk's.
        buckets_ms: (1..50)
            .map(|i| f64::from(i) / 10.0)
            .chain(DEFAULT_BUCKETS_MS.iter().copied().filter(|&b| b >= 5.0))
            .collect(),
        seed: 1,
        counted: false,
    };
    let (rps, stats) = rt.block_on(async {
        let generator = LoadGenerator::start(config, &[100]).expect("start");
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(o.seconds)).await;
        let stats = generator.snapshot();
        let elapsed = started.elapsed().as_secs_f64();
        generator.stop().await;
        (stats[0].answered() as f64 / elapsed, stats[0].clone())
    });
    assert_eq!(stats.errors, 0, "errors against a trivial handler");
    assert_eq!(
        stats.bucket_counts.iter().sum::<u64>(),
        stats.requests,
        "every answer is in the latency histogram"
    );
    println!(
        "iter8 run {run}: {rps:.0} req/s, mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        stats.mean_latency_ms().unwrap_or(f64::NAN),
        stats.latency_quantile_ms(0.5).unwrap_or(f64::NAN),
        stats.latency_quantile_ms(0.99).unwrap_or(f64::NAN)
    );
    rps
}

/// One run of wrk; prints it and returns its requests per second.
fn run_wrk(url: &str, o: &Options, run: usize) -> Option<f64> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "--latency",
            &format!("-c{}", o.connections),
            &format!("-d{}s", o.seconds),
            url,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map_or("?", str::trim)
            .to_string()
    };
    match rps {
        Some(rps) => println!(
            "wrk   run {run}: {rps:.0} req/s, p50 {}, p99 {}",
            percentile("50%"),
            percentile("99%")
        ),
        None => println!("wrk   run {run}: no rate in its output:\n{text}"),
    }
    rps
}
