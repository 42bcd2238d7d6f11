//! What relay and responder share at start-up: bind the health listener,
//! connect to NATS, create the streams and buckets, bind the consumer. Each
//! step that needs NATS waits for it (not ready meanwhile) instead of failing.

use std::net::SocketAddr;

use async_nats::jetstream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::health::Health;
use crate::nats::{retry_until_ready, NatsError};
use crate::topology::{Topology, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({service}.listen): {source}")]
    Bind {
        service: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("no [[channels]] configured: the {0} has nothing to do")]
    NoChannels(&'static str),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// The pieces every consuming service starts with.
pub struct Base {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub health: Health,
    /// This service's per-channel status, flushed to KV for `/status`.
    pub status: crate::status::StatusBoard,
}

impl Base {
    pub async fn start(
        service: &'static str,
        settings: &Settings,
        listen: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartError> {
        if settings.channels.is_empty() {
            return Err(StartError::NoChannels(service));
        }
        let listener =
            TcpListener::bind(listen).await.map_err(|source| StartError::Bind { service, addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { service, addr: listen, source })?;
        let client = crate::nats::connect(&settings.nats, service).await?;
        let js = jetstream::new(client.clone());
        let topology = Topology::new(&settings.nats);
        let health = Health::new(Some(client.clone()));
        retry_until_ready("creating the JetStream streams", shutdown, || topology.ensure_streams(&js)).await?;
        let store = retry_until_ready("opening the status bucket", shutdown, || topology.status(&js)).await?;
        let status = crate::status::StatusBoard::new(service);
        status.spawn_flusher(store, shutdown.clone());
        Ok(Self { listener, addr, client, js, topology, health, status })
    }

    /// Serves `/healthz`, `/readyz`, `/metrics` until `shutdown`.
    pub fn serve_health(
        listener: TcpListener,
        health: &Health,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let router: axum::Router = health.router();
        tokio::spawn(async move {
            let served =
                axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "health listener failed");
            }
        })
    }
}

/// An HTTP client for the outside APIs: bounded connect time, pooled connections.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("lark-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Http(e.to_string()))
}
