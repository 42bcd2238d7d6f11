//! Building and running ingress: bind the listener first (so tests can ask for
//! port 0 and learn the real one) and connect to NATS without waiting, so
//! health answers at once; the streams are made in the background, and until
//! they exist `/readyz` is 503 and so is a callback (Lark retries).

use std::net::SocketAddr;
use std::sync::Arc;

use async_nats::jetstream;
use common::channel::Channels;
use common::config::Settings;
use common::health::Check;
use common::service::Base;
use common::status::StatusBoard;
use common::topology::Topology;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use common::service::StartError;

use crate::publish::Publisher;
use crate::routes::{router, AppState};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    js: jetstream::Context,
    topology: Topology,
    streams: Check,
    status: StatusBoard,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let base = Base::connect("ingress", &settings, settings.ingress.listen).await?;
        let status_page = match &settings.ingress.admin_token {
            Some(token) => crate::status_page::router(crate::status_page::StatusPage {
                token: token.clone(),
                channels: settings.channels.iter().map(|c| c.id.clone()).collect(),
                store: Default::default(),
                js: base.js.clone(),
                topology: base.topology.clone(),
            }),
            None => axum::Router::new(),
        };
        let state = Arc::new(AppState {
            status: base.status.clone(),
            channels: Channels::new(&settings.channels),
            publisher: Publisher::new(
                base.client.clone(),
                base.js.clone(),
                base.topology.clone(),
                settings.ingress.publish_timeout(),
            ),
            replay_window_secs: settings.ingress.replay_window_secs,
        });
        let router = router(state, settings.ingress.body_limit_bytes).merge(base.health.router()).merge(status_page);
        tracing::info!(addr = %base.addr, channels = settings.channels.len(), "ingress listening");
        Ok(Self {
            listener: base.listener,
            router,
            addr: base.addr,
            js: base.js,
            topology: base.topology,
            streams: base.streams,
            status: base.status,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` fires; requests in flight finish first.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let (js, topology, streams, status, stop) =
            (self.js, self.topology, self.streams, self.status, shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = Base::prepare(&js, &topology, &streams, &status, &stop).await {
                tracing::error!(error = %e, "cannot create the JetStream streams");
            }
        });
        axum::serve(self.listener, self.router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
    }
}
