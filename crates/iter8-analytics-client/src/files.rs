//! Credentials as mounted from Secrets: a token file, a CA bundle, a client certificate and
//! its key. One reader for the controller and the CLI.

use std::path::{Path, PathBuf};

use crate::{AnalyticsError, ClientTls};

/// Where the credentials for the analytics service are, each optional.
#[derive(Clone, Debug, Default)]
pub struct CredentialFiles {
    /// The bearer token (a Secret's `token` key; a trailing newline is ignored).
    pub token: Option<PathBuf>,
    /// The CA bundle the service's certificate must chain to (PEM).
    pub ca: Option<PathBuf>,
    /// The client certificate chain presented for mTLS (PEM); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl CredentialFiles {
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
