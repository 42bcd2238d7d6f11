//! Building and running the relay: health listener, NATS, topology, the
//! conversation buckets, then the shared pull loop (`common::worker`) with the
//! relay's [`Relay`] handler. The worker leases partitions of the events
//! queue, so each conversation is handled by one relay replica at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use common::channel::Channels;
use common::config::Settings;
use common::lark::api::LarkClients;
use common::nats::retry_until_ready;
use common::service::{http_client, until_ready, Base};
use common::service_name::Service;
use common::topology::{Queue, TopologyError, ACK_WAIT, LEASE_TTL};
use common::worker::{Share, Worker};
use tokio_util::sync::CancellationToken;

pub use common::service::StartError;

use crate::attachments::Attachments;
use crate::fastgpt::FastGpt;
use crate::handler::Relay;
use crate::questions::Questions;
use crate::sessions::Sessions;

pub struct Application {
    addr: SocketAddr,
    health: common::health::Health,
    health_stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    worker: Worker<Relay>,
}

impl Application {
    /// `shutdown` also ends the wait for NATS at start.
    pub async fn build(settings: Settings, shutdown: &CancellationToken) -> Result<Self, StartError> {
        let settings = settings.for_service(common::service_name::Service::Relay)?;
        let base = Base::connect(Service::Relay.name(), &settings, settings.relay.listen).await?;
        // Health answers from now on; readiness waits for the topology and the consumer.
        let health_stop = CancellationToken::new();
        let server = Base::serve(base.listener, base.health.router(), health_stop.clone());
        let (js, topology) = (&base.js, &base.topology);
        let status_store = Base::prepare(js, topology, &base.streams, &base.status, shutdown).await?;
        let consumers = until_ready("binding the relay consumers", shutdown, || {
            topology.partition_consumers(js, Queue::Events, ACK_WAIT)
        })
        .await?;
        let stream = retry_until_ready(
            "finding the events stream",
            shutdown,
            |_| false,
            || async { js.get_stream(topology.events_stream()).await },
        )
        .await
        .map_err(|e| TopologyError::Stream { name: topology.events_stream(), source: e.into() })?;
        let leases = until_ready("opening the leases bucket", shutdown, || topology.leases(js, LEASE_TTL)).await?;
        let sessions = until_ready("opening the sessions bucket", shutdown, || topology.sessions(js)).await?;
        let handled = until_ready("opening the handled bucket", shutdown, || topology.handled(js)).await?;
        let attempts = until_ready("opening the attempts bucket", shutdown, || topology.attempts(js)).await?;
        let questions = until_ready("opening the questions bucket", shutdown, || topology.questions(js)).await?;
        let attachments = Attachments::open(&settings, js, topology, base.status.clone(), shutdown).await?;

        let channels = Channels::new(&settings.channels);
        // FastGPT calls carry their own (long) timeout; Lark calls a short one.
        let fastgpt_http = http_client(settings.relay.fastgpt_timeout())?;
        let lark_http = http_client(settings.responder.lark_timeout())?;
        let lark = LarkClients::new(lark_http, &channels);
        Base::count_lark_calls(status_store.clone(), &lark, shutdown);
        let relay = Relay {
            lark,
            lark_usage: common::lark::calls::UsageCache::new(status_store),
            channels,
            fastgpt: FastGpt::new(fastgpt_http, settings.relay.fastgpt_timeout()),
            sessions: Sessions::new(sessions),
            handled,
            js: js.clone(),
            topology: topology.clone(),
            replies: crate::replies::Replies::new(js.clone(), base.client.clone(), topology.clone()),
            settings: settings.relay.clone(),
            status: base.status.clone(),
            attachments,
            questions: Questions::new(questions),
            unsent: Default::default(),
        };
        let worker = Worker {
            name: Service::Relay.name(),
            consumers,
            stream,
            leases,
            attempts,
            handler: Arc::new(relay),
            max_attempts: settings.relay.max_attempts,
            max_in_flight: settings.relay.max_in_flight,
            grace: settings.relay.shutdown_grace(),
            share: tokio::sync::watch::Sender::new(Share::default()),
        };
        tracing::info!(addr = %base.addr, "relay ready");
        let (addr, health) = (base.addr, base.health);
        Ok(Self { addr, health, health_stop, server, worker })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let bound = self.health.check("consumer_bound");
        self.worker.run(shutdown, bound).await;
        self.health_stop.cancel();
        let _ = self.server.await;
    }
}
