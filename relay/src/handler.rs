//! One event, from NATS message to published reply command: the relay's
//! steps in order (the decisions themselves are `crate::decision`'s).
//!
//! 1. A click, a welcome, a user's message, or something to ignore
//!    (another event type, a message an app sent)?
//! 2. Already answered (a Lark re-push, hours later)? Done.
//! 3. `Reset`, a bare @bot, a non-text message: a notice, FastGPT not called.
//! 4. Otherwise ask FastGPT under the conversation's chatId (`crate::ask`);
//!    a transient failure is retried by redelivery with backoff, a refusal
//!    or the last failed attempt becomes an apology naming the cause.
//! 5. Publish the reply command and record the event as answered
//!    (`crate::conclude`), then ack (the worker does).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, Message};
use common::channel::{Channel, Channels};
use common::config::RelaySettings;
use common::conversation::ConversationKey;
use common::envelope::{dedup_key, header, ReplyBody, ReplyCommand, ReplyKind, CHANNEL_HEADER};
use common::lark::api::LarkClients;
use common::lark::event::{EventEnvelope, MessageEvent};
use common::topology::Topology;
use common::worker::{Handler, Outcome};
use tracing::Instrument;

use crate::attachments::Attachments;
use crate::decision::{classify, while_a_card_waits, Incoming};
use crate::fastgpt::FastGpt;
use crate::questions::Questions;
use crate::replies::Replies;
use crate::sessions::Sessions;

pub struct Relay {
    pub channels: Channels,
    pub lark: LarkClients,
    pub fastgpt: FastGpt,
    pub sessions: Sessions,
    pub handled: kv::Store,
    pub js: jetstream::Context,
    pub topology: Topology,
    /// Reply commands and drafts, to the responder owning the chat.
    pub replies: Replies,
    pub settings: RelaySettings,
    pub status: common::status::StatusBoard,
    /// The images and files of messages (download, sniff, store, sign).
    pub attachments: Attachments,
    /// Question cards waiting for a click.
    pub questions: Questions,
    /// Each app's Lark calls this month, against its budget.
    pub lark_usage: common::lark::calls::UsageCache,
    /// Answers whose reply command was not stored, for the next attempt.
    pub unsent: crate::unsent::Unsent,
}

impl Handler for Relay {
    async fn handle(&self, message: &Message, attempt: u32) -> Outcome {
        let channel_id = self.channel_of(message);
        let span = tracing::info_span!(
            "relay.event",
            channel = %channel_id,
            trace_id = tracing::field::Empty,
            event_id = tracing::field::Empty,
            message_id = tracing::field::Empty,
            conversation = tracing::field::Empty,
            attempt
        );
        common::telemetry::continue_trace(&span, message.headers.as_ref());
        self.handle_event(message, &channel_id, attempt).instrument(span).await
    }

    async fn give_up(&self, message: &Message, attempt: u32) -> Outcome {
        let channel = self.channel_of(message);
        let reason = format!(
            "still failing after {attempt} attempts (relay.max_attempts); the relay's log has each failure (most likely a NATS bucket not answering). Fix: check NATS and JetStream, then redrive"
        );
        self.dead(message, &channel, &reason).await
    }
}

impl Relay {
    /// The channel an event came in on: its header, or its subject.
    fn channel_of(&self, message: &Message) -> String {
        header(message.headers.as_ref(), CHANNEL_HEADER)
            .map(str::to_owned)
            .or_else(|| self.topology.parse(&message.subject).map(|s| s.channel().to_owned()))
            .unwrap_or_default()
    }

    async fn handle_event(&self, message: &Message, channel_id: &str, attempt: u32) -> Outcome {
        let Some(channel) = self.channels.get(channel_id).cloned() else {
            return self
                .dead(message, channel_id, &format!("no channel {channel_id:?} in this relay's configuration"))
                .await;
        };
        let envelope: EventEnvelope = match serde_json::from_slice(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                return self.dead(message, channel_id, &format!("the event is not a Lark schema 2.0 event: {e}")).await
            }
        };
        tracing::Span::current().record("event_id", envelope.header.event_id.as_str());
        match classify(&envelope) {
            Incoming::Click(action) => self.handle_click(message, &channel, &envelope, action, attempt).await,
            Incoming::Welcome => self.handle_welcome(&channel, &envelope, attempt).await,
            Incoming::Message(event) => self.handle_message(message, &channel, &envelope, &event, attempt).await,
            Incoming::Ignored(why) => {
                tracing::debug!(event_type = %envelope.header.event_type, "{why}");
                Outcome::Done
            }
            Incoming::Malformed(reason) => self.dead(message, channel_id, &reason).await,
        }
    }

    /// A user's message: answered once, whatever Lark or NATS re-delivers.
    async fn handle_message(
        &self,
        message: &Message,
        channel: &Arc<Channel>,
        envelope: &EventEnvelope,
        event: &MessageEvent,
        attempt: u32,
    ) -> Outcome {
        let source = dedup_key(&channel.id, envelope, Some(event));
        let handled_key = match self.unanswered(&channel.id, &source).await {
            Ok(key) => key,
            Err(done_or_retry) => return done_or_retry,
        };
        tracing::Span::current().record("message_id", event.message.message_id.as_str());
        let conversation = ConversationKey::of(event);
        tracing::Span::current().record("conversation", conversation.describe().as_str());

        let mut command = ReplyCommand {
            channel: channel.id.clone(),
            source,
            reply_to: event.message.message_id.clone(),
            chat_id: event.message.chat_id.clone(),
            in_thread: event.message.thread_id.as_deref().is_some_and(|t| !t.is_empty()),
            kind: ReplyKind::Answer,
            body: ReplyBody::markdown(String::new()),
        };
        if let Some(done) = self.conclude_kept(message, attempt, &mut command, &handled_key).await {
            return done;
        }
        let waiting = match self.questions.get(&channel.id, &conversation.token()).await {
            Ok(w) => w.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the conversation's question card; retrying");
                return Outcome::Retry(Duration::from_secs(1));
            }
        };
        let mut decision = match self.answer_message(channel, event, &conversation, attempt, &command).await {
            Ok(d) => d,
            Err(retry) => return retry,
        };
        let token = conversation.token();
        let closing = while_a_card_waits(&mut decision, waiting).then_some(token.as_str());
        self.conclude(message, attempt, &mut command, &handled_key, decision, closing).await
    }
}
