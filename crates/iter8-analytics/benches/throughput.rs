//! Server throughput on loopback: starts the release binary, drives `POST /v1/assessments`
//! with concurrent keep-alive clients for a while, and reports requests/s, latency and the
//! CPU the server used.
//!
//! `cargo bench -p iter8-analytics --bench throughput`; tune with `ITER8_BENCH_SECONDS`
//! (default 10), `ITER8_BENCH_CONNECTIONS` (default 32) and `ITER8_BENCH_VERSIONS` (default:
//! the 3-version `docs/examples/assessment-request.json`; else a generated request).
#![allow(missing_docs)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    if !common::invoked_as_bench() {
        println!("throughput bench: skipped (run it with cargo bench)");
        return;
    }
    let seconds: u64 = env_or("ITER8_BENCH_SECONDS", 10);
    let connections: usize = env_or("ITER8_BENCH_CONNECTIONS", 32);
    // The documented example by default; a generated request of N versions if asked.
    let body = match std::env::var("ITER8_BENCH_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(versions) => serde_json::to_vec(&common::request(versions, 10_000))
            .unwrap_or_else(|e| panic!("cannot encode the request: {e}")),
        None => example_body(),
    };

    let port = free_port();
    let mut server = Server::start(port);
    let base = format!("http://127.0.0.1:{port}");
    // One client thread: the client should take as little CPU from the server as it can.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no tokio runtime: {e}"),
    };
    runtime.block_on(wait_ready(&base));

    let cpu_before = (cpu_seconds(server.pid()), cpu_seconds(std::process::id()));
    let start = Instant::now();
    let results = runtime.block_on(drive(
        &base,
        body,
        connections,
        Duration::from_secs(seconds),
    ));
    let wall = start.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(server.pid()) - cpu_before.0;
    let client_cpu = cpu_seconds(std::process::id()) - cpu_before.1;
    server.stop();

    let ok = results.iter().filter(|r| r.0 == 200).count();
    let other = results.len() - ok;
    let latencies = results.iter().map(|r| r.1).collect();
    let s = common::summarize(latencies);
    println!("throughput: {connections} connections for {wall:.1} s against {base}");
    println!(
        "  requests/s  {:.0} ({} requests: {ok} answered 200, {other} other)",
        ok as f64 / wall,
        s.n
    );
    println!(
        "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}",
        s.p50 / 1e3,
        s.p90 / 1e3,
        s.p99 / 1e3
    );
    println!(
        "  cpu cores   server {:.2}  client {:.2}  (of {} available)",
        server_cpu / wall,
        client_cpu / wall,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

/// Each connection loops until the deadline; returns (status, latency in µs) per request.
async fn drive(base: &str, body: Vec<u8>, connections: usize, run: Duration) -> Vec<(u16, f64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap_or_else(|e| panic!("no HTTP client: {e}"));
    let url = Arc::new(format!("{base}/v1/assessments"));
    // Cloning `Bytes` shares the buffer instead of copying the request for every call.
    let body = axum::body::Bytes::from(body);
    let deadline = tokio::time::Instant::now() + run;
    let workers = (0..connections).map(|_| {
        let (client, url, body) = (client.clone(), Arc::clone(&url), body.clone());
        async move {
            let mut results = Vec::new();
            while tokio::time::Instant::now() < deadline {
                let t = Instant::now();
                let status = match client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // Read the whole answer: a real client would.
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                results.push((status, t.elapsed().as_secs_f64() * 1e6));
            }
            results
        }
    });
    futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server at {base} did not become ready");
}

/// The release binary in a child process, so its CPU can be read from /proc.
struct Server(Child);

impl Server {
    fn start(port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_iter8-analytics"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the server: {e}"));
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User plus system CPU seconds of a process, from /proc (0 where there is no /proc).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn example_body() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/assessment-request.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
