//! The HTTP server both fakes run: a random (or given) port, and a clean stop
//! when the fake is dropped or shut down, so parallel tests never collide or leak.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

/// A running HTTP server that stops when dropped or shut down. Shared by the fakes.
pub(crate) struct ServerHandle {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    pub(crate) async fn spawn(addr: SocketAddr, router: Router, cancel: CancellationToken) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move { stop.cancelled().await };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "fake server stopped with an error");
            }
        });
        Ok(Self { addr, cancel, task: Some(task) })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests end (at most 2 s), then returns.
    pub(crate) async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Sleeps, unless the server is shutting down.
pub(crate) async fn sleep_unless_cancelled(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = cancel.cancelled() => {}
    }
}
