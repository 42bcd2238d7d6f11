//! Dead letters: what cannot be handled ends in `{ns}_dead` with the reason
//! and the original message, never silently. Kept 14 days; `deploy/redrive`
//! (documented in the README) publishes them back once the cause is fixed.

use async_nats::jetstream;
use async_nats::HeaderMap;

use crate::envelope::{header, CHANNEL_HEADER, MSG_ID_HEADER};
use crate::topology::Topology;

/// Why the message died, in words an operator can act on.
pub const REASON_HEADER: &str = "Lark-Bridge-Dead-Reason";
/// The subject the message was on, so a re-drive puts it back there.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Lark-Bridge-Original-Subject";

/// Publishes `message` (as it was: body, subject, id) to the dead-letter
/// stream with the reason; `stage` is where it died (`relay`, `responder`).
pub async fn publish(
    js: &jetstream::Context,
    topology: &Topology,
    stage: &str,
    channel: &str,
    message: &jetstream::Message,
    reason: &str,
) -> Result<(), async_nats::Error> {
    let mut headers = HeaderMap::new();
    headers.insert(CHANNEL_HEADER, channel);
    headers.insert(REASON_HEADER, reason.replace(['\r', '\n'], " ").as_str());
    headers.insert(ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
    if let Some(id) = header(message.headers.as_ref(), MSG_ID_HEADER.as_ref()) {
        headers.insert(MSG_ID_HEADER, format!("dead:{id}").as_str());
    }
    js.publish_with_headers(topology.dead_subject(channel, stage), headers, message.payload.clone()).await?.await?;
    metrics::counter!("lark_bridge_dead_letters_total", "channel" => channel.to_owned(), "stage" => stage.to_owned())
        .increment(1);
    Ok(())
}
