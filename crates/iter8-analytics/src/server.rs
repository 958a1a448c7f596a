//! Binding, serving (HTTP, or HTTPS with optional client certificates) and shutting down
//! gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::{Listener, ListenerExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

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
    metrics_listener: Option<TcpListener>,
    app: App,
    shutdown_delay: Duration,
    connections: ConnectionLimits,
    tls: Option<tokio_rustls::rustls::ServerConfig>,
}

/// What one connection may cost: how long its request headers may take, and how many
/// connections are served at once.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    max_connections: usize,
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
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            app,
            shutdown_delay: config.shutdown_delay,
            connections: ConnectionLimits {
                header_read_timeout: config.header_read_timeout,
                max_connections: config.max_connections.get(),
            },
            tls,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// The address `/metrics` alone is served on, if one was asked for.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ServerError> {
        Ok(self
            .metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?)
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
        // Scrapes go on until the API has drained; the task ends with this function.
        let _metrics = self.metrics_listener.map(|listener| {
            let (router, limits) = (self.app.metrics_router.clone(), self.connections);
            AbortOnDrop(tokio::spawn(serve(
                listener,
                router,
                limits,
                |_| (),
                std::future::pending(),
            )))
        });
        let drain = async move {
            shutdown.await;
            readiness.shut_down();
            tracing::info!(?delay, "shutting down: not ready, then draining");
            tokio::time::sleep(delay).await;
        };
        if let Some(tls) = self.tls {
            // The connection's client certificate reaches the API's mTLS check as ConnectInfo.
            let listener = TlsListener::new(self.listener, tls)?;
            serve(
                listener,
                self.app.router,
                self.connections,
                ClientCertificate::of,
                drain,
            )
            .await;
        } else {
            // Answers are small and written at once; Nagle's delay would only add latency.
            let listener = self.listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            serve(listener, self.app.router, self.connections, |_| (), drain).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then waits for the connections
/// in flight to finish.
///
/// hyper is driven here rather than through `axum::serve` because axum gives it no timer,
/// and without one hyper's header read timeout is silently off: a client trickling its
/// headers (which no tower timeout sees, since the request does not exist yet) would hold a
/// connection forever. At most `max_connections` connections are served; the next one is
/// accepted only when one closes, so slow clients cannot exhaust memory or descriptors.
async fn serve<L, I>(
    mut listener: L,
    router: axum::Router,
    limits: ConnectionLimits,
    info: fn(&L::Io) -> I,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener,
    I: Clone + Send + Sync + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (io, _) = tokio::select! {
            connection = listener.accept() => connection,
            () = &mut shutdown => break,
        };
        let connect_info = ConnectInfo(info(&io));
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(connect_info.clone());
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    // Stop accepting, then let the requests in flight finish.
    drop(listener);
    graceful.shutdown().await;
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
