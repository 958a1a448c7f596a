//! Where assessments come from: the engine in this process, or an analytics service reached
//! through the one analytics client (token, TLS/mTLS, timeouts, retries, answer checks).

use std::time::Duration;

use iter8_analytics_client::{AnalyticsClient, ClientConfig, CredentialFiles, Endpoints};
use iter8_api::{AssessmentRequest, AssessmentResponse};

pub use iter8_analytics_client::AnalyticsError;

/// The source of assessments.
#[derive(Debug, Clone)]
pub enum Analytics {
    /// `iter8_engine::assess`, on a blocking thread so the load keeps flowing.
    InProcess,
    /// `POST {url}/v1/assessments`.
    Remote {
        /// The service's base URL.
        url: String,
        /// The client, allowed to call `url` only.
        client: AnalyticsClient,
    },
}

impl Analytics {
    /// In process without a URL, otherwise the service at `url`, without credentials.
    pub fn new(url: Option<&str>) -> Result<Self, AnalyticsError> {
        Self::with_credentials(url, &CredentialFiles::default())
    }

    /// In process without a URL, otherwise the service at `url`, with the token and TLS
    /// material in `credentials`.
    pub fn with_credentials(
        url: Option<&str>,
        credentials: &CredentialFiles,
    ) -> Result<Self, AnalyticsError> {
        let Some(url) = url else {
            return Ok(Self::InProcess);
        };
        let (token, tls) = credentials.read()?;
        let client = AnalyticsClient::new(ClientConfig {
            timeout: Duration::from_secs(30),
            token,
            tls,
            ..ClientConfig::new(Endpoints::only([url])?)
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
                    .map_err(|e| AnalyticsError::Unavailable(format!("in-process engine: {e}")))?;
                result.map_err(|e| AnalyticsError::Rejected {
                    field: e.field,
                    reason: e.reason,
                })
            }
            Self::Remote { url, client } => client.assess(url, request).await,
        }
    }
}
