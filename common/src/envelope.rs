//! What travels on NATS between the services, and its headers.
//!
//! - An **event**: the decrypted Lark callback JSON, byte for byte as Lark sent
//!   it (no re-encoding on the hot path), on `{ns}.events.{partition}.{channel}.{conversation}`,
//!   with the channel and the trace context in headers and a `Nats-Msg-Id`
//!   that is the de-duplication key of the Lark message.
//! - A **reply command**: what the relay decided to say, for the responder to
//!   send. Its `Nats-Msg-Id` derives from the event, so a relay that publishes
//!   it twice (a redelivery after a crash) publishes it once.

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::conversation::short_hash;
use crate::lark::event::{EventEnvelope, MessageEvent};

/// The channel id an event or reply belongs to.
pub const CHANNEL_HEADER: &str = "Lark-Bridge-Channel";
/// W3C trace context, carried from ingress through relay to responder.
pub const TRACEPARENT_HEADER: &str = "traceparent";
pub use async_nats::header::NATS_MESSAGE_ID as MSG_ID_HEADER;

/// The de-duplication key of an accepted event: the channel plus Lark's
/// `message_id` for message events (Lark may push one message under two
/// event_ids), the channel plus `event_id` for any other event.
pub fn dedup_key(channel: &str, envelope: &EventEnvelope, message: Option<&MessageEvent>) -> String {
    match message {
        Some(m) => format!("{channel}:msg:{}", m.message.message_id),
        None => format!("{channel}:evt:{}", envelope.header.event_id),
    }
}

/// Headers of an event published by ingress.
pub fn event_headers(channel: &str, dedup_key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID_HEADER, dedup_key);
    h.insert(CHANNEL_HEADER, channel);
    h
}

/// A header's value as text, if present.
pub fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// What the relay asks the responder to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyCommand {
    pub channel: String,
    /// The de-duplication key of the event this answers ([`dedup_key`]).
    pub source: String,
    /// The Lark message being answered.
    pub reply_to: String,
    pub chat_id: String,
    /// The message was in a topic: the answer goes into it.
    #[serde(default)]
    pub in_thread: bool,
    pub kind: ReplyKind,
    pub body: ReplyBody,
}

/// Why the bridge is saying something, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// FastGPT's answer.
    Answer,
    /// The bridge's own short message (Reset confirmed, text only, a hint).
    Notice,
    /// An apology: FastGPT failed or said no.
    Apology,
}

impl ReplyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Notice => "notice",
            Self::Apology => "apology",
        }
    }
}

/// The content of a reply. Grows later into card updates for streamed answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum ReplyBody {
    /// Markdown, as FastGPT writes it.
    Markdown { text: String },
}

impl ReplyCommand {
    /// `Nats-Msg-Id` of the command: one per answered event.
    pub fn msg_id(&self) -> String {
        format!("reply:{}", self.source)
    }

    /// The Lark `uuid` of part `part` of this reply: the same on every retry and
    /// redelivery, at most 50 characters as Lark requires.
    pub fn lark_uuid(&self, part: usize) -> String {
        format!("lb-{}-{part}", short_hash(&[self.source.as_bytes()]))
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(MSG_ID_HEADER, self.msg_id().as_str());
        h.insert(CHANNEL_HEADER, self.channel.as_str());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> ReplyCommand {
        ReplyCommand {
            channel: "support".into(),
            source: "support:msg:om_1".into(),
            reply_to: "om_1".into(),
            chat_id: "oc_1".into(),
            in_thread: false,
            kind: ReplyKind::Answer,
            body: ReplyBody::Markdown { text: "**hi**".into() },
        }
    }

    #[test]
    fn reply_command_round_trips_as_json() {
        let json = serde_json::to_string(&cmd()).expect("serializes");
        assert!(json.contains(r#""format":"markdown""#), "{json}");
        assert_eq!(serde_json::from_str::<ReplyCommand>(&json).expect("parses"), cmd());
    }

    #[test]
    fn uuid_is_stable_short_and_per_part() {
        let c = cmd();
        assert_eq!(c.lark_uuid(0), c.lark_uuid(0));
        assert_ne!(c.lark_uuid(0), c.lark_uuid(1));
        assert!(c.lark_uuid(999).len() <= 50);
        assert_eq!(c.msg_id(), "reply:support:msg:om_1");
    }
}
