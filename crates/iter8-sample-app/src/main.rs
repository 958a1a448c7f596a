//! `iter8-sample-app`: serves HTTP with configurable latency, errors and conversions, and
//! exposes Prometheus metrics at `/metrics`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use iter8_sample_app::{App, Config, DEFAULT_BUCKETS_MS};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(version, about = "A sample service for iter8 experiments")]
struct Flags {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080", env = "LISTEN")]
    listen: SocketAddr,
    /// Value of the `version` label on every metric.
    #[arg(long, default_value = "v1", env = "VERSION_LABEL")]
    version_label: String,
    /// Median added latency, in milliseconds.
    #[arg(long, default_value_t = 20.0)]
    latency_ms: f64,
    /// Log-normal sigma of the latency (0 for a fixed latency).
    #[arg(long, default_value_t = 0.5)]
    latency_sigma: f64,
    /// Probability that a request fails with 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Probability that a successful request converts.
    #[arg(long, default_value_t = 0.0)]
    conversion_rate: f64,
    /// Seed of the random generator (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Latency histogram bucket bounds in milliseconds, comma-separated.
    #[arg(long, value_delimiter = ',')]
    buckets_ms: Option<Vec<f64>>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let seed = flags.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let config = Config {
        version: flags.version_label,
        latency_ms: flags.latency_ms,
        latency_sigma: flags.latency_sigma,
        error_rate: flags.error_rate,
        conversion_rate: flags.conversion_rate,
        seed,
        buckets_ms: flags
            .buckets_ms
            .unwrap_or_else(|| DEFAULT_BUCKETS_MS.to_vec()),
    };
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("iter8-sample-app: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(flags.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("iter8-sample-app: cannot listen on {}: {e}", flags.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "iter8-sample-app: version {:?} listening on {} (seed {seed})",
        app.config().version,
        listener.local_addr().map_or(flags.listen, |a| a)
    );
    let shutdown = async {
        // If the signal handler cannot be installed, run until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match iter8_sample_app::serve(listener, app, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iter8-sample-app: {e}");
            ExitCode::FAILURE
        }
    }
}
