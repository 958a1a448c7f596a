//! The analytics endpoints a client may call. A URL is compared by its parts (scheme, host,
//! port, path), so `http://A:80/` and `http://a` are the same endpoint, and
//! `http://a.evil.example` or `http://a@evil.example` are not `http://a`.

use reqwest::Url;

use crate::AnalyticsError;

/// The base URLs a client may call (and send its token to).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    allowed: Vec<Base>,
}

/// A base URL reduced to what decides where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Base {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

impl Base {
    fn parse(url: &str) -> Option<Self> {
        let url = Url::parse(url).ok()?;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || !matches!(url.scheme(), "http" | "https")
        {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default(),
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl Endpoints {
    /// Exactly these base URLs; each must be an `http://` or `https://` URL without
    /// credentials, query or fragment.
    pub fn only<'a>(urls: impl IntoIterator<Item = &'a str>) -> Result<Self, AnalyticsError> {
        let allowed = urls
            .into_iter()
            .map(|url| {
                Base::parse(url).ok_or_else(|| {
                    AnalyticsError::Credentials(format!(
                        "{url:?}: not an http(s) base URL without credentials, query or \
                         fragment"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    /// Whether `url` is one of the endpoints.
    pub fn allows(&self, url: &str) -> bool {
        Base::parse(url).is_some_and(|base| self.allowed.contains(&base))
    }

    /// Whether `url` is one of the endpoints or below one: the same scheme, host and port,
    /// and a path that is the endpoint's or continues it after a `/` (so `http://h/hooks`
    /// allows `http://h/hooks/team-a`, not `http://h/hooksmith`).
    pub fn allows_under(&self, url: &str) -> bool {
        Base::parse(url).is_some_and(|url| {
            self.allowed.iter().any(|base| {
                base.scheme == url.scheme
                    && base.host == url.host
                    && base.port == url.port
                    && url
                        .path
                        .strip_prefix(&base.path)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
    }

    /// Whether a request to `url` stays under one of the endpoints ([`Self::allows_under`]),
    /// whatever its query string: for APIs that take their parameters there, such as an HTTP
    /// metrics backend's. A URL with credentials is still refused.
    pub fn allows_request(&self, url: &str) -> bool {
        let Ok(mut url) = Url::parse(url) else {
            return false;
        };
        url.set_query(None);
        url.set_fragment(None);
        self.allows_under(url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(urls: &[&str]) -> Endpoints {
        Endpoints::only(urls.iter().copied()).expect("valid")
    }

    #[test]
    fn the_same_endpoint_written_differently_is_allowed() {
        let e = only(&["http://iter8-analytics.iter8-system:8080"]);
        assert!(e.allows("http://iter8-analytics.iter8-system:8080/"));
        assert!(e.allows("HTTP://Iter8-Analytics.iter8-system:8080"));
        let default_port = only(&["https://analytics.example"]);
        assert!(default_port.allows("https://analytics.example:443/"));
    }

    #[test]
    fn other_hosts_ports_schemes_and_paths_are_refused() {
        let e = only(&["http://iter8-analytics.iter8-system:8080"]);
        for url in [
            "http://iter8-analytics.iter8-system:8081",
            "https://iter8-analytics.iter8-system:8080",
            "http://iter8-analytics.iter8-system.evil.example:8080",
            "http://iter8-analytics.iter8-system:8080@evil.example",
            "http://user@iter8-analytics.iter8-system:8080",
            "http://iter8-analytics.iter8-system:8080/other",
            "http://iter8-analytics.iter8-system:8080?x=1",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(!e.allows(url), "{url}");
        }
    }

    #[test]
    fn urls_below_an_endpoint_are_allowed_under_it_and_nothing_else() {
        let e = only(&["https://hooks.example/services", "http://receiver:9000"]);
        assert!(e.allows_under("https://hooks.example/services"));
        assert!(e.allows_under("https://hooks.example/services/T1/B2/x"));
        assert!(e.allows_under("http://receiver:9000/anything"));
        for url in [
            "https://hooks.example/servicesX",
            "https://hooks.example/other",
            "http://hooks.example/services/a",
            "https://hooks.example:8443/services/a",
            "https://hooks.example.evil.example/services/a",
            "https://u@hooks.example/services/a",
            "https://hooks.example/services/a?redirect=http://169.254.169.254",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(!e.allows_under(url), "{url}");
        }
    }

    #[test]
    fn a_request_under_an_endpoint_may_carry_a_query_and_nothing_else_passes() {
        let e = only(&["https://api.datadoghq.com/api/v1", "http://prometheus:9090"]);
        assert!(e.allows_request("https://api.datadoghq.com/api/v1/query?query=sum(x)&from=1"));
        assert!(e.allows_request("http://prometheus:9090"));
        assert!(e.allows_request("http://prometheus:9090/api/v1/query?query=up#frag"));
        for url in [
            "https://api.datadoghq.com/api/v2/query?query=x",
            "https://api.datadoghq.com.evil.example/api/v1/query",
            "https://u:p@api.datadoghq.com/api/v1/query",
            "http://prometheus:9091/api/v1/query",
            "http://169.254.169.254/latest/meta-data?x=http://prometheus:9090",
            "not a url",
        ] {
            assert!(!e.allows_request(url), "{url}");
        }
    }

    #[test]
    fn an_unusable_endpoint_is_refused_when_configured() {
        assert!(Endpoints::only(["ftp://x"]).is_err());
        assert!(Endpoints::only(["http://u:p@x"]).is_err());
        assert!(!Endpoints::default().allows("http://x"));
    }
}
