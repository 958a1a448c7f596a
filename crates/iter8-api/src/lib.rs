//! Wire types of the iter8 analytics API (`POST /v1/assessments`).
//!
//! The controller, the CLI and the analytics service all speak these types, so a request built
//! by one is understood by the others. Field names are camelCase on the wire, like Kubernetes.
#![forbid(unsafe_code)]

pub mod evidence;
pub mod request;
pub mod response;
pub mod validate;

pub use evidence::*;
pub use request::*;
pub use response::*;
pub use validate::{ErrorResponse, InvalidRequest, MetricKind};
