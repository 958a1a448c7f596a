//! `iter8-analytics`: serves the decision engine over HTTP until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser;
use iter8_analytics::{App, Config, Server, shutdown_signal};
use tracing_subscriber::EnvFilter;

/// The iter8 analytics service: Bayesian assessment of versions for progressive delivery.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,

    /// Log as JSON lines (for log collectors) instead of text; the level comes from RUST_LOG.
    #[arg(long, env = "ITER8_ANALYTICS_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let config = cli.config;
    let app = App::new(&config).context("setting up the service")?;
    let server = Server::bind(&config, app).await?;
    tracing::info!(
        addr = %server.local_addr()?,
        request_timeout = ?config.request_timeout,
        body_limit = config.body_limit,
        max_in_flight = config.max_in_flight,
        engine_threads = config.engine_threads(),
        bearer_token = config.token.is_some(),
        tls = config.tls_cert_file.is_some(),
        mtls = config.tls_client_ca_file.is_some(),
        "iter8-analytics listening"
    );
    server.run(shutdown_signal()).await?;
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
