//! The `iter8-controller` binary: flags and environment in, a running controller out.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use iter8_controller::analytics::{AnalyticsClient, ClientTls};
use iter8_controller::fence::fenced_client;
use iter8_controller::leader::{LeaderElection, Leadership, Timing};
use iter8_controller::router::KubeRouter;
use iter8_controller::telemetry::Telemetry;
use iter8_controller::{Context, Settings, Stopped};
use kube::runtime::events::{Recorder, Reporter};

/// Runs iter8 Experiments on a Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "iter8-controller", version)]
struct Args {
    /// The analytics service used when an experiment names none.
    #[arg(
        long,
        env = "ITER8_ANALYTICS_URL",
        default_value = "http://iter8-analytics:8080"
    )]
    analytics_url: String,
    /// A file holding the bearer token the analytics service requires, if any.
    #[arg(long, env = "ITER8_ANALYTICS_TOKEN_FILE")]
    analytics_token_file: Option<PathBuf>,
    /// A PEM CA bundle to trust for an `https://` analytics URL (instead of the system roots).
    #[arg(long, env = "ITER8_ANALYTICS_CA_FILE")]
    analytics_ca_file: Option<PathBuf>,
    /// A PEM client certificate to present to an analytics service that requires one (mTLS).
    #[arg(
        long,
        env = "ITER8_ANALYTICS_CLIENT_CERT_FILE",
        requires = "analytics_client_key_file"
    )]
    analytics_client_cert_file: Option<PathBuf>,
    /// The PEM private key of the client certificate.
    #[arg(
        long,
        env = "ITER8_ANALYTICS_CLIENT_KEY_FILE",
        requires = "analytics_client_cert_file"
    )]
    analytics_client_key_file: Option<PathBuf>,
    /// How long one analytics call may take.
    #[arg(long, env = "ITER8_ANALYTICS_TIMEOUT", default_value = "10s", value_parser = interval)]
    analytics_timeout: Duration,
    /// How many times a failed analytics call is retried within one reconcile.
    #[arg(long, env = "ITER8_ANALYTICS_RETRIES", default_value_t = 3)]
    analytics_retries: u32,
    /// The Prometheus URL for metrics that name none.
    #[arg(long, env = "ITER8_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Watch Experiments in this namespace only (all namespaces by default).
    #[arg(long, env = "ITER8_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "ITER8_CONTROLLER_LISTEN", default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    /// How soon to retry after a failure (metrics, analytics, router, conflicts).
    #[arg(long, env = "ITER8_RETRY_AFTER", default_value = "5s", value_parser = interval)]
    retry_after: Duration,
    /// Take part in leader election, so that only one replica reconciles.
    #[arg(long, env = "ITER8_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "ITER8_LEASE_NAME", default_value = "iter8-controller")]
    lease_name: String,
    /// How long other replicas wait, from when they saw the leader's last renewal, before
    /// taking the Lease.
    #[arg(long, env = "ITER8_LEASE_DURATION", default_value = "15s", value_parser = interval)]
    lease_duration: Duration,
    /// How long the leader keeps acting (and writing routes) without a successful renewal;
    /// shorter than the lease duration (default: 2/3 of it).
    #[arg(long, env = "ITER8_LEASE_RENEW_DEADLINE", value_parser = interval)]
    lease_renew_deadline: Option<Duration>,
    /// How often the leader renews and a standby tries to take the Lease (default: 2/15 of
    /// the lease duration).
    #[arg(long, env = "ITER8_LEASE_RETRY_PERIOD", value_parser = interval)]
    lease_retry_period: Option<Duration>,
    /// This replica's identity in the election and in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "ITER8_LOG_JSON")]
    log_json: bool,
}

/// Duration flags use the CRDs' grammar; clap names the flag in the error.
fn interval(text: &str) -> Result<Duration, iter8_crd::duration::DurationError> {
    iter8_crd::duration::parse(text)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("iter8-controller-{}", std::process::id()));
    let config = kube::Config::infer()
        .await
        .context("loading the Kubernetes client configuration")?;
    let timing = {
        let derived = Timing::for_lease(args.lease_duration);
        Timing {
            lease_duration: args.lease_duration,
            renew_deadline: args.lease_renew_deadline.unwrap_or(derived.renew_deadline),
            retry_period: args.lease_retry_period.unwrap_or(derived.retry_period),
        }
        .validate()?
    };
    // The election talks to the API server on a client of its own; every other write goes
    // through the fence, which lets it out only while the Lease is held.
    let election = if args.leader_elect {
        let lease_client =
            kube::Client::try_from(config.clone()).context("building the Lease client")?;
        Some(LeaderElection::with_timing(
            lease_client,
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            timing,
        ))
    } else {
        None
    };
    let leadership = election
        .as_ref()
        .map_or_else(Leadership::unconditional, LeaderElection::leadership);
    let client = fenced_client(config, leadership).context("building the Kubernetes client")?;

    let token = match &args.analytics_token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let tls = ClientTls {
        ca_pem: args
            .analytics_ca_file
            .as_deref()
            .map(|path| read_file("the analytics CA bundle", path))
            .transpose()?,
        identity_pem: match (
            &args.analytics_client_cert_file,
            &args.analytics_client_key_file,
        ) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file("the analytics client certificate", cert)?;
                pem.push(b'\n');
                pem.extend(read_file("the analytics client key", key)?);
                Some(pem)
            }
            _ => None,
        },
    };
    let analytics = AnalyticsClient::with_tls(
        args.analytics_timeout,
        args.analytics_retries,
        Duration::from_millis(250),
        token,
        &tls,
    )?;
    let metrics = iter8_metrics::Backends::new(iter8_metrics::Settings {
        default_prometheus_address: args.prometheus_url.clone(),
        ..iter8_metrics::Settings::default()
    })?;
    let telemetry = Telemetry::new()?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "iter8-controller".into(),
            instance: Some(identity.clone()),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        router: KubeRouter::new(client.clone()),
        analytics,
        metrics,
        settings: Settings {
            analytics_url: args.analytics_url.clone(),
            retry_after: args.retry_after,
        },
        telemetry: telemetry.clone(),
        recorder,
        gate: None,
        superseded: Default::default(),
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(address = %args.listen, "serving /metrics, /healthz and /readyz");
    let server = axum::serve(listener, telemetry.router());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(%e, "telemetry server stopped");
        }
    });

    let stopped =
        iter8_controller::run_elected(ctx, args.namespace.as_deref(), election, shutdown_signal())
            .await;
    if stopped == Stopped::LostLeadership {
        // Another replica leads now; exit so the process restarts as a standby.
        anyhow::bail!("lost leadership");
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// The bearer token for the analytics service, without the Secret file's trailing newline.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the analytics token from {}", path.display()))?;
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the analytics token file {} is empty",
        path.display()
    );
    Ok(token.to_owned())
}

fn read_file(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} from {}", path.display()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
