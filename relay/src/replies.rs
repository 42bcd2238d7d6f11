//! What the relay says, on its way to the responder: reply commands on the
//! durable replies queue, drafts of streamed answers on core NATS. Both go
//! on a subject of the chat's replies partition, so the responder replica
//! owning the chat gets them, in the chat's order.

use std::time::Duration;

use async_nats::jetstream;
use common::conversation::short_hash;
use common::envelope::{Draft, ReplyCommand};
use common::topology::Topology;

/// Publishes reply commands and drafts; cheap to clone.
#[derive(Clone)]
pub struct Replies {
    js: jetstream::Context,
    nats: async_nats::Client,
    topology: Topology,
}

impl Replies {
    pub fn new(js: jetstream::Context, nats: async_nats::Client, topology: Topology) -> Self {
        Self { js, nats, topology }
    }

    /// The largest message NATS takes (its server's `max_payload`).
    pub fn max_payload(&self) -> usize {
        self.nats.max_payload()
    }

    /// Publishes a reply command, trying three times within about a second
    /// (a NATS leader change); not again when retrying cannot help.
    pub async fn publish(&self, command: &ReplyCommand) -> Result<(), PublishError> {
        let subject = self.topology.reply_subject(&command.channel, &short_hash(&[command.chat_id.as_bytes()]));
        let payload: bytes::Bytes = serde_json::to_vec(command).map_err(PublishError::Encode)?.into();
        let mut last = PublishError::Failed("not tried".into());
        for pause in [0u64, 200, 1000] {
            // No sleep before the first try: tokio rounds even a zero sleep up to its 1 ms tick.
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let mut headers = command.headers();
            common::telemetry::inject_nats(&mut headers);
            last = match self.js.publish_with_headers(subject.clone(), headers, payload.clone()).await {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(e) => PublishError::Failed(e.to_string()),
                },
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                    return Err(PublishError::TooLarge { bytes: payload.len(), max: self.nats.max_payload() })
                }
                Err(e) => PublishError::Failed(e.to_string()),
            };
        }
        Err(last)
    }

    /// Publishes a draft of a streamed answer, once: a lost one costs
    /// nothing (the next carries the whole text so far).
    pub async fn publish_draft(&self, draft: &Draft) {
        let subject = self.topology.draft_subject(&draft.channel, &short_hash(&[draft.chat_id.as_bytes()]));
        let payload = match serde_json::to_vec(draft) {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "cannot encode a draft"),
        };
        let mut headers = draft.headers();
        common::telemetry::inject_nats(&mut headers);
        if let Err(e) = self.nats.publish_with_headers(subject, headers, payload.into()).await {
            tracing::debug!(error = %e, "cannot publish a draft (the next one carries the whole text)");
        }
    }
}

/// Why a reply command was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Over NATS's `max_payload` even after `fit_reply`: only a question
    /// card that large could do it. Retrying cannot help.
    #[error("the reply command is {bytes} bytes, over NATS's max_payload of {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("the reply command cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// NATS did not store it (no connection, no stream leader, the stream full).
    #[error("JetStream did not store the reply command: {0}")]
    Failed(String),
}

impl PublishError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }

    /// What an operator does about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => {
                "raise max_payload in the NATS server's configuration (FastGPT's question card is that large)"
            }
            Self::Encode(_) => "report this bug with the relay's log",
            Self::Failed(_) => {
                "check that NATS and its JetStream are up and that the replies stream has room (nats.replies_max_bytes)"
            }
        }
    }
}
