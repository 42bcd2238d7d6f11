//! Building and running the responder: health listener, NATS, topology, then
//! the shared pull loop (`common::worker`) with the [`Responder`] handler. The
//! worker leases partitions of the replies queue (by chat); the per-app
//! budget follows the share of partitions this replica holds
//! ([`crate::budget`]), and the drafts of those partitions' cards come here
//! ([`crate::drafts`]).

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

use crate::budget::{Budget, Limits};
use crate::card_state::Cards;
use crate::drafts::{Drafts, Streams};
use crate::handler::Responder;
use crate::pacing::Pacing;

pub struct Application {
    addr: SocketAddr,
    health: common::health::Health,
    health_stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    worker: Worker<Responder>,
    pacing: Pacing,
    budget: Budget,
    /// Draft updates of streaming cards, with their NATS client and names.
    drafts: (Arc<Drafts>, async_nats::Client, common::topology::Topology),
}

impl Application {
    /// `shutdown` also ends the wait for NATS at start.
    pub async fn build(settings: Settings, shutdown: &CancellationToken) -> Result<Self, StartError> {
        let settings = settings.for_service(common::service_name::Service::Responder)?;
        let base = Base::connect(Service::Responder.name(), &settings, settings.responder.listen).await?;
        // Health answers from now on; readiness waits for the topology and the consumer.
        let health_stop = CancellationToken::new();
        let server = Base::serve(base.listener, base.health.router(), health_stop.clone());
        let (js, topology) = (&base.js, &base.topology);
        let status_store = Base::prepare(js, topology, &base.streams, &base.status, shutdown).await?;
        let consumers = until_ready("binding the responder consumers", shutdown, || {
            topology.partition_consumers(js, Queue::Replies, ACK_WAIT)
        })
        .await?;
        let stream = retry_until_ready(
            "finding the replies stream",
            shutdown,
            |_| false,
            || async { js.get_stream(topology.replies_stream()).await },
        )
        .await
        .map_err(|e| TopologyError::Stream { name: topology.replies_stream(), source: e.into() })?;
        let leases = until_ready("opening the leases bucket", shutdown, || topology.leases(js, LEASE_TTL)).await?;
        let attempts = until_ready("opening the attempts bucket", shutdown, || topology.attempts(js)).await?;
        let cards = Cards::new(until_ready("opening the cards bucket", shutdown, || topology.cards(js)).await?);

        let channels = Channels::new(&settings.channels);
        let r = &settings.responder;
        // Nothing held yet: nothing to spend until the leases say more.
        let budget = Budget::new(Limits { per_second: r.app_per_second, per_minute: r.app_per_minute });
        let pacing = Pacing::new(r.per_chat_per_second, budget.clone());
        let lark = LarkClients::new(http_client(r.lark_timeout())?, &channels);
        Base::count_lark_calls(status_store, &lark, shutdown);
        let streams = Streams::default();
        let drafts = Arc::new(Drafts {
            lark: lark.clone(),
            cards: cards.clone(),
            streams: streams.clone(),
            budget: budget.clone(),
            floor: r.stream_update(),
        });
        let responder = Responder {
            lark,
            streams,
            budget: budget.clone(),
            pacing: pacing.clone(),
            js: js.clone(),
            topology: topology.clone(),
            max_attempts: r.max_attempts,
            status: base.status.clone(),
            shown: Default::default(),
            cards,
            cardkit_refused: Default::default(),
        };
        let worker = Worker {
            name: Service::Responder.name(),
            consumers,
            stream,
            leases,
            attempts,
            handler: Arc::new(responder),
            max_attempts: r.max_attempts,
            max_in_flight: r.max_in_flight,
            grace: r.shutdown_grace(),
            share: tokio::sync::watch::Sender::new(Share::default()),
        };
        tracing::info!(addr = %base.addr, "responder ready");
        let (addr, health) = (base.addr, base.health);
        let drafts = (drafts, base.client.clone(), topology.clone());
        Ok(Self { addr, health, health_stop, server, worker, pacing, budget, drafts })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let bound = self.health.check("consumer_bound");
        let pacing = self.pacing.clone();
        let janitor = {
            let pacing = pacing.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    every.tick().await;
                    pacing.forget_idle();
                }
            })
        };
        // The per-app limits follow this replica's share of the partitions.
        let mut shares = self.worker.share.subscribe();
        let budget = self.budget.clone();
        let follow = tokio::spawn(async move {
            while shares.changed().await.is_ok() {
                let share = *shares.borrow_and_update();
                budget.set_share(share);
                tracing::info!(partitions = share.held, of = share.of, "per-app limits follow the partitions held");
            }
        });
        let (drafts, client, topology) = self.drafts;
        let drafts = tokio::spawn(drafts.run(client, topology, self.worker.share.subscribe(), shutdown.clone()));
        self.worker.run(shutdown, bound).await;
        let _ = drafts.await;
        janitor.abort();
        follow.abort();
        self.health_stop.cancel();
        let _ = self.server.await;
    }
}
