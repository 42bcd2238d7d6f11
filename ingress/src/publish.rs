//! The durable publish: an event is accepted only once JetStream has stored it
//! (the publish acknowledgement), within a deadline short enough for Lark's
//! 3-second window. A `Nats-Msg-Id` equal to the de-duplication key makes a
//! re-push inside the stream's duplicate window a no-op.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::envelope::event_headers;
use common::topology::Topology;

use crate::callback::VerifiedEvent;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to NATS (Lark will retry)")]
    Disconnected,
    #[error("JetStream did not acknowledge within {0:?} (is NATS up? Lark will retry)")]
    Timeout(Duration),
    #[error("JetStream refused the publish: {0} (Lark will retry)")]
    Refused(String),
}

impl PublishError {
    /// What an operator does about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Self::Disconnected | Self::Timeout(_) => "check NATS: is nats-server up, with JetStream? (ingress --check)",
            Self::Refused(_) => {
                "JetStream refused the event: when the events stream is full, let the relay drain it or raise \
                 nats.events_max_bytes (ingress --check shows each stream's use)"
            }
        }
    }
}

/// What JetStream said.
#[derive(Debug)]
pub struct Published {
    pub sequence: u64,
    /// Already stored under the same key (a re-push).
    pub duplicate: bool,
    pub elapsed: Duration,
}

#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    topology: Topology,
    timeout: Duration,
}

impl Publisher {
    pub fn new(client: async_nats::Client, js: jetstream::Context, topology: Topology, timeout: Duration) -> Self {
        Self { client, js, topology, timeout }
    }

    pub async fn publish(&self, channel: &str, event: &VerifiedEvent) -> Result<Published, PublishError> {
        let started = Instant::now();
        // While disconnected, answer at once: Lark retries, and no request
        // piles up waiting for a server that is not there.
        if !common::nats::is_connected(&self.client) {
            return Err(PublishError::Disconnected);
        }
        let subject = self.topology.event_subject(channel, &event.subject_token);
        let mut headers = event_headers(channel, &event.dedup_key);
        common::telemetry::inject_nats(&mut headers);
        let payload = event.plain.clone();
        let attempt = async {
            let ack_future = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| PublishError::Refused(e.to_string()))?;
            ack_future.await.map_err(|e| PublishError::Refused(e.to_string()))
        };
        let ack =
            tokio::time::timeout(self.timeout, attempt).await.map_err(|_| PublishError::Timeout(self.timeout))??;
        Ok(Published { sequence: ack.sequence, duplicate: ack.duplicate, elapsed: started.elapsed() })
    }
}
