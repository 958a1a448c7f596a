//! HTTPS for the service: the rustls server configuration from PEM files, optionally requiring
//! client certificates (mTLS), and a listener that completes handshakes off the accept loop.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its handshake; a silent one holds no slot longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// Connections accepted but not yet taken by the server (in their handshake, or handshaken
/// and waiting while the server is at its connection cap). Past this, the accept loop stops
/// accepting, so the server's connection cap bounds descriptors and memory under TLS too.
const PENDING_CONNECTIONS: usize = 256;

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which setting: certificate, key or client CA.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (e.g. a key that does not fit the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the serving certificate, its key and (for mTLS) the client CA are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to; with it, the API (`/v1/*`)
    /// requires a client certificate. `None` asks for none.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Builds the rustls server configuration (HTTP/1.1 over TLS 1.2 or 1.3, aws-lc-rs).
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let certs = read_certs("--tls-cert-file", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::File {
            what: "--tls-key-file",
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in read_certs("--tls-client-ca-file", path)? {
                    roots.add(ca).map_err(|e| TlsError::File {
                        what: "--tls-client-ca-file",
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                // Clients without a certificate finish the handshake, so kubelet's probes and
                // Prometheus still reach /healthz, /readyz and /metrics; the API refuses them
                // (`require_client_certificate`). A certificate that is presented must chain
                // to the CA, or the handshake fails.
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Reads every certificate of a PEM file; none at all is an error.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// What the TLS layer learnt about a connection's client, for the API's mTLS check.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate {
    /// The client presented a certificate, and it chains to the client CA (rustls refuses
    /// the handshake otherwise).
    pub verified: bool,
}

impl ClientCertificate {
    /// What `stream`'s handshake established.
    pub fn of(stream: &TlsStream<TcpStream>) -> Self {
        let (_, session) = stream.get_ref();
        Self {
            verified: session.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }
}

/// A listener yielding connections whose TLS handshake has completed.
///
/// Handshakes run in their own tasks, each bounded by [`HANDSHAKE_TIMEOUT`], so a slow or
/// hostile client cannot stall the accept loop; failed handshakes (a client without the
/// required certificate, plain HTTP) are logged at debug level and dropped.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(listener: TcpListener, config: ServerConfig) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor_task = tokio::spawn(accept_loop(listener, acceptor, sender));
        Ok(Self {
            accepted,
            local_addr,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Closes the listening socket once the server stops taking connections.
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(PENDING_CONNECTIONS));
    loop {
        // The semaphore is never closed.
        let Ok(slot) = pending.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(e) => {
                // As axum does: out of file descriptors and the like pass; wait a little.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // A closed channel means the server is shutting down: drop the connection.
                    let _ = accepted.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost and its key, as PEM files in `dir`.
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_config_with_and_without_client_ca() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed(dir.path(), "server");
        let files = TlsFiles {
            cert: cert.clone(),
            key,
            client_ca: None,
        };
        let config = files.server_config().expect("a server config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let mutual = TlsFiles {
            client_ca: Some(cert),
            ..files
        };
        mutual.server_config().expect("a config with a client CA");
    }

    #[test]
    fn bad_files_are_named_with_their_flag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed(dir.path(), "server");
        let (_, other_key) = self_signed(dir.path(), "other");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM\n").expect("write");

        let no_cert = TlsFiles {
            cert: empty.clone(),
            key: key.clone(),
            client_ca: None,
        };
        let err = no_cert
            .server_config()
            .expect_err("no certificate")
            .to_string();
        assert!(
            err.starts_with("--tls-cert-file") && err.contains("empty.pem"),
            "{err}"
        );

        let no_key = TlsFiles {
            cert: cert.clone(),
            key: empty.clone(),
            client_ca: None,
        };
        let err = no_key.server_config().expect_err("no key").to_string();
        assert!(err.starts_with("--tls-key-file"), "{err}");

        let bad_ca = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(dir.path().join("absent.pem")),
        };
        let err = bad_ca.server_config().expect_err("no CA file").to_string();
        assert!(err.starts_with("--tls-client-ca-file"), "{err}");

        let mismatched = TlsFiles {
            cert,
            key: other_key,
            client_ca: None,
        };
        let err = mismatched
            .server_config()
            .expect_err("a key of another certificate");
        assert!(matches!(err, TlsError::Config(_)), "{err}");
    }
}
