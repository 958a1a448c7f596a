//! How the service is tuned: listen address, limits, timeouts, authentication and TLS, from
//! flags or environment.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::BearerToken;

/// The address the service listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// How long one request may take, body read included, before it is answered with 503.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body accepted (4 MiB): a 16-version request with full histories
/// stays well below it.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// How many assessments may be in flight at once before the excess is shed with 503.
pub const DEFAULT_MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(64).expect("64 is not zero");

/// How long a client may take to send a request's headers before its connection is closed.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections are served at once; further ones wait to be accepted.
pub const DEFAULT_MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(512).expect("512 is not zero");

/// The service's settings; the binary fills them from flags and `ITER8_ANALYTICS_*` variables.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ITER8_ANALYTICS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Also serve `/metrics` alone, in plain HTTP, on this address, so that a NetworkPolicy can
    /// admit scrapers there and keep them off the API.
    #[arg(long, env = "ITER8_ANALYTICS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Longest time one request may take (e.g. `10s`, `500ms`); slower ones get 503.
    #[arg(
        long,
        env = "ITER8_ANALYTICS_REQUEST_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub request_timeout: Duration,

    /// Longest time a client may take to send a request's headers (e.g. `10s`); the
    /// connection is closed after it. Also closes keep-alive connections idle that long.
    #[arg(
        long,
        env = "ITER8_ANALYTICS_HEADER_READ_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub header_read_timeout: Duration,

    /// Connections served at once; further ones wait in the listen backlog until one closes.
    #[arg(long, env = "ITER8_ANALYTICS_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: NonZeroUsize,

    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, env = "ITER8_ANALYTICS_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,

    /// Assessments in flight at once; further ones are refused with 503 and Retry-After
    /// instead of queueing without bound.
    #[arg(long, env = "ITER8_ANALYTICS_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: NonZeroUsize,

    /// Assessments computed at once; the rest of those in flight wait for a turn. By default
    /// every admitted assessment runs: on 2 cores that gave 45 % more throughput than one
    /// engine per CPU (see docs/performance.md); fewer trade throughput for a shorter tail.
    #[arg(long, env = "ITER8_ANALYTICS_ENGINE_THREADS")]
    pub engine_threads: Option<NonZeroUsize>,

    /// After SIGTERM, how long `/readyz` answers 503 while requests are still served, so that
    /// load balancers stop sending traffic before the listener closes (e.g. `5s`).
    #[arg(
        long,
        env = "ITER8_ANALYTICS_SHUTDOWN_DELAY",
        default_value = "0s",
        value_parser = parse_duration
    )]
    pub shutdown_delay: Duration,

    /// File holding the bearer token `/v1/*` requires (a mounted Secret's key); without it the
    /// API is open. Read once at startup: an empty or unreadable file stops the service.
    #[arg(
        long = "token-file",
        env = "ITER8_ANALYTICS_TOKEN_FILE",
        value_name = "FILE",
        value_parser = read_token
    )]
    pub token: Option<BearerToken>,

    /// PEM certificate chain to serve HTTPS with (needs --tls-key-file).
    #[arg(
        long,
        env = "ITER8_ANALYTICS_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of the serving certificate (needs --tls-cert-file).
    #[arg(
        long,
        env = "ITER8_ANALYTICS_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA bundle: when set, every client must present a certificate signed by it (mTLS).
    #[arg(
        long,
        env = "ITER8_ANALYTICS_TLS_CLIENT_CA_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_limit: DEFAULT_BODY_LIMIT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            engine_threads: None,
            shutdown_delay: Duration::ZERO,
            token: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

impl Config {
    /// How many assessments are computed at once: the setting, or all those in flight.
    pub fn engine_threads(&self) -> usize {
        self.engine_threads.unwrap_or(self.max_in_flight).get()
    }
}

fn read_token(path: &str) -> Result<BearerToken, String> {
    BearerToken::from_file(Path::new(path)).map_err(|e| e.to_string())
}

/// Parses a duration flag in iter8's one grammar (`10s`, `250ms`, `1m30s`).
fn parse_duration(text: &str) -> Result<Duration, iter8_api::duration::DurationError> {
    iter8_api::duration::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_use_the_crd_grammar() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("1.5").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn defaults_match_the_flags_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let parsed = Cli::parse_from(["iter8-analytics"]).config;
        let default = Config::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.request_timeout, default.request_timeout);
        assert_eq!(parsed.body_limit, default.body_limit);
        assert_eq!(parsed.max_in_flight, default.max_in_flight);
        assert_eq!(parsed.shutdown_delay, default.shutdown_delay);
        assert!(parsed.token.is_none() && parsed.tls_cert_file.is_none());
    }

    #[test]
    fn an_empty_token_file_stops_the_service_with_its_path() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").expect("write");
        let path = path.to_str().expect("utf-8 path");
        let err = Cli::try_parse_from(["iter8-analytics", "--token-file", path])
            .expect_err("an empty token file is refused");
        let text = err.to_string();
        assert!(
            text.contains("--token-file") && text.contains("is empty"),
            "{text}"
        );

        std::fs::write(path, "abc\n").expect("write");
        let parsed =
            Cli::try_parse_from(["iter8-analytics", "--token-file", path]).expect("a token file");
        assert!(
            !format!("{:?}", parsed.config).contains("abc"),
            "Debug redacts the token"
        );
        let token = parsed.config.token.expect("a token");
        assert!(token.matches(b"abc"));
    }

    #[test]
    fn a_certificate_needs_its_key() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let err = Cli::try_parse_from(["iter8-analytics", "--tls-cert-file", "/c.pem"])
            .expect_err("a certificate without a key");
        assert!(err.to_string().contains("--tls-key-file"), "{err}");
    }
}
