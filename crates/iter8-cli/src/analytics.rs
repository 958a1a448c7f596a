//! Where assessments come from: the engine in this process, or an analytics service.

use std::time::Duration;

use iter8_api::{AssessmentRequest, AssessmentResponse, ErrorResponse};

/// Why no assessment came back.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The engine or the service refused the request.
    #[error("the analytics refused the request: {field}: {reason}")]
    Rejected {
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// The service could not be reached or answered something else.
    #[error("analytics service at {url}: {message}")]
    Unavailable {
        /// The service.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// The source of assessments.
#[derive(Debug, Clone)]
pub enum Analytics {
    /// `iter8_engine::assess`, on a blocking thread so the load keeps flowing.
    InProcess,
    /// `POST {url}/v1/assessments`.
    Remote {
        /// The service's base URL.
        url: String,
        /// The HTTP client.
        client: reqwest::Client,
    },
}

impl Analytics {
    /// In process without a URL, otherwise the service at `url`.
    pub fn new(url: Option<&str>) -> Result<Self, AnalyticsError> {
        let Some(url) = url else {
            return Ok(Self::InProcess);
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AnalyticsError::Unavailable {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self::Remote {
            url: url.trim_end_matches('/').to_string(),
            client,
        })
    }

    /// `in-process` or the service URL.
    pub fn describe(&self) -> String {
        match self {
            Self::InProcess => "in-process".into(),
            Self::Remote { url, .. } => url.clone(),
        }
    }

    /// Assesses one iteration.
    pub async fn assess(
        &self,
        request: &AssessmentRequest,
    ) -> Result<AssessmentResponse, AnalyticsError> {
        match self {
            Self::InProcess => {
                let request = request.clone();
                let result = tokio::task::spawn_blocking(move || iter8_engine::assess(&request))
                    .await
                    .map_err(|e| AnalyticsError::Unavailable {
                        url: "in-process".into(),
                        message: e.to_string(),
                    })?;
                result.map_err(|e| AnalyticsError::Rejected {
                    field: e.field,
                    reason: e.reason,
                })
            }
            Self::Remote { url, client } => remote(client, url, request).await,
        }
    }
}

async fn remote(
    client: &reqwest::Client,
    url: &str,
    request: &AssessmentRequest,
) -> Result<AssessmentResponse, AnalyticsError> {
    let unavailable = |message: String| AnalyticsError::Unavailable {
        url: url.to_string(),
        message,
    };
    let response = client
        .post(format!("{url}/v1/assessments"))
        .json(request)
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("not an assessment: {e}")));
    }
    match serde_json::from_slice::<ErrorResponse>(&body) {
        Ok(e) if status.is_client_error() => Err(AnalyticsError::Rejected {
            field: e.error.field,
            reason: e.error.reason,
        }),
        _ => Err(unavailable(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}
