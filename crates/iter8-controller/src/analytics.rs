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
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| AnalyticsError::Unavailable(e.to_string()))?;
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

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        e.to_string()
    }
}
