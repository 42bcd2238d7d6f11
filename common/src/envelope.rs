//! What travels on NATS between the services, and its headers.
//!
//! - An **event**: the decrypted Lark callback JSON, byte for byte as Lark sent
//!   it (no re-encoding on the hot path), on `{ns}.events.{partition}.{channel}.{conversation}`,
//!   with the channel and the trace context in headers and a `Nats-Msg-Id`
//!   that is the de-duplication key of the Lark message.
//! - A **reply command**: what the relay decided to say, for the responder to
//!   send. Its `Nats-Msg-Id` derives from the event, so a relay that publishes
//!   it twice (a redelivery after a crash) publishes it once.
//! - A **draft**: the text of a streamed answer so far, for the responder to
//!   show in the answer's card. Core NATS, not JetStream: each draft carries
//!   the whole text so far, so a lost one costs nothing; the final answer is
//!   still a durable reply command.

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::conversation::short_hash;
use crate::lark::event::{EventEnvelope, MessageEvent};

/// The channel id an event or reply belongs to.
pub const CHANNEL_HEADER: &str = "Lark-Bridge-Channel";
/// W3C trace context, carried from ingress through relay to responder.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// On a reply: when the event it answers was stored (Unix milliseconds), so
/// the responder times the whole answer (`crate::status::WORK_SINCE`).
pub const EVENT_AT_HEADER: &str = "Lark-Bridge-Event-At";
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

/// The de-duplication key of a click on question card `question`: one
/// answer per question, however often or wherever it is clicked.
pub fn click_dedup_key(channel: &str, question: &str) -> String {
    format!("{channel}:click:{question}")
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

/// The content of a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum ReplyBody {
    /// Markdown, as FastGPT writes it: the whole answer (or the final one of
    /// a streamed answer); then, when FastGPT stopped to ask the user, the
    /// question's card.
    Markdown {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        question: Option<crate::question::Question>,
        /// The sources and feedback buttons of the final card (none for
        /// notices and apologies).
        #[serde(default, skip_serializing_if = "crate::answer::Extras::is_empty")]
        extras: crate::answer::Extras,
    },
    /// FastGPT's first words of a streamed answer: the responder creates the
    /// answer's card and shows it. It travels the durable replies queue like
    /// any message, so the chat's order and Lark's message limits hold; the
    /// drafts that follow only update the card.
    CardStart {
        text: String,
        /// The draft version this text is ([`Draft::version`]).
        run: u64,
        /// When FastGPT's first words reached the relay (Unix ms).
        first_text_at: u64,
    },
}

impl ReplyBody {
    /// Markdown text alone: no question card, no sources or feedback buttons
    /// (a notice, an apology, or an answer before its extras are known).
    pub fn markdown(text: impl Into<String>) -> Self {
        ReplyBody::Markdown { text: text.into(), question: None, extras: Default::default() }
    }
}

impl ReplyCommand {
    /// `Nats-Msg-Id` of the command: one answer and one card start per
    /// answered event.
    pub fn msg_id(&self) -> String {
        match self.body {
            ReplyBody::Markdown { .. } => format!("reply:{}", self.source),
            ReplyBody::CardStart { .. } => format!("card:{}", self.source),
        }
    }

    /// The draft of this answer at `version` with `text`.
    pub fn draft(&self, (run, n): (u64, u64), first_text_at: u64, text: &str) -> Draft {
        Draft {
            channel: self.channel.clone(),
            source: self.source.clone(),
            reply_to: self.reply_to.clone(),
            chat_id: self.chat_id.clone(),
            in_thread: self.in_thread,
            run,
            n,
            first_text_at,
            text: truncate_at_char(text, DRAFT_MAX_TEXT).to_owned(),
        }
    }

    /// The Lark `uuid` of part `part` of this reply: the same on every retry and
    /// redelivery, at most 50 characters as Lark requires.
    pub fn lark_uuid(&self, part: usize) -> String {
        reply_uuid(&self.source, part)
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(MSG_ID_HEADER, self.msg_id().as_str());
        h.insert(CHANNEL_HEADER, self.channel.as_str());
        if let Some(ms) = crate::status::work_since()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
        {
            h.insert(EVENT_AT_HEADER, ms.to_string().as_str());
        }
        h
    }
}

/// The Lark `uuid` of part `part` of the answer to `source`: a streamed card
/// and the final reply share it, so Lark shows the first part once whichever
/// sends it.
pub fn reply_uuid(source: &str, part: usize) -> String {
    format!("lb-{}-{part}", short_hash(&[source.as_bytes()]))
}

/// The most of one answer the bridge shows in Lark: about 20 cards (a card
/// holds about 28 KB, `responder::render`), 18 at the least. A longer answer
/// is cut here by the relay, with a line saying so: more is no longer read
/// in a chat, floods it for minutes under Lark's per-chat limit, and could
/// not travel one NATS message (1 MB by default). Cut, every answer is one
/// reply command, so its order, its Lark `uuid`s and a streaming card's
/// ending need nothing more.
pub const MAX_REPLY_TEXT: usize = 512 * 1024;

/// The longest text a draft carries: a card holds about this much (the rest
/// of a longer answer follows the card as further messages, sent with the
/// final answer), so a longer draft would show nothing more.
pub const DRAFT_MAX_TEXT: usize = 30 * 1024;

/// A streamed answer so far (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub channel: String,
    /// The de-duplication key of the event being answered: names the card.
    pub source: String,
    pub reply_to: String,
    pub chat_id: String,
    #[serde(default)]
    pub in_thread: bool,
    /// When this attempt at the question started (Unix ms): an attempt after
    /// a crash or a retry writes over an earlier attempt's drafts.
    pub run: u64,
    /// Rises with each draft of one attempt: an older draft arriving late is
    /// not shown over a newer one.
    pub n: u64,
    /// When FastGPT's first words arrived at the relay (Unix ms): the
    /// responder measures the time to the first visible text from it.
    pub first_text_at: u64,
    /// The answer so far, at most [`DRAFT_MAX_TEXT`] bytes.
    pub text: String,
}

impl Draft {
    /// Orders drafts of one answer: a later attempt, then a later draft.
    pub fn version(&self) -> (u64, u64) {
        (self.run, self.n)
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CHANNEL_HEADER, self.channel.as_str());
        h
    }
}

/// Now, in Unix milliseconds: the clock of draft versions and card times,
/// compared across services.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncate_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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
            body: ReplyBody::markdown("**hi**"),
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
        assert_eq!(c.lark_uuid(0), reply_uuid("support:msg:om_1", 0));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("héllo", 3), "hé");
        assert_eq!(truncate_at_char("hi", 10), "hi");
    }
}
