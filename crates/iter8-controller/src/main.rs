//! The `iter8-controller` binary: flags and environment in, a running controller out.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use iter8_controller::analytics::{AnalyticsClient, ClientConfig, CredentialFiles, Endpoints};
use iter8_controller::caches::Caches;
use iter8_controller::fence::fenced_client;
use iter8_controller::leader::{LeaderElection, Leadership, Timing};
use iter8_controller::notifier::{Notifier, NotifierConfig};
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
    /// Further analytics services experiments may name in `spec.analytics.url`
    /// (comma-separated base URLs). The controller calls no other address, and sends the
    /// token only to these and `--analytics-url`.
    #[arg(long, env = "ITER8_ANALYTICS_ALLOWED_URLS", value_delimiter = ',')]
    analytics_allowed_urls: Vec<String>,
    /// URLs under which an Experiment's gate webhooks may be (comma-separated; same scheme,
    /// host and port, path under the path). The controller calls no other webhook.
    #[arg(long, env = "ITER8_GATE_WEBHOOK_ALLOWED_URLS", value_delimiter = ',')]
    gate_webhook_allowed_urls: Vec<String>,
    /// The token and TLS material the analytics service requires, if any.
    #[command(flatten)]
    analytics_credentials: CredentialFiles,
    /// How long one analytics call may take.
    #[arg(long, env = "ITER8_ANALYTICS_TIMEOUT", default_value = "10s", value_parser = interval)]
    analytics_timeout: Duration,
    /// How many times a failed analytics call is retried within one reconcile.
    #[arg(long, env = "ITER8_ANALYTICS_RETRIES", default_value_t = 3)]
    analytics_retries: u32,
    /// The Prometheus URL for metrics that name none.
    #[arg(long, env = "ITER8_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Further addresses Metrics may query and send their Secrets' credentials to
    /// (`prometheus.address`, rendered `http.url`): comma-separated base URLs, matched by
    /// scheme, host, port and path prefix, whatever the query string. `--prometheus-url` is
    /// always allowed; a Metric naming any other address is refused before its Secret is read.
    #[arg(long, env = "ITER8_METRIC_BACKEND_ALLOWED_URLS", value_delimiter = ',')]
    metric_backend_allowed_urls: Vec<String>,
    /// Namespaces whose Metrics (and their Secrets) any Experiment may use, comma-separated;
    /// by default the controller's own namespace if `POD_NAMESPACE` names it (the chart sets
    /// it; its metric library is there), else none: never the lease's fallback `default`.
    /// Other Metrics must be in the Experiment's namespace.
    #[arg(long, env = "ITER8_SHARED_METRIC_NAMESPACES", value_delimiter = ',')]
    shared_metric_namespaces: Vec<String>,
    /// Watch Experiments in this namespace only (all namespaces by default).
    #[arg(long, env = "ITER8_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "ITER8_CONTROLLER_LISTEN", default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    /// How soon to retry after a failure (metrics, analytics, router, conflicts).
    #[arg(long, env = "ITER8_RETRY_AFTER", default_value = "5s", value_parser = interval)]
    retry_after: Duration,
    /// How many Experiments are reconciled at once (0: no bound).
    #[arg(long, env = "ITER8_MAX_CONCURRENT_RECONCILES", default_value_t = iter8_controller::DEFAULT_CONCURRENCY)]
    max_concurrent_reconciles: u16,
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
    /// The notification receivers of Experiments that name none (`spec.notifications`
    /// absent): a JSON list in the same shape. Their URLs are allowed.
    #[arg(long, env = "ITER8_NOTIFICATIONS", value_parser = receivers)]
    notifications: Option<Receivers>,
    /// URLs Experiments' notification receivers may be at or under (comma-separated base
    /// URLs, e.g. `https://hooks.slack.com/services`). The controller sends notifications to
    /// no other address.
    #[arg(long, env = "ITER8_NOTIFICATION_ALLOWED_URLS", value_delimiter = ',')]
    notification_allowed_urls: Vec<String>,
    /// How many notifications may wait for delivery; more are dropped and counted.
    #[arg(long, env = "ITER8_NOTIFICATION_QUEUE", default_value_t = 1024)]
    notification_queue: usize,
    /// The wait before a notification's first retry; each further one waits twice as long
    /// (at most 30 s).
    #[arg(long, env = "ITER8_NOTIFICATION_BACKOFF", default_value = "1s", value_parser = interval)]
    notification_backoff: Duration,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "ITER8_LOG_JSON")]
    log_json: bool,
}

/// The namespaces whose Metrics any Experiment may use: those given, else the controller's own
/// namespace when the environment names it. The lease namespace is not used: it falls back to
/// `default`, and sharing every Metric and Secret there with all Experiments must be a choice.
fn shared_metric_namespaces(given: &[String], pod_namespace: Option<String>) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    pod_namespace
        .filter(|ns| !ns.trim().is_empty())
        .into_iter()
        .collect()
}

/// Where Metrics may send queries: the default Prometheus (Metrics that name no address use
/// it anyway) and the allowed base URLs. A default that is no plain base URL (one with
/// credentials in it, say) still serves Metrics that name no address; it is just not an
/// address a Metric can name, and it does not stop the controller.
fn metric_backends(
    prometheus_url: Option<&str>,
    allowed: &[String],
) -> Result<Endpoints, iter8_controller::analytics::AnalyticsError> {
    let default = prometheus_url.filter(|url| Endpoints::only([*url]).is_ok());
    Endpoints::only(
        default
            .into_iter()
            .chain(allowed.iter().map(String::as_str)),
    )
}

/// The default notification receivers, parsed from JSON.
#[derive(Debug, Clone)]
struct Receivers(Vec<iter8_crd::NotificationReceiver>);

/// Parses `--notifications`; clap names the flag in the error.
fn receivers(text: &str) -> Result<Receivers, serde_json::Error> {
    serde_json::from_str(text).map(Receivers)
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

    let (token, tls) = args.analytics_credentials.read()?;
    let endpoints = Endpoints::only(
        std::iter::once(args.analytics_url.as_str())
            .chain(args.analytics_allowed_urls.iter().map(String::as_str)),
    )?;
    let analytics = AnalyticsClient::new(ClientConfig {
        timeout: args.analytics_timeout,
        retries: args.analytics_retries,
        backoff: Duration::from_millis(250),
        token,
        tls,
        endpoints,
    })?;
    let metrics = iter8_metrics::Backends::new(iter8_metrics::Settings {
        default_prometheus_address: args.prometheus_url.clone(),
        ..iter8_metrics::Settings::default()
    })?;
    let telemetry = Telemetry::new()?;
    let notifier = Notifier::new(
        client.clone(),
        telemetry.clone(),
        NotifierConfig {
            defaults: args.notifications.clone().map(|r| r.0).unwrap_or_default(),
            allowed: args.notification_allowed_urls.clone(),
            queue: args.notification_queue,
            backoff: args.notification_backoff,
            ..NotifierConfig::default()
        },
    )
    .context("--notifications / --notification-allowed-urls")?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "iter8-controller".into(),
            instance: Some(identity.clone()),
        },
    );
    let caches = Caches::default();
    let ctx = Arc::new(Context {
        client: client.clone(),
        router: Arc::new(KubeRouter::with_caches(client.clone(), caches.clone())),
        analytics: Arc::new(analytics),
        metrics,
        settings: Settings {
            analytics_url: args.analytics_url.clone(),
            retry_after: args.retry_after,
            shared_metric_namespaces: shared_metric_namespaces(
                &args.shared_metric_namespaces,
                std::env::var("POD_NAMESPACE").ok(),
            ),
            gate_webhooks: Endpoints::only(
                args.gate_webhook_allowed_urls.iter().map(String::as_str),
            )
            .context("--gate-webhook-allowed-urls")?,
            max_concurrent_reconciles: args.max_concurrent_reconciles,
            metric_backends: metric_backends(
                args.prometheus_url.as_deref(),
                &args.metric_backend_allowed_urls,
            )
            .context("--prometheus-url / --metric-backend-allowed-urls")?,
        },
        telemetry: telemetry.clone(),
        recorder,
        superseded: Default::default(),
        notifier,
        caches,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_shared_metric_namespace_is_assumed_without_pod_namespace() {
        assert!(shared_metric_namespaces(&[], None).is_empty());
        assert!(shared_metric_namespaces(&[], Some(String::new())).is_empty());
        assert_eq!(
            shared_metric_namespaces(&[], Some("iter8-system".into())),
            ["iter8-system"]
        );
        let given = ["metrics".to_owned()];
        assert_eq!(
            shared_metric_namespaces(&given, Some("iter8-system".into())),
            ["metrics"]
        );
    }

    #[test]
    fn metrics_may_query_the_default_prometheus_and_the_allowed_urls_only() {
        let only_default =
            metric_backends(Some("http://prometheus.monitoring:9090"), &[]).expect("valid");
        assert!(only_default.allows_request("http://prometheus.monitoring:9090/"));
        assert!(!only_default.allows_request("http://thanos.monitoring:9090"));
        let none = metric_backends(None, &[]).expect("valid");
        assert!(!none.allows_request("http://prometheus.monitoring:9090"));
        let both = metric_backends(
            Some("http://prometheus.monitoring:9090"),
            &["http://thanos.monitoring:9090".to_owned()],
        )
        .expect("valid");
        assert!(both.allows_request("http://thanos.monitoring:9090/api/v1/query?query=up"));
        assert!(metric_backends(None, &["http://u:p@thanos".to_owned()]).is_err());
        // A default Prometheus URL with credentials in it is used as before, not matched.
        let with_credentials =
            metric_backends(Some("http://u:p@prometheus:9090"), &[]).expect("starts");
        assert!(!with_credentials.allows_request("http://prometheus:9090"));
    }
}
