//! The HTTP client of the analytics service, with timeouts and retries with backoff.

use std::time::Duration;

use iter8_api::{AssessmentRequest, AssessmentResponse, ErrorResponse};

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
    /// The service answered something that is not an assessment.
    #[error("analytics service answered garbage: {0}")]
    Garbage(String),
    /// The service refused our credentials (401): the bearer token or client certificate is
    /// missing or not the one it expects. The token itself is never part of the message.
    #[error(
        "analytics service refused authentication (HTTP 401): {reason}; check the token \
         (ITER8_ANALYTICS_TOKEN_FILE) and client certificate the controller is given"
    )]
    Unauthorized {
        /// The service's reason, e.g. "the bearer token is not valid".
        reason: String,
    },
    /// The TLS settings (CA, client certificate or key) could not be loaded.
    #[error("analytics TLS settings: {0}")]
    Tls(String),
}

/// How the controller reaches an analytics service over HTTPS: the CA it trusts for it, and
/// the client certificate it presents when the service requires one (mTLS). PEM bytes, as
/// read from the mounted Secret.
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

/// Calls `POST {url}/v1/assessments`.
#[derive(Clone)]
pub struct AnalyticsClient {
    http: reqwest::Client,
    retries: u32,
    backoff: Duration,
    token: Option<String>,
}

impl std::fmt::Debug for AnalyticsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsClient")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AnalyticsClient {
    /// A client whose every attempt is bounded by `timeout`; transient failures are retried
    /// `retries` times, waiting `backoff`, then twice that, and so on.
    pub fn new(
        timeout: Duration,
        retries: u32,
        backoff: Duration,
        token: Option<String>,
    ) -> Result<Self, AnalyticsError> {
        Self::with_tls(timeout, retries, backoff, token, &ClientTls::default())
    }

    /// As [`AnalyticsClient::new`], trusting `tls.ca_pem` for `https://` URLs and presenting
    /// `tls.identity_pem` to services that require a client certificate.
    pub fn with_tls(
        timeout: Duration,
        retries: u32,
        backoff: Duration,
        token: Option<String>,
        tls: &ClientTls,
    ) -> Result<Self, AnalyticsError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(pem) = &tls.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| AnalyticsError::Tls(format!("CA bundle: {e}")))?;
            if roots.is_empty() {
                return Err(AnalyticsError::Tls(
                    "CA bundle: no PEM certificate in it".into(),
                ));
            }
            builder = builder.tls_certs_only(roots);
        }
        if let Some(pem) = &tls.identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| AnalyticsError::Tls(format!("client certificate and key: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| AnalyticsError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            retries,
            backoff,
            token,
        })
    }

    /// Asks for the assessment of one iteration.
    pub async fn assess(
        &self,
        base_url: &str,
        request: &AssessmentRequest,
    ) -> Result<AssessmentResponse, AnalyticsError> {
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
                outcome => return outcome,
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
        let body = response
            .bytes()
            .await
            .map_err(|e| AnalyticsError::Unavailable(describe(&e)))?;
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
        Err(AnalyticsError::Unavailable(format!("HTTP {status}")))
    }
}

/// The error with its causes: a TLS failure (unknown CA, refused client certificate) is only
/// visible in the chain.
fn describe(e: &reqwest::Error) -> String {
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
