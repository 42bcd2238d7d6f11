//! One event, from NATS message to published reply command: the relay's
//! decisions in order.
//!
//! 1. Already answered (a Lark re-push, hours later)? Done.
//! 2. Not `im.message.receive_v1`, or sent by an app? Done, nothing said.
//! 3. `Reset`, a bare @bot, a non-text message: a notice, FastGPT not called.
//! 4. Otherwise ask FastGPT under the conversation's chatId; a transient
//!    failure is retried by redelivery with backoff, a refusal or the last
//!    failed attempt becomes an apology naming the cause.
//! 5. Publish the reply command (its `Nats-Msg-Id` makes a second publish a
//!    no-op), record the event as answered, then ack (the worker does).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, Message};
use common::channel::{Channel, Channels};
use common::config::RelaySettings;
use common::conversation::{short_hash, ConversationKey};
use common::envelope::{dedup_key, header, ReplyBody, ReplyCommand, ReplyKind, CHANNEL_HEADER};
use common::lark::api::LarkClients;
use common::lark::event::{EventEnvelope, MessageEvent};
use common::topology::Topology;
use common::worker::{backoff, Handler, Outcome};
use tracing::Instrument;

use crate::fastgpt::{Ask, FastGpt, FastGptError, Refusal};
use crate::question::{self, Question};
use crate::sessions::Sessions;
use crate::typing::Typing;

pub mod text {
    //! What the bot says on its own behalf.
    pub const RESET: &str = "New conversation started: I have forgotten our previous messages.";
    pub const EMPTY: &str =
        "Hi! Write your question in the same message as the @mention, for example: @bot How do I request leave?";
    pub const NOT_TEXT: &str = "Sorry, I can only read text messages. Please type your question.";
    pub const EMPTY_ANSWER: &str = "(FastGPT returned an empty answer.)";
}

pub struct Relay {
    pub channels: Channels,
    pub lark: LarkClients,
    pub fastgpt: FastGpt,
    pub sessions: Sessions,
    pub handled: kv::Store,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub settings: RelaySettings,
    pub status: common::status::StatusBoard,
}

/// What the relay decided to say for one message.
type Decision = (ReplyKind, String);

impl Handler for Relay {
    async fn handle(&self, message: &Message, attempt: u32) -> Outcome {
        let channel_id = header(message.headers.as_ref(), CHANNEL_HEADER)
            .map(str::to_owned)
            .or_else(|| self.topology.parse(&message.subject).map(|s| s.channel().to_owned()))
            .unwrap_or_default();
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
}

impl Relay {
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
        let event = match envelope.message_event() {
            None => {
                tracing::debug!(event_type = %envelope.header.event_type, "not a message event; acknowledged and dropped");
                return Outcome::Done;
            }
            Some(Err(e)) => {
                return self
                    .dead(message, channel_id, &format!("im.message.receive_v1 with an unexpected shape: {e}"))
                    .await
            }
            Some(Ok(ev)) => ev,
        };
        if event.sender.sender_type == "app" {
            tracing::debug!("message sent by an app; ignored (no bot loops)");
            return Outcome::Done;
        }
        let source = dedup_key(&channel.id, &envelope, Some(&event));
        let handled_key = common::topology::keys::handled(&channel.id, &source);
        match self.handled.get(&handled_key).await {
            Ok(Some(_)) => {
                metrics::counter!("lark_bridge_relay_duplicates_total", "channel" => channel.id.clone()).increment(1);
                tracing::info!(%source, "already answered (a re-push from Lark); not asked again");
                return Outcome::Done;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the answered-events record; retrying");
                return Outcome::Retry(Duration::from_secs(1));
            }
        }
        tracing::Span::current().record("message_id", event.message.message_id.as_str());
        let conversation = ConversationKey::of(&event);
        tracing::Span::current().record("conversation", conversation.describe().as_str());

        let (kind, text) = match self.decide(&channel, &event, &conversation, attempt).await {
            Ok(d) => d,
            Err(retry) => return retry,
        };
        let command = ReplyCommand {
            channel: channel.id.clone(),
            source,
            reply_to: event.message.message_id.clone(),
            chat_id: event.message.chat_id.clone(),
            in_thread: event.message.thread_id.as_deref().is_some_and(|t| !t.is_empty()),
            kind,
            body: ReplyBody::Markdown { text },
        };
        if let Err(e) = self.publish_reply(&command).await {
            tracing::warn!(error = %e, "cannot publish the reply command; retrying the event");
            return Outcome::Retry(Duration::from_secs(1));
        }
        if let Err(e) = self.handled.put(&handled_key, kind.as_str().into()).await {
            // The reply command is stored; its message id absorbs a second publish
            // within the duplicate window.
            tracing::warn!(error = %e, "cannot record the event as answered");
        }
        metrics::counter!("lark_bridge_relay_replies_total", "channel" => channel.id.clone(), "kind" => kind.as_str())
            .increment(1);
        tracing::info!(kind = kind.as_str(), "reply command published");
        Outcome::Done
    }

    /// What to say; `Err` carries the outcome when the event must be retried.
    async fn decide(
        &self,
        channel: &Arc<Channel>,
        event: &MessageEvent,
        conversation: &ConversationKey,
        attempt: u32,
    ) -> Result<Decision, Outcome> {
        let lark = self.lark.get(&channel.id).cloned();
        let bot_open_id = match &lark {
            Some(l) => match l.bot_info().await {
                Ok(info) if !info.open_id.is_empty() => Some(info.open_id.clone()),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the bot's info; mentions resolved without it");
                    None
                }
            },
            None => None,
        };
        let question = match question::read(&event.message, bot_open_id.as_deref()) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, message_type = %event.message.message_type, "unreadable message content");
                return Ok((ReplyKind::Notice, text::NOT_TEXT.into()));
            }
        };
        let text = match question {
            Question::NotText(t) => {
                tracing::info!(message_type = %t, "not a text message");
                return Ok((ReplyKind::Notice, text::NOT_TEXT.into()));
            }
            Question::Empty => return Ok((ReplyKind::Notice, text::EMPTY.into())),
            Question::Reset => {
                return match self.sessions.reset(&channel.id, conversation).await {
                    Ok(generation) => {
                        tracing::info!(generation, "conversation reset");
                        Ok((ReplyKind::Notice, text::RESET.into()))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reset the conversation; retrying");
                        Err(Outcome::Retry(Duration::from_secs(1)))
                    }
                };
            }
            Question::Ask(text) => text,
        };
        let generation = self.sessions.generation(&channel.id, conversation).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the conversation generation; retrying");
            Outcome::Retry(Duration::from_secs(1))
        })?;
        let chat_id = conversation.chat_id(&channel.id, generation);
        let custom_uid =
            format!("lark:{}:{}", channel.id, event.sender.sender_id.open_id.as_deref().unwrap_or("unknown"));
        tracing::info!(fastgpt_chat_id = %chat_id, "asking FastGPT");
        tracing::debug!(question = %text, "question text");

        let typing = lark.map(|l| Typing::start(l, &event.message.message_id, self.settings.typing_after()));
        let started = std::time::Instant::now();
        let ask_span = tracing::info_span!("fastgpt.ask", fastgpt_chat_id = %chat_id, outcome = tracing::field::Empty);
        let result = self
            .fastgpt
            .ask(channel, &Ask { chat_id: &chat_id, custom_uid: &custom_uid, text: &text })
            .instrument(ask_span.clone())
            .await;
        let elapsed = started.elapsed();
        if let Some(t) = typing {
            t.finish().await;
        }
        let outcome_label = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        ask_span.record("outcome", outcome_label);
        match &result {
            Ok(_) => self.status.ok(&channel.id),
            Err(e) => self.status.error(&channel.id, e.to_string(), e.fix()),
        }
        metrics::histogram!("lark_bridge_fastgpt_seconds", "channel" => channel.id.clone(), "outcome" => outcome_label)
            .record(elapsed.as_secs_f64());
        match result {
            Ok(answer) if answer.trim().is_empty() => {
                tracing::warn!(?elapsed, "FastGPT returned an empty answer");
                Ok((ReplyKind::Answer, text::EMPTY_ANSWER.into()))
            }
            Ok(answer) => {
                tracing::info!(?elapsed, answer_len = answer.len(), "FastGPT answered");
                Ok((ReplyKind::Answer, answer))
            }
            Err(FastGptError::Transient(detail)) if attempt < self.settings.max_attempts => {
                let delay = backoff(attempt, Duration::from_secs(60));
                metrics::counter!("lark_bridge_fastgpt_retries_total", "channel" => channel.id.clone()).increment(1);
                tracing::warn!(%detail, attempt, retry_in = ?delay, "FastGPT unavailable; will retry");
                Err(Outcome::Retry(delay))
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, "FastGPT gave no answer; apologising to the user");
                Ok((ReplyKind::Apology, apology(&e, attempt)))
            }
        }
    }

    async fn publish_reply(&self, command: &ReplyCommand) -> Result<(), async_nats::Error> {
        let subject = self.topology.reply_subject(&command.channel, &short_hash(&[command.chat_id.as_bytes()]));
        let payload = serde_json::to_vec(command)?;
        let mut last = None;
        for pause in [0u64, 200, 1000] {
            // No sleep before the first try: tokio rounds even a zero sleep up to its 1 ms tick.
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let mut headers = command.headers();
            common::telemetry::inject_nats(&mut headers);
            match self.js.publish_with_headers(subject.clone(), headers, payload.clone().into()).await {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = Some(e.into()),
                },
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or_else(|| "publish failed".into()))
    }

    async fn dead(&self, message: &Message, channel_id: &str, reason: &str) -> Outcome {
        tracing::error!(reason, "event cannot be handled; sent to the dead-letter stream");
        let channel = if channel_id.is_empty() { "unknown" } else { channel_id };
        match common::dead_letter::publish(&self.js, &self.topology, "relay", channel, message, reason).await {
            Ok(()) => Outcome::Drop,
            Err(e) => {
                tracing::warn!(error = %e, "cannot dead-letter the event; retrying");
                Outcome::Retry(Duration::from_secs(5))
            }
        }
    }
}

/// The user's apology: short, naming the kind of failure.
pub fn apology(e: &FastGptError, attempts: u32) -> String {
    match e {
        FastGptError::Transient(_) => format!(
            "Sorry, I could not get an answer: FastGPT did not respond after {attempts} attempts. Please try again in a few minutes."
        ),
        FastGptError::Refused { cause: Refusal::Auth, .. } => {
            "Sorry, I cannot answer right now: FastGPT refused this bot's API key. Please tell your administrator.".into()
        }
        FastGptError::Refused { cause: Refusal::Quota, .. } => {
            "Sorry, I cannot answer right now: the FastGPT account has run out of balance or quota. Please tell your administrator.".into()
        }
        FastGptError::Refused { cause: Refusal::Model, .. } => {
            "Sorry, I cannot answer right now: this app's AI model is not available to its FastGPT team. Please tell your administrator.".into()
        }
        FastGptError::Refused { status_text, http_status, .. } => {
            let what = if status_text.is_empty() { format!("HTTP {http_status}") } else { status_text.clone() };
            format!("Sorry, FastGPT rejected the question ({what}). Please tell your administrator.")
        }
        FastGptError::Workflow(_) => {
            "Sorry, the app's workflow failed while answering. Please try again; tell your administrator if it keeps happening.".into()
        }
    }
}
