//! Bearer-token authentication of the API (`/v1/*`).
//!
//! The token comes from a file (in Kubernetes, a key of a mounted Secret). A request must
//! carry `Authorization: Bearer <token>`; the comparison takes the same time whatever the
//! presented value shares with the token, and neither the token nor the presented header is
//! ever logged or echoed. Probes, `/metrics` and `/openapi.json` stay open (see
//! docs/security.md for why).

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::error::{ApiError, Rejection};
use crate::metrics::Metrics;
use crate::tls::ClientCertificate;

/// The token a request must present; its `Debug` never shows it.
#[derive(Clone)]
pub struct BearerToken(String);

/// Why the token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the bearer token file {path}: {source}")]
    Unreadable {
        /// The file named by `--token-file`.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace: every request would be refused.
    #[error("the bearer token file {0} is empty")]
    Empty(PathBuf),
    /// The token has characters an HTTP header cannot carry.
    #[error("the bearer token in {0} contains whitespace or control characters")]
    Unprintable(PathBuf),
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// Reads the token from `path`, without the trailing newline editors and `kubectl create
    /// secret --from-file` leave.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty(path.to_owned()));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::Unprintable(path.to_owned()));
        }
        Ok(Self(token.to_owned()))
    }

    /// A token given directly (tests and embedding).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Whether `presented` is the token, in time that depends only on the two lengths.
    ///
    /// The presented value is padded or cut to the token's length before a constant-time
    /// comparison, so there is no early exit on the first differing byte nor on a length
    /// mismatch; the lengths are compared in constant time too.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut padded = vec![0u8; expected.len()];
        let common = presented.len().min(expected.len());
        padded[..common].copy_from_slice(&presented[..common]);
        let same_bytes = expected.ct_eq(&padded);
        let same_length = (presented.len() as u64).ct_eq(&(expected.len() as u64));
        (same_bytes & same_length).into()
    }

    /// Checks the `Authorization` header of a request.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Rejection::Missing);
        };
        let bytes = value.as_bytes();
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        let scheme = b"bearer ";
        if bytes.len() < scheme.len() || !bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Err(Rejection::Missing);
        }
        let presented = bytes[scheme.len()..].trim_ascii();
        if self.matches(presented) {
            Ok(())
        } else {
            Err(Rejection::Invalid)
        }
    }
}

/// What the auth middleware needs: the token and where to count refusals.
#[derive(Clone)]
pub struct AuthState {
    /// The configured token.
    pub token: BearerToken,
    /// The service's metrics.
    pub metrics: Metrics,
}

/// Middleware that refuses requests without the right bearer token with 401.
pub async fn require_bearer(
    State(auth): State<AuthState>,
    request: Request,
    next: Next,
) -> Response {
    match auth.token.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(rejection) => {
            auth.metrics.count_auth_rejection(rejection);
            // The path only: the header (and so the token) stays out of the log.
            tracing::warn!(
                path = request.uri().path(),
                reason = rejection.label(),
                "refused a request without a valid bearer token"
            );
            ApiError::Unauthorized(rejection).into_response()
        }
    }
}

/// Middleware that refuses `/v1/*` with 401 on connections without a verified client
/// certificate (mTLS); the TLS layer lets them through for the open endpoints.
pub async fn require_client_certificate(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let verified = request
        .extensions()
        .get::<axum::extract::ConnectInfo<ClientCertificate>>()
        .is_some_and(|info| info.0.verified);
    if verified {
        return next.run(request).await;
    }
    let rejection = Rejection::NoClientCertificate;
    metrics.count_auth_rejection(rejection);
    tracing::warn!(
        path = request.uri().path(),
        reason = rejection.label(),
        "refused a request without a client certificate"
    );
    ApiError::Unauthorized(rejection).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("a header value"),
        );
        h
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = BearerToken::new("s3cret-token");
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-tokeN"));
        assert!(!token.matches(b"s3cret-toke"), "a prefix is not the token");
        assert!(
            !token.matches(b"s3cret-token2"),
            "an extension is not the token"
        );
        assert!(!token.matches(b""));
        // Padding with zeros must not make a shorter value equal.
        assert!(!BearerToken::new("ab\0").matches(b"ab"));
    }

    #[test]
    fn the_header_needs_the_bearer_scheme_and_the_token() {
        let token = BearerToken::new("t0k");
        assert_eq!(token.check(&HeaderMap::new()), Err(Rejection::Missing));
        assert_eq!(token.check(&headers("Basic dDBr")), Err(Rejection::Missing));
        assert_eq!(token.check(&headers("Bearer")), Err(Rejection::Missing));
        assert_eq!(
            token.check(&headers("Bearer nope")),
            Err(Rejection::Invalid)
        );
        assert_eq!(token.check(&headers("Bearer t0k")), Ok(()));
        assert_eq!(token.check(&headers("bearer t0k")), Ok(()));
        assert_eq!(token.check(&headers("Bearer T0K")), Err(Rejection::Invalid));
    }

    #[test]
    fn the_token_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123\n").expect("write");
        let token = BearerToken::from_file(&path).expect("a token");
        assert!(token.matches(b"abc123"));
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");

        std::fs::write(&path, " \n").expect("write");
        let empty = BearerToken::from_file(&path).expect_err("empty");
        assert!(empty.to_string().contains("is empty"), "{empty}");

        std::fs::write(&path, "two words").expect("write");
        assert!(matches!(
            BearerToken::from_file(&path),
            Err(TokenError::Unprintable(_))
        ));

        let missing = BearerToken::from_file(&dir.path().join("absent")).expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("cannot read the bearer token file"),
            "{missing}"
        );
    }
}
