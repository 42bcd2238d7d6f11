//! The long connection (channel `subscription = "long_connection"`): instead
//! of Lark posting to a public Request URL, the ingress dials out to Lark over
//! WebSockets and receives the events on them. It lives beside the HTTP route
//! and shares its path from "plain schema 2.0 JSON" on
//! ([`crate::callback::accept_plain`], [`crate::accept::store`]): one set of
//! checks, one de-duplication key, one durable publish, whichever way an
//! event came.
//!
//! - [`connection`]: one connection's life (endpoint, handshake, read loop,
//!   pings, silence, clean close at shutdown) and its reconnects.
//! - [`handler`]: one data frame (its fragments already joined by the reader
//!   in [`connection`]): check, store, acknowledge.
//! - [`backoff`]: when to dial again.
//! - [`board`]: what `/status` shows of the connections of this replica.
//! - [`probe`]: `ingress --check` opens one connection and closes it.
//!
//! Each replica holds `ingress.long_connections_per_channel` connections per
//! long-connection channel; Lark gives each event to one of an app's
//! connections, and allows 50 per app. Readiness follows NATS only: a replica
//! without a connection to Lark still serves its Request URLs, and Lark's
//! state shows in metrics, `/status` and `--check` instead.

pub mod backoff;
pub mod board;
pub mod connection;
pub mod handler;
pub mod probe;

use std::sync::Arc;
use std::time::Duration;

use common::channel::Channel;
use common::config::{Settings, Subscription};
use common::status::StatusBoard;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use board::Board;

use crate::publish::Publisher;

/// What every connection of this replica shares.
#[derive(Clone)]
pub struct Deps {
    pub publisher: Publisher,
    pub status: StatusBoard,
    pub board: Board,
    /// For the endpoint call.
    pub http: reqwest::Client,
    /// The largest event accepted (`ingress.body_limit_bytes`, as on the Request URL).
    pub max_event_bytes: usize,
    /// How long frames in flight may still be stored and acknowledged at
    /// shutdown before the connection closes (Lark pushes the rest again).
    pub drain_timeout: Duration,
    /// Clicks on question cards.
    pub clicks: std::sync::Arc<crate::card_action::Clicks>,
}

/// The long-connection channels of a configuration, and how many
/// connections each gets.
pub struct LongConnections {
    channels: Vec<Arc<Channel>>,
    per_channel: usize,
    deps: Deps,
}

impl LongConnections {
    pub fn new(settings: &Settings, deps: Deps) -> Self {
        let channels: Vec<Arc<Channel>> = settings
            .channels
            .iter()
            .filter(|c| c.subscription == Subscription::LongConnection)
            .map(|c| Arc::new(Channel::new(c)))
            .collect();
        for c in &channels {
            deps.board.expect(&c.id, settings.ingress.long_connections_per_channel);
            // Shown as 0 from the start, so "never connected" is a series
            // (an alert on `< 1` sees it), not an absent one.
            metrics::gauge!(common::metric_names::INGRESS_LONG_CONNECTIONS_UP, "channel" => c.id.clone()).set(0.0);
        }
        Self { channels, per_channel: settings.ingress.long_connections_per_channel, deps }
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Runs every connection until `shutdown`; the task ends once each has
    /// closed cleanly (events in flight stored and acknowledged, or left to
    /// Lark's re-push).
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let mut set = JoinSet::new();
        for channel in &self.channels {
            tracing::info!(channel = %channel.id, connections = self.per_channel, "opening the long connection to Lark");
            for index in 0..self.per_channel {
                set.spawn(connection::run(channel.clone(), index, self.deps.clone(), shutdown.clone()));
            }
        }
        tokio::spawn(async move { while set.join_next().await.is_some() {} })
    }
}
