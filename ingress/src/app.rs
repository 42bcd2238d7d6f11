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
use common::service_name::Service;
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
    limits: common::http_server::Limits,
    long_connections: crate::long_connection::LongConnections,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let settings = settings.for_service(common::service_name::Service::Ingress)?;
        let base = Base::connect(Service::Ingress.name(), &settings, settings.ingress.listen).await?;
        let board = crate::long_connection::Board::default();
        let status_page = match &settings.ingress.admin_token {
            Some(token) => crate::status_page::router(crate::status_page::StatusPage {
                token: token.clone(),
                channels: settings
                    .channels
                    .iter()
                    .map(|c| crate::status_page::PageChannel {
                        id: c.id.clone(),
                        long_connection: c.subscription == common::config::Subscription::LongConnection,
                        app_id: c.app_id.clone(),
                        lark_calls_per_month: c.lark_calls_per_month,
                    })
                    .collect(),
                store: Default::default(),
                js: base.js.clone(),
                topology: base.topology.clone(),
                connections: board.clone(),
            }),
            None => axum::Router::new(),
        };
        let publisher = Publisher::new(
            base.client.clone(),
            base.js.clone(),
            base.topology.clone(),
            settings.ingress.publish_timeout(),
        );
        let clicks = Arc::new(crate::card_action::Clicks::new(base.js.clone(), base.topology.clone()));
        let long_connections = crate::long_connection::LongConnections::new(
            &settings,
            crate::long_connection::Deps {
                publisher: publisher.clone(),
                status: base.status.clone(),
                board,
                http: common::service::http_client(settings.responder.lark_timeout())?,
                max_event_bytes: settings.ingress.body_limit_bytes,
                drain_timeout: settings.ingress.publish_timeout() + std::time::Duration::from_millis(500),
                clicks: clicks.clone(),
            },
        );
        let state = Arc::new(AppState {
            status: base.status.clone(),
            channels: Channels::new(&settings.channels),
            publisher,
            replay_window_secs: settings.ingress.replay_window_secs,
            clicks,
        });
        let files = crate::files::serve_if_enabled(&settings, &base.js, &base.topology);
        let router = router(state, settings.ingress.body_limit_bytes)
            .merge(base.health.router())
            .merge(status_page)
            .merge(files);
        tracing::info!(addr = %base.addr, channels = settings.channels.len(), "ingress listening");
        Ok(Self {
            listener: base.listener,
            router,
            addr: base.addr,
            js: base.js,
            topology: base.topology,
            streams: base.streams,
            status: base.status,
            limits: settings.ingress.http_limits(),
            long_connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` fires; requests in flight finish first, and
    /// the long connections close cleanly (their events in flight stored and
    /// acknowledged, or left to Lark's re-push) before this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let (js, topology, streams, status, stop) =
            (self.js, self.topology, self.streams, self.status, shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = Base::prepare(&js, &topology, &streams, &status, &stop).await {
                tracing::error!(error = %e, "cannot create the JetStream streams");
            }
        });
        let connections = (!self.long_connections.is_empty()).then(|| self.long_connections.spawn(shutdown.clone()));
        common::http_server::serve(self.listener, self.router, self.limits, shutdown).await;
        if let Some(connections) = connections {
            let _ = connections.await;
        }
        Ok(())
    }
}
