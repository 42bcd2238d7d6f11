//! Building and running ingress: bind the listener first (so tests can ask for
//! port 0 and learn the real one), connect to NATS, make sure the streams
//! exist (`common::service::Base`), then serve until the shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;

use common::channel::Channels;
use common::config::Settings;
use common::service::Base;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use common::service::StartError;

use crate::publish::Publisher;
use crate::routes::{router, AppState};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
}

impl Application {
    /// `shutdown` also ends the wait for NATS at start.
    pub async fn build(settings: Settings, shutdown: &CancellationToken) -> Result<Self, StartError> {
        let base = Base::start("ingress", &settings, settings.ingress.listen, shutdown).await?;
        let channels = Channels::new(&settings.channels);
        let status_page = match &settings.ingress.admin_token {
            Some(token) => {
                let store = common::nats::retry_until_ready("opening the status bucket", shutdown, || {
                    base.topology.status(&base.js)
                })
                .await?;
                crate::status_page::router(crate::status_page::StatusPage {
                    token: token.clone(),
                    channels: settings.channels.iter().map(|c| c.id.clone()).collect(),
                    store,
                    js: base.js.clone(),
                    topology: base.topology.clone(),
                })
            }
            None => axum::Router::new(),
        };
        let state = Arc::new(AppState {
            status: base.status.clone(),
            channels,
            publisher: Publisher::new(base.client, base.js, base.topology, settings.ingress.publish_timeout()),
            replay_window_secs: settings.ingress.replay_window_secs,
        });
        let router = router(state, settings.ingress.body_limit_bytes).merge(base.health.router()).merge(status_page);
        tracing::info!(addr = %base.addr, channels = settings.channels.len(), "ingress listening");
        Ok(Self { listener: base.listener, router, addr: base.addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` fires; requests in flight finish first.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
    }
}
