//! A network partition on loopback: a TCP proxy whose traffic can be cut and restored.
//!
//! While cut, nothing crosses in either direction and new connections wait: bytes stay in the
//! senders' socket buffers, exactly as when packets are dropped and TCP keeps retransmitting.
//! The peers stay alive and their connections stay open; when the partition heals, what was
//! queued is delivered in order. A process behind it is alive but cut off.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy to one upstream address that can be cut off and restored.
pub struct Partition {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Partition {
    /// Starts forwarding a fresh loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the partition proxy")?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let state = cut.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((downstream, _)) = listener.accept().await {
                let mut state = state.clone();
                tokio::spawn(async move {
                    if passable(&mut state).await.is_err() {
                        return;
                    }
                    let Ok(upstream) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (down_read, down_write) = downstream.into_split();
                    let (up_read, up_write) = upstream.into_split();
                    let there = tokio::spawn(pump(down_read, up_write, state.clone()));
                    pump(up_read, down_write, state).await;
                    there.abort();
                });
            }
        });
        Ok(Self { addr, cut, accept })
    }

    /// The address to connect to instead of the upstream one.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the traffic (`true`) or restores it (`false`).
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Waits until traffic may pass; an error when the proxy is gone.
async fn passable(state: &mut watch::Receiver<bool>) -> Result<(), watch::error::RecvError> {
    state.wait_for(|cut| !cut).await.map(|_| ())
}

/// Copies one direction, holding still (neither reading nor writing) while cut.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut state: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if passable(&mut state).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just as the cut began wait for the partition to heal.
        if passable(&mut state).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
