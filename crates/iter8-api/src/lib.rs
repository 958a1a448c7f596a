//! Wire types of the iter8 analytics API (`POST /v1/assessments`).
//!
//! The controller, the CLI and the analytics service all speak these types, so a request built
//! by one is understood by the others. Field names are camelCase on the wire, like Kubernetes.
#![forbid(unsafe_code)]

pub mod duration;
pub mod error;
pub mod evidence;
pub mod limits;
pub mod observation;
pub mod request;
pub mod requirements;
pub mod response;
pub mod validate;

pub use error::{ErrorResponse, InvalidRequest};
pub use evidence::*;
pub use request::*;
pub use requirements::{Requirements, Shape, SplitUse, VersionCount};
pub use response::*;
pub use validate::MetricKind;
