//! The seam to the analytics service: the reconciler asks an [`Assessor`], which is the
//! shared analytics client in production and a fake or a wrapper in tests.

use futures::future::BoxFuture;
use iter8_api::{AssessmentRequest, AssessmentResponse};

use crate::analytics::{AnalyticsClient, AnalyticsError};

/// Something that assesses an iteration.
pub trait Assessor: Send + Sync {
    /// Assesses `request` at the analytics service `url`; the answer is one for `request`
    /// (see [`crate::analytics::check_answer`]).
    fn assess<'a>(
        &'a self,
        url: &'a str,
        request: &'a AssessmentRequest,
    ) -> BoxFuture<'a, Result<AssessmentResponse, AnalyticsError>>;
}

impl Assessor for AnalyticsClient {
    fn assess<'a>(
        &'a self,
        url: &'a str,
        request: &'a AssessmentRequest,
    ) -> BoxFuture<'a, Result<AssessmentResponse, AnalyticsError>> {
        Box::pin(AnalyticsClient::assess(self, url, request))
    }
}
