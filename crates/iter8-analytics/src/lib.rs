//! The iter8 analytics service: the decision engine behind a small HTTP API.
//!
//! `POST /v1/assessments` takes an [`iter8_api::AssessmentRequest`] and answers with an
//! [`iter8_api::AssessmentResponse`]; every failure is an [`iter8_api::ErrorResponse`] naming
//! the field at fault. The library builds the router ([`App`]) and runs it ([`Server`]), so
//! tests and the CLI can embed the service; the `iter8-analytics` binary adds flags and logs.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod tls;

pub use app::{App, Readiness};
pub use auth::BearerToken;
pub use config::Config;
pub use error::ApiError;
pub use server::{Server, ServerError, shutdown_signal};
