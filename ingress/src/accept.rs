//! Storing a verified event, the one step both ways in share (the Request
//! URL and the long connection): the durable publish, its metrics, the log
//! line and the status board. The caller turns the outcome into its answer
//! (HTTP 200/503, or an acknowledgement frame with code 200/500).

use common::channel::Channel;
use common::lark::event::event_type_label;
use common::status::StatusBoard;

use crate::callback::VerifiedEvent;
use crate::publish::{PublishError, Published, Publisher};

/// How the event came in: a field of the log lines (the metrics stay as they
/// were; the long connection has its own, `lark_bridge_ingress_long_connection_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Webhook,
    LongConnection,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::LongConnection => "long_connection",
        }
    }
}

/// Publishes `event` and records what happened. `Ok` once JetStream has it
/// (a re-push already stored is `Ok` too, with `duplicate` set).
pub async fn store(
    publisher: &Publisher,
    status: &StatusBoard,
    channel: &Channel,
    event: &VerifiedEvent,
    via: Via,
) -> Result<Published, PublishError> {
    match publisher.publish(&channel.id, event).await {
        Ok(published) => {
            metrics::histogram!(common::metric_names::INGRESS_PUBLISH_SECONDS).record(published.elapsed.as_secs_f64());
            status.ok(&channel.id);
            if published.duplicate {
                metrics::counter!(common::metric_names::INGRESS_DUPLICATES_TOTAL, "channel" => channel.id.clone())
                    .increment(1);
                tracing::info!(via = via.label(), "event already accepted (a re-push): not stored twice");
            } else {
                metrics::counter!(common::metric_names::INGRESS_ACCEPTED_TOTAL, "channel" => channel.id.clone(), "event_type" => event_type_label(&event.envelope.header.event_type))
                    .increment(1);
                tracing::info!(
                    event_type = %event.envelope.header.event_type,
                    sequence = published.sequence,
                    via = via.label(),
                    "event accepted"
                );
            }
            Ok(published)
        }
        Err(e) => {
            metrics::counter!(common::metric_names::INGRESS_REJECTED_TOTAL, "reason" => "publish_failed", "channel" => channel.id.clone())
                .increment(1);
            tracing::error!(error = %e, via = via.label(), "event not stored; Lark will push it again");
            status.error(&channel.id, e.to_string(), e.fix());
            Err(e)
        }
    }
}
