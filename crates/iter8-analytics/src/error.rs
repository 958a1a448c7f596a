//! Every way a request can fail, and the JSON body each failure is answered with.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iter8_api::{ErrorResponse, InvalidRequest};

/// Why a request was refused; also the label of the rejections metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not the configured one.
    Invalid,
    /// mTLS is on and the connection presented no client certificate.
    NoClientCertificate,
}

impl Rejection {
    /// The metric label: `missing` or `invalid`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::NoClientCertificate => "no_client_certificate",
        }
    }
}

/// How long a shed client is told to wait: assessments take milliseconds, so a second is
/// plenty for the queue to move.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// A failed request; each variant knows its status code and its `{"error": {field, reason}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all (400).
    #[error("malformed JSON at {field}: {reason}")]
    MalformedJson {
        /// Where in the document parsing stopped.
        field: String,
        /// What the parser expected.
        reason: String,
    },
    /// The body is JSON but not an assessment request, or the engine refused it (422).
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The body is larger than the configured limit (413).
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not declared as JSON (415).
    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(String),
    /// The API needs a bearer token and the request had none or a wrong one (401).
    #[error("unauthorized: {} bearer token", .0.label())]
    Unauthorized(Rejection),
    /// No route has this path (404).
    #[error("no such path {0}")]
    NotFound(String),
    /// The path exists but not for this method (405).
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    /// Too many assessments are in flight; the client should retry (503).
    #[error("too many requests in flight")]
    Overloaded,
    /// The request took longer than the configured timeout (503).
    #[error("request timed out after {0:?}")]
    TimedOut(Duration),
    /// The service is shutting down and takes no new work (503).
    #[error("shutting down")]
    ShuttingDown,
    /// A bug: the engine panicked or a layer failed in an unforeseen way (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::TimedOut(_) | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The field at fault and the reason, as the wire body carries them.
    pub fn to_invalid_request(&self) -> InvalidRequest {
        match self {
            Self::MalformedJson { field, reason } => InvalidRequest::new(
                field.clone(),
                format!("the body is not well-formed JSON: {reason}"),
            ),
            Self::Invalid(invalid) => invalid.clone(),
            Self::PayloadTooLarge { limit } => InvalidRequest::new(
                "body",
                format!("the body is larger than the limit of {limit} bytes"),
            ),
            Self::UnsupportedMediaType(got) => InvalidRequest::new(
                "content-type",
                format!("expected application/json, got {got:?}"),
            ),
            // Never the presented value: it may be a real token sent to the wrong service.
            Self::Unauthorized(Rejection::Missing) => InvalidRequest::new(
                "authorization",
                "this service requires an `Authorization: Bearer <token>` header",
            ),
            Self::Unauthorized(Rejection::Invalid) => {
                InvalidRequest::new("authorization", "the bearer token is not valid")
            }
            Self::Unauthorized(Rejection::NoClientCertificate) => InvalidRequest::new(
                "tls",
                "this service requires a TLS client certificate signed by its client CA",
            ),
            Self::NotFound(path) => InvalidRequest::new(
                "path",
                format!("no such path {path:?}; see /openapi.json for the API"),
            ),
            Self::MethodNotAllowed(method) => InvalidRequest::new(
                "method",
                format!("{method} is not allowed on this path; see the Allow header"),
            ),
            Self::Overloaded => InvalidRequest::new(
                "request",
                format!(
                    "the service is at its limit of assessments in flight; \
                     retry after {RETRY_AFTER_SECONDS} s"
                ),
            ),
            Self::TimedOut(after) => {
                InvalidRequest::new("request", format!("the request took longer than {after:?}"))
            }
            Self::ShuttingDown => InvalidRequest::new("request", "the service is shutting down"),
            // The details go to the log, not to the client.
            Self::Internal(_) => InvalidRequest::new(
                "request",
                "internal error while assessing the request; it has been logged",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !matches!(self, Self::Overloaded | Self::ShuttingDown) {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorResponse {
            error: self.to_invalid_request(),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Overloaded | Self::ShuttingDown) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        match self {
            // RFC 6750 §3: the challenge, with `invalid_token` when one was presented.
            Self::Unauthorized(Rejection::Missing) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unauthorized(Rejection::Invalid) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// Sorts a body that failed to decode into malformed JSON (400) and well-formed JSON of the
/// wrong shape (422), keeping the path to the offending value.
pub fn from_decode_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;

    let field = field_of(err.path(), err.inner());
    let inner = err.into_inner();
    let reason = strip_position(&inner);
    match inner.classify() {
        // JSON's grammar allows 1e400 but no f64 holds it: a value problem, not a syntax one.
        Category::Syntax if reason.starts_with("number out of range") => ApiError::Invalid(
            InvalidRequest::new(field, format!("{reason}: must fit a 64-bit float")),
        ),
        Category::Syntax | Category::Eof | Category::Io => ApiError::MalformedJson {
            field,
            reason: format!(
                "{reason} at line {} column {}",
                inner.line(),
                inner.column()
            ),
        },
        Category::Data => ApiError::Invalid(InvalidRequest::new(field, reason)),
    }
}

/// The dotted path of the failure (`versions[1].metrics.errors.counter`), `body` for the
/// document itself, and the unknown key's own path when a struct refuses one.
fn field_of(path: &serde_path_to_error::Path, inner: &serde_json::Error) -> String {
    // serde_path_to_error writes `.` for the root and `?` for a key it never finished reading.
    let raw = path.to_string();
    let mut path = raw.clone();
    if path == "." || path == "?" {
        path.clear();
    } else if let Some(known) = path.strip_suffix(".?") {
        path = known.to_owned();
    }
    let message = inner.to_string();
    // The key may itself hold backticks (found by fuzzing): it ends where serde's list of
    // expected fields begins.
    let unknown = message.strip_prefix("unknown field `").and_then(|rest| {
        ["`, expected", "`, there are no fields"]
            .iter()
            .find_map(|end| rest.rfind(end).map(|i| &rest[..i]))
    });
    match (path.is_empty(), unknown) {
        // A blank key (found by fuzzing) names nothing: the object holding it is named instead.
        (_, Some(key)) if key.trim().is_empty() => {
            let holder = path
                .strip_suffix(key)
                .unwrap_or(&path)
                .trim_end_matches('.');
            if holder.is_empty() {
                "body".to_owned()
            } else {
                holder.to_owned()
            }
        }
        // The raw path already ends at the key (which may itself end in `.?`: found by fuzzing).
        (_, Some(key)) if raw.ends_with(key) => raw,
        (_, Some(key)) if path.ends_with(key) => path,
        (true, Some(key)) => key.to_owned(),
        (false, Some(key)) => format!("{path}.{key}"),
        (true, None) => "body".to_owned(),
        (false, None) => path,
    }
}

/// serde_json appends " at line L column C"; the field path says more to a caller.
fn strip_position(err: &serde_json::Error) -> String {
    let message = err.to_string();
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    }
}
