//! Binding, serving (HTTP, or HTTPS with optional client certificates) and shutting down
//! gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::app::{App, Readiness};
use crate::config::Config;
use crate::tls::{ClientCertificate, TlsError, TlsFiles, TlsListener};

/// A failure to start or run the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The TLS certificate, key or client CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The socket failed while serving.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener and the app it will serve.
pub struct Server {
    listener: TcpListener,
    app: App,
    shutdown_delay: Duration,
    tls: Option<tokio_rustls::rustls::ServerConfig>,
}

impl Server {
    /// Binds `config.listen` (port 0 picks a free port; see [`Server::local_addr`]), after
    /// loading the TLS files if `config` names them, so a bad file stops startup.
    pub async fn bind(config: &Config, app: App) -> Result<Self, ServerError> {
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(
                TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: config.tls_client_ca_file.clone(),
                }
                .server_config()?,
            ),
            _ => None,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            app,
            shutdown_delay: config.shutdown_delay,
            tls,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// The handle `/readyz` reads.
    pub fn readiness(&self) -> Readiness {
        self.app.readiness.clone()
    }

    /// Serves until `shutdown` completes, then reports not-ready for the shutdown delay, stops
    /// accepting, and waits for the requests in flight to finish.
    pub async fn run<F>(self, shutdown: F) -> Result<(), ServerError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let readiness = self.app.readiness.clone();
        let delay = self.shutdown_delay;
        let drain = async move {
            shutdown.await;
            readiness.shut_down();
            tracing::info!(?delay, "shutting down: not ready, then draining");
            tokio::time::sleep(delay).await;
        };
        if let Some(tls) = self.tls {
            // The connection's client certificate reaches the API's mTLS check as ConnectInfo.
            let listener = TlsListener::new(self.listener, tls)?;
            let service = self
                .app
                .router
                .into_make_service_with_connect_info::<ClientCertificate>();
            axum::serve(listener, service)
                .with_graceful_shutdown(drain)
                .await?;
        } else {
            // Answers are small and written at once; Nagle's delay would only add latency.
            let listener = self.listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            axum::serve(listener, self.app.router)
                .with_graceful_shutdown(drain)
                .await?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
