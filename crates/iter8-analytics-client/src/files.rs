//! Credentials as mounted from Secrets: a token file, a CA bundle, a client certificate and
//! its key. One reader for the controller and the CLI.

use std::path::{Path, PathBuf};

use crate::{AnalyticsError, ClientTls};

/// Where the credentials for the analytics service are, each optional. With the `clap`
/// feature it is also the one set of command-line flags for them (`--analytics-token-file`,
/// `--analytics-ca-file`, `--analytics-client-cert-file`, `--analytics-client-key-file`, and
/// their `ITER8_ANALYTICS_*` variables), flattened into both the controller's and the CLI's
/// arguments.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct CredentialFiles {
    /// A file holding the bearer token the analytics service requires (a Secret's `token`
    /// key; a trailing newline is ignored).
    #[cfg_attr(
        feature = "clap",
        arg(long = "analytics-token-file", env = "ITER8_ANALYTICS_TOKEN_FILE")
    )]
    pub token: Option<PathBuf>,
    /// A PEM CA bundle to trust for an `https://` analytics service (instead of the system
    /// roots).
    #[cfg_attr(
        feature = "clap",
        arg(long = "analytics-ca-file", env = "ITER8_ANALYTICS_CA_FILE")
    )]
    pub ca: Option<PathBuf>,
    /// A PEM client certificate chain to present to an analytics service that requires one
    /// (mTLS); needs the key.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "analytics-client-cert-file",
            env = "ITER8_ANALYTICS_CLIENT_CERT_FILE",
            requires = "client_key"
        )
    )]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of the client certificate; needs the certificate.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "analytics-client-key-file",
            env = "ITER8_ANALYTICS_CLIENT_KEY_FILE",
            requires = "client_cert"
        )
    )]
    pub client_key: Option<PathBuf>,
}

impl CredentialFiles {
    /// Whether any credential is named.
    pub fn any(&self) -> bool {
        self.token.is_some()
            || self.ca.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
    }

    /// Reads the token and the TLS material.
    pub fn read(&self) -> Result<(Option<String>, ClientTls), AnalyticsError> {
        let token = self.token.as_deref().map(read_token).transpose()?;
        let ca_pem = self
            .ca
            .as_deref()
            .map(|p| read("the analytics CA bundle", p))
            .transpose()?;
        let identity_pem = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read("the analytics client certificate", cert)?;
                pem.push(b'\n');
                pem.extend(read("the analytics client key", key)?);
                Some(pem)
            }
            (None, None) => None,
            _ => {
                return Err(AnalyticsError::Credentials(
                    "a client certificate needs its key, and a key its certificate".into(),
                ));
            }
        };
        Ok((
            token,
            ClientTls {
                ca_pem,
                identity_pem,
            },
        ))
    }
}

/// A bearer token from a file, without the Secret file's trailing newline; an empty file is
/// an error (an empty token would be sent as no authentication at all).
pub fn read_token(path: &Path) -> Result<String, AnalyticsError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AnalyticsError::Credentials(format!(
            "reading the analytics token from {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AnalyticsError::Credentials(format!(
            "the analytics token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, AnalyticsError> {
    std::fs::read(path).map_err(|e| {
        AnalyticsError::Credentials(format!("reading {what} from {}: {e}", path.display()))
    })
}

#[cfg(all(test, feature = "clap"))]
mod flag_tests {
    use clap::Parser;

    use super::CredentialFiles;

    /// A binary's arguments as the controller and the CLI declare them: flattened.
    #[derive(Debug, Parser)]
    struct Binary {
        #[command(flatten)]
        credentials: CredentialFiles,
    }

    #[test]
    fn the_credential_flags_parse_into_credential_files() {
        let b = Binary::try_parse_from([
            "bin",
            "--analytics-token-file",
            "/t",
            "--analytics-ca-file",
            "/ca",
            "--analytics-client-cert-file",
            "/c",
            "--analytics-client-key-file",
            "/k",
        ])
        .expect("parses");
        let c = b.credentials;
        assert_eq!(c.token.as_deref(), Some(std::path::Path::new("/t")));
        assert_eq!(c.ca.as_deref(), Some(std::path::Path::new("/ca")));
        assert_eq!(c.client_cert.as_deref(), Some(std::path::Path::new("/c")));
        assert_eq!(c.client_key.as_deref(), Some(std::path::Path::new("/k")));
        assert!(c.any());
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_key_its_certificate() {
        for flag in [
            "--analytics-client-cert-file",
            "--analytics-client-key-file",
        ] {
            let e = Binary::try_parse_from(["bin", flag, "/x"]).expect_err("needs the other");
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{flag}"
            );
        }
    }
}
