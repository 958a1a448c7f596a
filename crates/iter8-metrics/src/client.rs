//! HTTP clients shared by the backends, and the authentication headers they send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use iter8_crd::AuthType;
use reqwest::header::HeaderValue;

use crate::quality::invalid;
use crate::{Credentials, MetricsError, Query};

/// HTTP clients: one for the system's roots, and one per custom certificate authority.
#[derive(Clone)]
pub(crate) struct ClientPool {
    plain: reqwest::Client,
    with_ca: Arc<Mutex<HashMap<Vec<u8>, reqwest::Client>>>,
}

impl ClientPool {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            plain: builder().build()?,
            with_ca: Arc::default(),
        })
    }

    /// The client for this query: trusting only the query's CA, if it has one.
    pub(crate) fn client(&self, query: &Query<'_>) -> Result<reqwest::Client, MetricsError> {
        let Some(ca) = query.credentials.and_then(|c| c.ca_pem.as_ref()) else {
            return Ok(self.plain.clone());
        };
        let mut cache = self
            .with_ca
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = cache.get(ca) {
            return Ok(client.clone());
        }
        let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(|e| {
            invalid(
                query.name,
                format!("the CA certificate does not parse: {e}"),
            )
        })?;
        if certs.is_empty() {
            return Err(invalid(query.name, "the CA bundle holds no certificate"));
        }
        let client = builder()
            .tls_certs_only(certs)
            .build()
            .map_err(|e| invalid(query.name, format!("cannot use the CA certificate: {e}")))?;
        cache.insert(ca.clone(), client.clone());
        Ok(client)
    }
}

/// Every backend client: the controller checks a Metric's address against the operator's
/// allow-list (`--metric-backend-allowed-urls`) before it sends anything, so a redirect must not
/// take the request (and headers carrying the Metric's credentials) to another address, nor
/// an environment proxy see it.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// The `Authorization` header for this query, if it has credentials.
///
/// The metric's `auth.type` decides the scheme and must find its keys; without `auth`, a token
/// is sent as a bearer token and a user name and password as basic authentication.
pub(crate) fn authorization(query: &Query<'_>) -> Result<Option<HeaderValue>, MetricsError> {
    let wanted = query.spec.auth.as_ref().map(|a| a.kind);
    let creds = query.credentials;
    let empty = Credentials::default();
    let c = creds.unwrap_or(&empty);
    let value = match wanted {
        Some(AuthType::Bearer) => {
            let token = c.token.as_deref().ok_or_else(|| {
                invalid(
                    query.name,
                    "bearer authentication needs key `token` in the Secret",
                )
            })?;
            Some(format!("Bearer {}", token.trim()))
        }
        Some(AuthType::Basic) => match (&c.username, &c.password) {
            (Some(u), Some(p)) => Some(basic(u, p)),
            _ => {
                return Err(invalid(
                    query.name,
                    "basic authentication needs keys `username` and `password` in the Secret",
                ));
            }
        },
        None => match (&c.token, &c.username, &c.password) {
            (Some(t), _, _) => Some(format!("Bearer {}", t.trim())),
            (None, Some(u), Some(p)) => Some(basic(u, p)),
            _ => None,
        },
    };
    value
        .map(|v| {
            let mut h = HeaderValue::from_str(&v).map_err(|_| {
                invalid(
                    query.name,
                    "the credentials contain characters not allowed in a header",
                )
            })?;
            h.set_sensitive(true);
            Ok(h)
        })
        .transpose()
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use iter8_crd::{Auth, MetricSpec, MetricType, PrometheusProvider, Provider};

    use super::*;

    fn spec(auth: Option<AuthType>) -> MetricSpec {
        MetricSpec {
            description: None,
            kind: MetricType::Counter,
            units: None,
            provider: Provider::Prometheus(PrometheusProvider {
                address: None,
                query: Some("sum(up)".into()),
                sum_query: None,
                count_query: None,
            }),
            auth: auth.map(|kind| Auth {
                kind,
                secret_name: "s".into(),
            }),
            timeout_seconds: None,
        }
    }

    fn header(
        auth: Option<AuthType>,
        creds: Option<&Credentials>,
    ) -> Result<Option<String>, MetricsError> {
        let spec = spec(auth);
        let labels = BTreeMap::new();
        let q = Query {
            name: "m",
            spec: &spec,
            labels: &labels,
            namespace: "ns",
            start: SystemTime::UNIX_EPOCH,
            now: SystemTime::UNIX_EPOCH,
            credentials: creds,
        };
        authorization(&q).map(|h| h.and_then(|h| h.to_str().ok().map(str::to_owned)))
    }

    #[test]
    fn basic_auth_encodes_user_and_password() {
        let c = Credentials {
            username: Some("Aladdin".into()),
            password: Some("open sesame".into()),
            ..Credentials::default()
        };
        assert_eq!(
            header(Some(AuthType::Basic), Some(&c)),
            Ok(Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".into()))
        );
    }

    #[test]
    fn bearer_auth_sends_the_token() {
        let c = Credentials {
            token: Some("t0k3n\n".into()),
            ..Credentials::default()
        };
        assert_eq!(
            header(Some(AuthType::Bearer), Some(&c)),
            Ok(Some("Bearer t0k3n".into()))
        );
        assert_eq!(header(None, Some(&c)), Ok(Some("Bearer t0k3n".into())));
    }

    #[test]
    fn missing_keys_for_the_declared_scheme_are_invalid() {
        assert!(matches!(
            header(Some(AuthType::Bearer), None),
            Err(MetricsError::Invalid { .. })
        ));
        let c = Credentials {
            username: Some("u".into()),
            ..Credentials::default()
        };
        assert!(matches!(
            header(Some(AuthType::Basic), Some(&c)),
            Err(MetricsError::Invalid { .. })
        ));
    }

    #[test]
    fn no_credentials_send_no_header() {
        assert_eq!(header(None, None), Ok(None));
    }
}
