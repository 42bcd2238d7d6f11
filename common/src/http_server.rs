//! The HTTP server of every service, hardened for a public port: the ingress
//! faces the Internet, and `axum::serve` has no timeouts at all.
//!
//! - **Header timeout**: a connection must send a request's headers within
//!   `header_timeout`, and an idle keep-alive connection its next request
//!   (hyper's header-read timer also runs while a connection waits idle), or
//!   it is closed: no slowloris, no idle descriptors held forever.
//! - **Request timeout**: the whole request, body included, within
//!   `request_timeout`, else 408: a body trickled in a byte at a time is cut.
//! - **Connection cap**: at most `max_connections` served at once, kept under
//!   the open-file limit (raised to its hard limit at start); past it, new
//!   connections wait in the kernel's backlog instead of taking the
//!   descriptors that NATS and real callbacks need.
//! - **Shutdown**: stop accepting, ask every connection to finish its
//!   request in flight, and after `grace` drop those that still hold on, so
//!   one stuck client cannot keep SIGTERM from finishing.
//!
//! HTTP/1.1 only: what Lark, reverse proxies and Kubernetes probes speak.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutLayer;

/// Descriptors kept free for everything but client connections: NATS, the
/// outgoing HTTP pools, logs.
const RESERVED_FDS: u64 = 64;

/// The limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    /// For the internal ports of relay and responder (health and metrics).
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), request_timeout: Duration::from_secs(15), max_connections: 256 }
    }
}

/// How long connections may finish their requests after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Raises the soft open-file limit to the hard one and returns how many
/// connections fit under it next to [`RESERVED_FDS`], at most `wanted`.
fn connection_cap(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the open-file limit");
            return wanted;
        }
    };
    let fit = limit.saturating_sub(RESERVED_FDS).max(8);
    let cap = wanted.min(usize::try_from(fit).unwrap_or(usize::MAX));
    if cap < wanted {
        tracing::warn!(
            wanted,
            cap,
            open_file_limit = limit,
            "serving fewer connections than max_connections: the open-file limit is lower (raise `ulimit -n`)"
        );
    }
    cap
}

/// Serves `router` on `listener` until `shutdown`, within `limits`.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    let router = router.layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout));
    let permits = Arc::new(Semaphore::new(connection_cap(limits.max_connections)));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, service, limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    // Every connection was told to finish; give them the grace, then drop them.
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!(still_open = connections.len(), "closing connections that did not finish in time");
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let service = TowerToHyperService::new(router.map_request(|req: Request<Incoming>| req.map(axum::body::Body::new)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts and resets by clients: worth a debug line, not a warning.
        tracing::debug!(%peer, error = %e, "connection closed");
    }
}
