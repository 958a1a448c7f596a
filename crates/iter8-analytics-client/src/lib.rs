//! The one HTTP client of the iter8 analytics service, used by the controller and the CLI.
//!
//! It keeps four promises:
//! - **Only trusted endpoints.** A client calls only the base URLs it was given
//!   ([`Endpoints`]); the bearer token therefore reaches no other address, and an Experiment
//!   cannot make the controller send requests anywhere else. No environment proxy is used.
//! - **Bounded calls.** Every attempt has a timeout; unavailability is retried with backoff;
//!   refusals (4xx) are not; redirects are not followed.
//! - **TLS as configured.** Only the given CA bundle is trusted when one is given, and a client
//!   certificate is presented when the service requires one (mTLS).
//! - **Answers are checked.** An answer is returned only if it is an assessment of the request
//!   asked ([`check_answer`]); anything else, or a body over [`MAX_ANSWER_BYTES`], is
//!   [`AnalyticsError::Garbage`].

#![forbid(unsafe_code)]

mod answer;
mod endpoints;
mod files;

use std::time::Duration;

use iter8_api::{AssessmentRequest, AssessmentResponse, ErrorResponse};

pub use answer::check_answer;
pub use endpoints::Endpoints;
pub use files::{CredentialFiles, read_token};

/// Why the analytics service gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The service could not be reached, timed out, or failed (after retries).
    #[error("analytics service unavailable: {0}")]
    Unavailable(String),
    /// The service refused the request; retrying the same request will not help.
    #[error("analytics service rejected the request: {field}: {reason}")]
    Rejected {
        /// The field it named.
        field: String,
        /// Its reason.
        reason: String,
    },
    /// The service answered something that is not an assessment of the request asked.
    #[error("analytics service answered garbage: {0}")]
    Garbage(String),
    /// The service refused our credentials (401): the bearer token or client certificate is
    /// missing or not the one it expects. The token itself is never part of the message.
    #[error(
        "analytics service refused authentication (HTTP 401): {reason}; check the token \
         (ITER8_ANALYTICS_TOKEN_FILE) and client certificate given"
    )]
    Unauthorized {
        /// The service's reason, e.g. "the bearer token is not valid".
        reason: String,
    },
    /// The TLS settings (CA, client certificate or key) could not be loaded.
    #[error("analytics TLS settings: {0}")]
    Tls(String),
    /// The URL is not one of the endpoints this client may call.
    #[error(
        "analytics URL {url:?} is not allowed: the controller calls only its own analytics \
         service and the URLs it is configured to allow (--analytics-allowed-urls)"
    )]
    NotAllowed {
        /// The URL asked for.
        url: String,
    },
    /// A credential file could not be read.
    #[error("{0}")]
    Credentials(String),
}

impl AnalyticsError {
    /// The reason for conditions and Events (`AnalyticsUnavailable`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            AnalyticsError::Rejected { .. } => "AnalyticsRejected",
            AnalyticsError::Unauthorized { .. } => "AnalyticsUnauthorized",
            AnalyticsError::Tls(_) | AnalyticsError::Credentials(_) => "AnalyticsTlsMisconfigured",
            AnalyticsError::Garbage(_) => "AnalyticsGarbage",
            AnalyticsError::Unavailable(_) => "AnalyticsUnavailable",
            AnalyticsError::NotAllowed { .. } => "AnalyticsNotAllowed",
        }
    }
}

/// How a client reaches an analytics service over HTTPS: the CA it trusts for it, and the
/// client certificate it presents when the service requires one (mTLS). PEM bytes.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// CA bundle the service's certificate must chain to; only these roots are trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key, concatenated (PEM).
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field(
                "identity",
                &self.identity_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How a client calls: limits, credentials and the endpoints it may call.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The bound on each attempt (connect, send, answer).
    pub timeout: Duration,
    /// How many times an unavailable service is tried again.
    pub retries: u32,
    /// The first wait between attempts; each next wait doubles.
    pub backoff: Duration,
    /// The bearer token sent to the endpoints (never elsewhere).
    pub token: Option<String>,
    /// CA and client certificate for `https://` endpoints.
    pub tls: ClientTls,
    /// The base URLs this client may call.
    pub endpoints: Endpoints,
}

impl ClientConfig {
    /// A configuration calling only `endpoints`, with a 10 s timeout, 2 retries from 250 ms,
    /// no token and the system's CA roots.
    pub fn new(endpoints: Endpoints) -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(250),
            token: None,
            tls: ClientTls::default(),
            endpoints,
        }
    }
}

/// The largest answer body read: an assessment of the largest experiment the API admits is far
/// smaller, so a longer body is refused as [`AnalyticsError::Garbage`] rather than buffered.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Calls `POST {url}/v1/assessments` on the configured endpoints.
#[derive(Clone)]
pub struct AnalyticsClient {
    http: reqwest::Client,
    retries: u32,
    backoff: Duration,
    token: Option<String>,
    endpoints: Endpoints,
}

impl std::fmt::Debug for AnalyticsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsClient")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl AnalyticsClient {
    /// A client as `config` says; fails only on unusable TLS material.
    pub fn new(config: ClientConfig) -> Result<Self, AnalyticsError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect would take the request (and its token) to an address nobody allowed.
            .redirect(reqwest::redirect::Policy::none())
            // An environment proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) is another address
            // nobody allowed: over plain HTTP it would see the bearer token.
            .no_proxy();
        if let Some(pem) = &config.tls.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| AnalyticsError::Tls(format!("CA bundle: {e}")))?;
            if roots.is_empty() {
                return Err(AnalyticsError::Tls(
                    "CA bundle: no PEM certificate in it".into(),
                ));
            }
            builder = builder.tls_certs_only(roots);
        }
        if let Some(pem) = &config.tls.identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| AnalyticsError::Tls(format!("client certificate and key: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| AnalyticsError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            retries: config.retries,
            backoff: config.backoff,
            token: config.token,
            endpoints: config.endpoints,
        })
    }

    /// The endpoints this client may call.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Asks the service at `base_url` for the assessment of one iteration, and checks that the
    /// answer is one ([`check_answer`]).
    pub async fn assess(
        &self,
        base_url: &str,
        request: &AssessmentRequest,
    ) -> Result<AssessmentResponse, AnalyticsError> {
        if !self.endpoints.allows(base_url) {
            return Err(AnalyticsError::NotAllowed {
                url: base_url.to_owned(),
            });
        }
        let url = format!("{}/v1/assessments", base_url.trim_end_matches('/'));
        let mut wait = self.backoff;
        let mut attempt = 0;
        loop {
            match self.attempt(&url, request).await {
                Err(AnalyticsError::Unavailable(why)) if attempt < self.retries => {
                    tracing::debug!(%url, attempt, %why, "analytics call failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                    attempt += 1;
                }
                Ok(answer) => {
                    check_answer(request, &answer)?;
                    return Ok(answer);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        request: &AssessmentRequest,
    ) -> Result<AssessmentResponse, AnalyticsError> {
        let mut call = self.http.post(url).json(request);
        if let Some(token) = &self.token {
            call = call.bearer_auth(token);
        }
        let response = call
            .send()
            .await
            .map_err(|e| AnalyticsError::Unavailable(describe(&e)))?;
        let status = response.status();
        let body = read_capped(response, MAX_ANSWER_BYTES).await?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| AnalyticsError::Garbage(e.to_string()));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let reason = serde_json::from_slice::<ErrorResponse>(&body)
                .map_or_else(|_| "no reason given".to_owned(), |e| e.error.reason);
            return Err(AnalyticsError::Unauthorized { reason });
        }
        if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            return Err(match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => AnalyticsError::Rejected {
                    field: e.error.field,
                    reason: e.error.reason,
                },
                Err(_) => AnalyticsError::Rejected {
                    field: String::new(),
                    reason: format!("HTTP {status}"),
                },
            });
        }
        if status.is_redirection() {
            return Err(AnalyticsError::Garbage(format!(
                "HTTP {status}: redirects are not followed"
            )));
        }
        Err(AnalyticsError::Unavailable(format!("HTTP {status}")))
    }
}

/// The response body, refused as garbage once it exceeds `limit` bytes (whatever its
/// Content-Length says), so a broken or hostile service cannot make the caller buffer it all.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, AnalyticsError> {
    let too_long = || AnalyticsError::Garbage(format!("the answer is over {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| AnalyticsError::Unavailable(describe(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error with its causes: a TLS failure (unknown CA, refused client certificate) is only
/// visible in the chain. (Shared with the controller's notifier.)
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut text = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
