//! What the three services share at start-up, in two steps:
//! [`Base::connect`] binds the listener and connects to NATS without waiting,
//! so `/healthz` and `/readyz` can answer at once (not ready meanwhile);
//! [`Base::prepare`] then waits for NATS to create the streams and the status
//! bucket, retrying, instead of failing.

use std::net::SocketAddr;

use async_nats::jetstream::{self, kv};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::health::{Check, Health};
use crate::lark::api::LarkClients;
use crate::nats::{retry_until_ready, NatsError};
use crate::status::StatusBoard;
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
    /// Boxed: a configuration error is large, and rare.
    #[error(transparent)]
    Config(Box<crate::config::ConfigError>),
}

impl From<crate::config::ConfigError> for StartError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::Config(Box::new(e))
    }
}

/// The pieces every service starts with.
pub struct Base {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub health: Health,
    /// This service's per-channel status, flushed to KV for `/status`.
    pub status: StatusBoard,
    /// Readiness: set by [`Base::prepare`] once the streams exist.
    pub streams: Check,
}

impl Base {
    /// Binds and connects; returns at once even when NATS is not up yet.
    pub async fn connect(service: &'static str, settings: &Settings, listen: SocketAddr) -> Result<Self, StartError> {
        if settings.channels.is_empty() {
            return Err(StartError::NoChannels(service));
        }
        let listener =
            TcpListener::bind(listen).await.map_err(|source| StartError::Bind { service, addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { service, addr: listen, source })?;
        let client = crate::nats::connect(&settings.nats, service).await?;
        let js = jetstream::new(client.clone());
        let health = Health::new(Some(client.clone()));
        let streams = health.check("streams_exist");
        Ok(Self {
            listener,
            addr,
            client,
            js,
            topology: Topology::new(&settings.nats),
            health,
            status: StatusBoard::new(service),
            streams,
        })
    }

    /// Waits for NATS to create the streams and the status bucket (retrying;
    /// `shutdown` ends the wait), then starts flushing the status. Returns
    /// the status bucket (it also keeps the month's Lark call counts).
    pub async fn prepare(
        js: &jetstream::Context,
        topology: &Topology,
        streams: &Check,
        status: &StatusBoard,
        shutdown: &CancellationToken,
    ) -> Result<kv::Store, StartError> {
        until_ready("creating the JetStream streams", shutdown, || topology.ensure_streams(js)).await?;
        let store = until_ready("opening the status bucket", shutdown, || topology.status(js)).await?;
        status.spawn_flusher(store.clone(), shutdown.clone());
        crate::topology::usage::spawn_sampler(js.clone(), topology.clone(), shutdown.clone());
        streams.set(true);
        Ok(store)
    }

    /// Counts `lark`'s calls durably, per app and month, until `shutdown`.
    pub fn count_lark_calls(store: kv::Store, lark: &LarkClients, shutdown: &CancellationToken) {
        crate::lark::calls::spawn_flusher(store, lark.counted(), shutdown.clone());
    }

    /// Serves `router` on `listener` until `stop` (health and metrics: the
    /// default limits of [`crate::http_server`]).
    pub fn serve(listener: TcpListener, router: axum::Router, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::http_server::serve(listener, router, crate::http_server::Limits::default(), stop))
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

/// Opens or creates what a service needs on NATS (`topology` calls),
/// waiting for NATS as [`retry_until_ready`] does; a setting NATS cannot
/// change stops the start at once.
pub async fn until_ready<T, F, Fut>(what: &str, shutdown: &CancellationToken, attempt: F) -> Result<T, TopologyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TopologyError>>,
{
    retry_until_ready(what, shutdown, TopologyError::is_permanent, attempt).await
}
