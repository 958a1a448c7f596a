//! How a refused request is described: the field at fault and the reason.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request the service refuses, with the field at fault and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, JsonSchema)]
#[error("{field}: {reason}")]
pub struct InvalidRequest {
    /// The path of the offending field, e.g. `versions[1].metrics.errors.counter`.
    pub field: String,
    /// Why the value is refused.
    pub reason: String,
}

impl InvalidRequest {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The body of every 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorResponse {
    /// What was wrong with the request.
    pub error: InvalidRequest,
}
