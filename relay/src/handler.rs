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
//!    no-op), record the event as answered, then ack (the worker does). An
//!    answer too long for the chat is cut first, with a line saying so
//!    (`fit_reply`); a publish that fails is tried up to
//!    `relay.max_attempts` with the answer kept, then apologised for and
//!    dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, Message};
use common::channel::{Channel, Channels};
use common::config::RelaySettings;
use common::conversation::{short_hash, ConversationKey};
use common::envelope::{
    dedup_key, header, truncate_at_char, ReplyBody, ReplyCommand, ReplyKind, CHANNEL_HEADER, MAX_REPLY_TEXT,
};
use common::lark::api::LarkClients;
use common::lark::card_action::CardAction;
use common::lark::event::{EventEnvelope, MessageEvent};
use common::question::Pending;
use common::service_name::Service;
use common::topology::Topology;
use common::worker::{backoff, Handler, Outcome};
use tracing::Instrument;

use crate::attachments::{Attachments, Declined};
use crate::fastgpt::{Ask, FastGpt, FastGptError, Refusal};
use crate::incoming::{self, Asked};
use crate::questions::Questions;
use crate::replies::{PublishError, Replies};
use crate::sessions::Sessions;
use crate::typing::Typing;
use crate::unsent::Kept;

pub mod text {
    //! What the bot says on its own behalf.
    pub const RESET: &str = "New conversation started: I have forgotten our previous messages.";
    pub const EMPTY: &str =
        "Hi! Write your question in the same message as the @mention, for example: @bot How do I request leave?";
    pub const NOT_TEXT: &str = "Sorry, I can only read text messages. Please type your question.";
    pub const EMPTY_ANSWER: &str = "(FastGPT returned an empty answer.)";
    pub const INTERRUPTED: &str = "**The answer was interrupted.**";
    pub const CUT: &str = "**The answer was cut here: it is too long to show in the chat.**";
    pub const UNDELIVERED: &str =
        "Sorry, I could not deliver the answer: the bridge failed to queue it. Please tell your administrator.";
    pub const NOT_A_CHOICE: &str = "The app was waiting for a choice in the card above, and your message did not match any option. Please ask again, or send Reset to start over.";
}

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

/// What the relay decided to say for one event.
pub(crate) struct Decision {
    pub kind: ReplyKind,
    pub text: String,
    /// FastGPT stopped to ask the user this: it waits for a click.
    pub pending: Option<Pending>,
    /// The answer's sources and feedback buttons (`crate::feedback`).
    pub extras: common::answer::Extras,
}

/// A decision with nothing to ask the user.
fn say(kind: ReplyKind, text: impl Into<String>) -> Decision {
    Decision { kind, text: text.into(), pending: None, extras: Default::default() }
}

/// One question to FastGPT, from a message or from a click.
pub(crate) struct Asking<'a> {
    pub chat_id: String,
    pub custom_uid: String,
    pub text: String,
    pub attachments: Vec<crate::attachments::ContentPart>,
    /// Where the Typing reaction goes while FastGPT works.
    pub typing_on: &'a str,
    /// The conversation's subject token and who may answer a question card.
    pub conversation: String,
    pub asked_by: Option<String>,
    /// A resume: the dataId of the turn it continues (FastGPT merges the
    /// answer into that turn's AI item).
    pub resumes: Option<String>,
}

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

    async fn give_up(&self, message: &Message, attempt: u32) -> Outcome {
        let channel = header(message.headers.as_ref(), CHANNEL_HEADER)
            .map(str::to_owned)
            .or_else(|| self.topology.parse(&message.subject).map(|s| s.channel().to_owned()))
            .unwrap_or_default();
        let reason = format!(
            "still failing after {attempt} attempts (relay.max_attempts); the relay's log has each failure (most likely a NATS bucket not answering). Fix: check NATS and JetStream, then redrive"
        );
        self.dead(message, &channel, &reason).await
    }
}

// A runaway streamed answer, cut at `MAX_ANSWER_BYTES`, is always cut again
// for the chat, with the line that says so.
const _: () = assert!(MAX_REPLY_TEXT < crate::fastgpt::MAX_ANSWER_BYTES);

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
        if let Some(action) = CardAction::of(&envelope) {
            return match action {
                Ok(action) => self.handle_click(message, &channel, &envelope, action, attempt).await,
                Err(e) => {
                    self.dead(message, channel_id, &format!("card.action.trigger with an unexpected shape: {e}")).await
                }
            };
        }
        if crate::welcome::is_welcome_event(&envelope.header.event_type) {
            return self.handle_welcome(&channel, &envelope, attempt).await;
        }
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
        let handled_key = match self.unanswered(&channel.id, &source).await {
            Ok(key) => key,
            Err(done_or_retry) => return done_or_retry,
        };
        tracing::Span::current().record("message_id", event.message.message_id.as_str());
        let conversation = ConversationKey::of(&event);
        tracing::Span::current().record("conversation", conversation.describe().as_str());

        let mut command = ReplyCommand {
            channel: channel.id.clone(),
            source,
            reply_to: event.message.message_id.clone(),
            chat_id: event.message.chat_id.clone(),
            in_thread: event.message.thread_id.as_deref().is_some_and(|t| !t.is_empty()),
            kind: ReplyKind::Answer,
            body: ReplyBody::Markdown { text: String::new(), question: None, extras: Default::default() },
        };
        if let Some(kept) = self.unsent.take(&handled_key) {
            tracing::info!("publishing the answer of the last attempt; FastGPT not asked again");
            let closing = kept.closing.as_deref();
            return self.conclude(message, attempt, &mut command, &handled_key, kept.decision, closing).await;
        }
        let waiting = match self.questions.get(&channel.id, &conversation.token()).await {
            Ok(w) => w.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the conversation's question card; retrying");
                return Outcome::Retry(Duration::from_secs(1));
            }
        };
        let mut decision = match self.decide(&channel, &event, &conversation, attempt, &command).await {
            Ok(d) => d,
            Err(retry) => return retry,
        };
        // FastGPT gives a message typed while its workflow waits for a
        // choice to that node: matching no option, every branch is skipped
        // and the answer is empty. Say why.
        if waiting && decision.kind == ReplyKind::Answer && decision.text == text::EMPTY_ANSWER {
            decision.text = text::NOT_A_CHOICE.into();
        }
        // The conversation moved on: its question card has expired (unless
        // this answer asks a new one, which replaces it).
        let token = conversation.token();
        let closing = (waiting && decision.pending.is_none()).then_some(token.as_str());
        self.conclude(message, attempt, &mut command, &handled_key, decision, closing).await
    }

    /// The answered-events key of `source`, unless it is answered already
    /// (a re-push from Lark, a second click): then `Err(Done)`, or
    /// `Err(Retry)` when the record cannot be read.
    pub(crate) async fn unanswered(&self, channel: &str, source: &str) -> Result<String, Outcome> {
        let handled_key = common::topology::keys::handled(channel, source);
        match self.handled.get(&handled_key).await {
            Ok(Some(_)) => {
                metrics::counter!(common::metric_names::RELAY_DUPLICATES_TOTAL, "channel" => channel.to_owned())
                    .increment(1);
                tracing::info!(%source, "already answered; not asked again");
                Err(Outcome::Done)
            }
            Ok(None) => Ok(handled_key),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the answered-events record; retrying");
                Err(Outcome::Retry(Duration::from_secs(1)))
            }
        }
    }

    /// Records a question card, publishes the reply, records the event as
    /// answered, then closes the conversation's previous question card
    /// (`closing`: its conversation token). Once FastGPT has answered, a
    /// failure of our own bookkeeping never asks it again, except for the
    /// reply itself not being stored.
    pub(crate) async fn conclude(
        &self,
        message: &Message,
        attempt: u32,
        command: &mut ReplyCommand,
        handled_key: &str,
        decision: Decision,
        closing: Option<&str>,
    ) -> Outcome {
        let Decision { kind, text, mut pending, extras } = decision;
        let kept_pending = pending.clone();
        if let Some(p) = &pending {
            if let Err(e) = self.questions.put(&command.channel, p).await {
                // The answer still goes; a click on a card that was never
                // recorded would only say it expired, so no card is shown.
                tracing::error!(error = %e, "cannot record the question card; the answer goes without it");
                self.status.error(
                    &command.channel,
                    format!("cannot record a question card: {e}"),
                    "check NATS and nats.bucket_max_bytes",
                );
                pending = None;
            }
        }
        let question = pending.map(|p| p.question);
        let kept_extras = extras.clone();
        (command.kind, command.body) = (kind, ReplyBody::Markdown { text, question, extras });
        if let Some(length) = fit_reply(command, self.replies.max_payload()) {
            metrics::counter!(common::metric_names::RELAY_ANSWERS_CUT_TOTAL, "channel" => command.channel.clone())
                .increment(1);
            tracing::warn!(
                length,
                shown = MAX_REPLY_TEXT,
                "the answer is too long for the chat; cut, with a line saying so"
            );
        }
        if let Err(e) = self.publish_reply(command).await {
            let kept = Kept {
                decision: Decision { kind, text: String::new(), pending: kept_pending, extras: kept_extras },
                closing: closing.map(str::to_owned),
            };
            return self.undelivered(message, attempt, command, handled_key, e, kept).await;
        }
        if let Err(e) = self.handled.put(handled_key, kind.as_str().into()).await {
            // The reply command is stored; its message id absorbs a second publish
            // within the duplicate window.
            tracing::warn!(error = %e, "cannot record the event as answered");
        }
        if let Some(conversation) = closing {
            if let Err(e) = self.questions.remove(&command.channel, conversation).await {
                // It expires with the bucket's age limit; a click on it meanwhile resumes FastGPT's waiting node.
                tracing::warn!(error = %e, "cannot close the conversation's question card");
            }
        }
        metrics::counter!(common::metric_names::RELAY_REPLIES_TOTAL, "channel" => command.channel.clone(), "kind" => kind.as_str())
            .increment(1);
        tracing::info!(kind = kind.as_str(), "reply command published");
        Outcome::Done
    }

    /// Whether this answer streams: the channel says so, and its app has not
    /// spent 90 % of its monthly Lark call budget (a streamed answer costs
    /// several calls more than a whole one).
    async fn streams(&self, channel: &Channel) -> bool {
        if !channel.streaming {
            return false;
        }
        let usage = self.lark_usage.usage(&channel.app_id, channel.lark_calls_per_month).await;
        if usage.streaming_allowed() {
            return true;
        }
        tracing::info!(calls = usage.calls, budget = ?usage.budget, "past 90 % of the month's Lark calls: answering whole");
        false
    }

    /// The reply command could not be stored: tried again up to
    /// `relay.max_attempts` (with the answer `kept` in this replica, so
    /// FastGPT is not asked again), never when retrying cannot help; then
    /// the user gets a short apology, and the event goes to the dead letters
    /// with the reason.
    async fn undelivered(
        &self,
        message: &Message,
        attempt: u32,
        command: &mut ReplyCommand,
        handled_key: &str,
        e: PublishError,
        mut kept: Kept,
    ) -> Outcome {
        if !e.is_permanent() && attempt < self.settings.max_attempts {
            let delay = backoff(attempt, Duration::from_secs(60));
            tracing::warn!(error = %e, attempt, retry_in = ?delay, "cannot publish the reply command; will retry");
            if let ReplyBody::Markdown { text, .. } = &mut command.body {
                kept.decision.text = std::mem::take(text);
                self.unsent.keep(handled_key, kept);
            }
            return Outcome::Retry(delay);
        }
        let reason = format!("cannot publish the reply command (attempt {attempt}): {e}");
        tracing::error!(error = %e, attempt, "cannot publish the reply command; apologising and dead-lettering the event");
        self.status.error(&command.channel, reason.clone(), e.fix());
        (command.kind, command.body) = (
            ReplyKind::Apology,
            ReplyBody::Markdown { text: text::UNDELIVERED.into(), question: None, extras: Default::default() },
        );
        match self.publish_reply(command).await {
            Ok(()) => {
                if let Err(e) = self.handled.put(handled_key, ReplyKind::Apology.as_str().into()).await {
                    tracing::warn!(error = %e, "cannot record the event as answered");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot publish the apology either"),
        }
        let channel = command.channel.clone();
        self.dead(message, &channel, &format!("{reason}. Fix: {}", e.fix())).await
    }

    /// What to say; `Err` carries the outcome when the event must be retried.
    async fn decide(
        &self,
        channel: &Arc<Channel>,
        event: &MessageEvent,
        conversation: &ConversationKey,
        attempt: u32,
        target: &ReplyCommand,
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
        let asked = match incoming::read(&event.message, bot_open_id.as_deref()) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, message_type = %event.message.message_type, "unreadable message content");
                return Ok(say(ReplyKind::Notice, text::NOT_TEXT));
            }
        };
        let _in_memory;
        let (text, attachments) = match asked {
            Asked::NotText(t) => {
                tracing::info!(message_type = %t, "not a text, image or file message");
                return Ok(say(ReplyKind::Notice, crate::attachments::notice::not_readable(&t)));
            }
            Asked::Empty => return Ok(say(ReplyKind::Notice, text::EMPTY)),
            Asked::Reset => {
                return match self.sessions.reset(&channel.id, conversation).await {
                    Ok(generation) => {
                        tracing::info!(generation, "conversation reset");
                        Ok(say(ReplyKind::Notice, text::RESET))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reset the conversation; retrying");
                        Err(Outcome::Retry(Duration::from_secs(1)))
                    }
                };
            }
            Asked::Ask(text) => (text, Vec::new()),
            Asked::WithResources { text, resources } => {
                // Held until FastGPT has the question (the end of this function).
                _in_memory = self.attachments.in_memory.clone().acquire_owned().await.ok();
                let (lark, message_id) = (lark.as_deref(), &event.message.message_id);
                match self.attachments.resolve(lark, &channel.id, message_id, &resources, attempt).await {
                    Ok(parts) => (text, parts),
                    Err(Declined::Notice(notice)) => return Ok(say(ReplyKind::Notice, notice)),
                    Err(Declined::Retry(delay)) => return Err(Outcome::Retry(delay)),
                }
            }
        };
        let generation = self.sessions.generation(&channel.id, conversation).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the conversation generation; retrying");
            Outcome::Retry(Duration::from_secs(1))
        })?;
        let chat_id = conversation.chat_id(&channel.id, generation);
        let custom_uid =
            format!("lark:{}:{}", channel.id, event.sender.sender_id.open_id.as_deref().unwrap_or("unknown"));
        let asking = Asking {
            chat_id,
            custom_uid,
            text,
            attachments,
            typing_on: &event.message.message_id,
            conversation: conversation.token(),
            asked_by: match conversation {
                ConversationKey::Member { open_id, .. } => Some(open_id.clone()),
                _ => None,
            },
            resumes: None,
        };
        self.ask_fastgpt(channel, asking, attempt, target).await
    }

    /// Asks FastGPT (streamed or whole, as the channel says) and decides what
    /// to say: the answer, what it asks the user, or an apology; `Err` when
    /// the event must be retried.
    pub(crate) async fn ask_fastgpt(
        &self,
        channel: &Arc<Channel>,
        asking: Asking<'_>,
        attempt: u32,
        target: &ReplyCommand,
    ) -> Result<Decision, Outcome> {
        let Asking { chat_id, custom_uid, text, attachments, typing_on, conversation, asked_by, resumes } = asking;
        let lark = self.lark.get(&channel.id).cloned();
        tracing::info!(fastgpt_chat_id = %chat_id, "asking FastGPT");
        tracing::debug!(question = %text, "question text");

        let typing = lark.map(|l| Typing::start(l, typing_on, self.settings.typing_after()));
        let started = std::time::Instant::now();
        let ask_span = tracing::info_span!("fastgpt.ask", fastgpt_chat_id = %chat_id, outcome = tracing::field::Empty);
        let data_id = crate::once::data_id(&target.source);
        let turn = resumes.unwrap_or_else(|| data_id.clone());
        let ask = Ask {
            chat_id: &chat_id,
            custom_uid: &custom_uid,
            text: &text,
            attachments: &attachments,
            data_id: Some(&data_id),
        };
        let (result, partial, interaction, responses) = if self.streams(channel).await {
            let streamed = crate::streaming::ask(&self.fastgpt, &self.replies, channel, &ask, target, typing)
                .instrument(ask_span.clone())
                .await;
            (streamed.result, streamed.partial, streamed.interaction, streamed.responses)
        } else {
            let result = self.fastgpt.ask(channel, &ask).instrument(ask_span.clone()).await;
            if let Some(t) = typing {
                t.finish().await;
            }
            match result {
                Ok(answer) => (Ok(answer.text), String::new(), answer.interaction, answer.responses),
                Err(e) => (Err(e), String::new(), None, None),
            }
        };
        let result = match result {
            // Asked before (a redelivery): the workflow ran then; its stored answer is the answer.
            Err(FastGptError::Duplicate(id)) => {
                tracing::info!(data_id = %id, "FastGPT already ran this question; reading its stored answer");
                metrics::counter!(common::metric_names::FASTGPT_DUPLICATES_TOTAL, "channel" => channel.id.clone())
                    .increment(1);
                self.fastgpt.stored_answer(channel, &chat_id, &id).instrument(ask_span.clone()).await
            }
            other => other,
        };
        let sources = crate::sources::of(responses.as_ref());
        let result = result.map(|text| crate::sources::cite(&text, &sources.numbers).into_owned());
        let partial = crate::sources::without_marks(&partial).into_owned();
        let elapsed = started.elapsed();
        let outcome_label = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        ask_span.record("outcome", outcome_label);
        match &result {
            Ok(_) => self.status.ok(&channel.id),
            Err(e) => self.status.error(&channel.id, e.to_string(), e.fix()),
        }
        metrics::histogram!(common::metric_names::FASTGPT_SECONDS, "channel" => channel.id.clone(), "outcome" => outcome_label)
            .record(elapsed.as_secs_f64());
        if let (Ok(answer), Some(interaction)) = (&result, interaction) {
            tracing::info!(?elapsed, answer_len = answer.len(), "FastGPT answered and asks the user");
            let question =
                common::question::Question { id: short_hash(&[target.source.as_bytes()]), conversation, interaction };
            let pending = Pending {
                question,
                chat_id,
                custom_uid,
                asked_by,
                lark_chat_id: target.chat_id.clone(),
                in_thread: target.in_thread,
                answered_by: None,
                data_id: Some(turn),
            };
            let decision = Decision {
                kind: ReplyKind::Answer,
                text: answer.clone(),
                pending: Some(pending),
                extras: Default::default(),
            };
            return Ok(decision);
        }
        match result {
            Ok(answer) if answer.trim().is_empty() => {
                tracing::warn!(?elapsed, "FastGPT returned an empty answer");
                Ok(say(ReplyKind::Answer, text::EMPTY_ANSWER))
            }
            Ok(answer) => {
                tracing::info!(?elapsed, answer_len = answer.len(), "FastGPT answered");
                let extras = crate::feedback::extras(channel, &chat_id, &turn, asked_by, sources.list, target);
                Ok(Decision { extras, ..say(ReplyKind::Answer, answer) })
            }
            Err(FastGptError::Transient(detail)) if attempt < self.settings.max_attempts => {
                let delay = backoff(attempt, Duration::from_secs(60));
                metrics::counter!(common::metric_names::FASTGPT_RETRIES_TOTAL, "channel" => channel.id.clone())
                    .increment(1);
                tracing::warn!(%detail, attempt, retry_in = ?delay, "FastGPT unavailable; will retry");
                Err(Outcome::Retry(delay))
            }
            Err(e) if partial.trim().is_empty() => {
                tracing::error!(error = %e, attempt, "FastGPT gave no answer; apologising to the user");
                Ok(say(ReplyKind::Apology, apology(&e, attempt)))
            }
            Err(e) => {
                // What the card shows must not pass for a whole answer.
                tracing::error!(error = %e, attempt, shown = partial.len(), "FastGPT's answer stopped midway");
                Ok(say(ReplyKind::Apology, interrupted(&partial, &apology(&e, attempt))))
            }
        }
    }

    /// Publishes a reply command (`Replies::publish`).
    pub(crate) async fn publish_reply(&self, command: &ReplyCommand) -> Result<(), PublishError> {
        self.replies.publish(command).await
    }

    pub(crate) async fn dead(&self, message: &Message, channel_id: &str, reason: &str) -> Outcome {
        tracing::error!(reason, "event cannot be handled; sent to the dead-letter stream");
        let channel = if channel_id.is_empty() { "unknown" } else { channel_id };
        match common::dead_letter::publish(&self.js, &self.topology, Service::Relay.name(), channel, message, reason)
            .await
        {
            Ok(()) => Outcome::Drop,
            Err(e) => {
                tracing::warn!(error = %e, "cannot dead-letter the event; retrying");
                Outcome::Retry(Duration::from_secs(5))
            }
        }
    }
}

/// Room kept in a NATS message beside the reply's JSON: headers (message
/// id, channel, trace context).
const HEADERS_ROOM: usize = 4 * 1024;

/// Bytes a cut takes at most beyond what it keeps: the closing of a code
/// block and the line saying the answer was cut.
const CUT_ROOM: usize = 256;

/// Cuts the reply's text, with a line saying so, to at most
/// [`MAX_REPLY_TEXT`] bytes and so that the command fits one NATS message
/// of `max_payload` bytes. An answer of any size thus reaches the user, its
/// start at least, as one reply command: one Lark `uuid` sequence, in
/// order, ending a streaming card like any answer. Returns the text's
/// length before the cut, when it was cut.
pub(crate) fn fit_reply(command: &mut ReplyCommand, max_payload: usize) -> Option<usize> {
    let ReplyBody::Markdown { text, .. } = &mut command.body else { return None };
    let length = text.len();
    let mut cut = false;
    if text.len() > MAX_REPLY_TEXT {
        cut_text(text, MAX_REPLY_TEXT - CUT_ROOM);
        cut = true;
    }
    let budget = max_payload.saturating_sub(HEADERS_ROOM);
    let size_of = |command: &ReplyCommand| serde_json::to_vec(command).map_or(usize::MAX, |json| json.len());
    let mut empty = command.clone();
    if let ReplyBody::Markdown { text, .. } = &mut empty.body {
        text.clear();
    }
    let overhead = size_of(&empty);
    // JSON escapes some characters to 2 or 6 bytes: keep the share of the
    // text that fits; the last round removes at least the excess (an
    // escaped byte is at least one byte of text), so the command then fits
    // unless the question card alone is too large.
    for round in 0..4 {
        let size = size_of(command);
        let ReplyBody::Markdown { text, .. } = &mut command.body else { break };
        if size <= budget || text.is_empty() {
            break;
        }
        let keep = match round {
            3 => text.len().saturating_sub(size - budget),
            _ => text.len().saturating_mul(budget.saturating_sub(overhead)) / size.saturating_sub(overhead).max(1),
        };
        cut_text(text, keep.saturating_sub(CUT_ROOM));
        cut = true;
    }
    cut.then_some(length)
}

/// Cuts `text` to at most `keep` bytes (at a line end when one is near, on a
/// character boundary), closes a code block left open, and says it was cut.
fn cut_text(text: &mut String, keep: usize) {
    let mut end = truncate_at_char(text, keep).len();
    if let Some(line_end) = text[..end].rfind('\n').filter(|&i| end - i < 4096) {
        end = line_end;
    }
    text.truncate(end);
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
    let fences = text.lines().filter(|l| l.trim_start().starts_with("```")).count();
    if fences % 2 == 1 {
        text.push_str("\n```");
    }
    text.push_str("\n\n---\n");
    text.push_str(text::CUT);
}

/// A streamed answer that stopped midway: what was written, then why it
/// stopped (the reason kept whatever the length of what was written).
pub fn interrupted(partial: &str, apology: &str) -> String {
    let room = MAX_REPLY_TEXT - CUT_ROOM - text::INTERRUPTED.len() - apology.len() - 16;
    let mut partial = partial.trim_end().to_owned();
    if partial.len() > room {
        cut_text(&mut partial, room.saturating_sub(CUT_ROOM));
    }
    format!("{partial}\n\n---\n{} {apology}", text::INTERRUPTED)
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
        FastGptError::Workflow(_) | FastGptError::Duplicate(_) => {
            "Sorry, the app's workflow failed while answering. Please try again; tell your administrator if it keeps happening.".into()
        }
        FastGptError::TooLarge(_) => {
            "Sorry, the app's answer was far too long to show. Please ask for a shorter answer; tell your administrator if it keeps happening.".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: String) -> ReplyCommand {
        ReplyCommand {
            channel: "support".into(),
            source: "support:msg:om_1".into(),
            reply_to: "om_1".into(),
            chat_id: "oc_1".into(),
            in_thread: false,
            kind: ReplyKind::Answer,
            body: ReplyBody::Markdown { text, question: None, extras: Default::default() },
        }
    }

    fn text_of(command: &ReplyCommand) -> &str {
        match &command.body {
            ReplyBody::Markdown { text, .. } => text,
            ReplyBody::CardStart { text, .. } => text,
        }
    }

    #[test]
    fn a_reply_that_fits_is_left_alone() {
        let mut command = reply("short **answer**\n".repeat(1000));
        let before = command.clone();
        assert_eq!(fit_reply(&mut command, 1 << 20), None);
        assert_eq!(command, before);
    }

    #[test]
    fn a_long_answer_is_cut_at_a_line_with_a_line_saying_so() {
        let line = "a line of the answer, 32 bytes.\n";
        let text = line.repeat(1_500_000 / line.len());
        let mut command = reply(text.clone());
        assert_eq!(fit_reply(&mut command, 1 << 20), Some(text.len()));
        let cut = text_of(&command);
        assert!(cut.len() <= MAX_REPLY_TEXT, "{}", cut.len());
        assert!(cut.len() > MAX_REPLY_TEXT - 8192, "most of the room is used: {}", cut.len());
        assert!(cut.ends_with(text::CUT));
        let kept = &cut[..cut.len() - text::CUT.len() - "\n\n---\n".len()];
        assert!(
            text.starts_with(kept) && kept.ends_with("32 bytes."),
            "cut after a whole line: {:?}",
            &kept[kept.len() - 40..]
        );
        assert!(serde_json::to_vec(&command).expect("JSON").len() < 1 << 20);
    }

    #[test]
    fn a_code_block_left_open_by_the_cut_is_closed_before_the_line() {
        let text = format!("Intro\n\n```rust\n{}```\n", "let x = 1;\n".repeat(100_000));
        let mut command = reply(text);
        assert!(fit_reply(&mut command, 1 << 20).is_some());
        let cut = text_of(&command);
        let fences = cut.lines().filter(|l| l.trim_start().starts_with("```")).count();
        assert_eq!(fences, 2, "opened and closed");
        assert!(cut.ends_with(&format!("```\n\n---\n{}", text::CUT)));
    }

    /// Quotes and control characters take two to six bytes in JSON: the
    /// command still fits the server's limit, whatever it is.
    #[test]
    fn the_command_fits_max_payload_whatever_the_escaping() {
        for max_payload in [1 << 20, 256 << 10, 64 << 10] {
            let mut command = reply("\u{1}\"\\\n".repeat(200_000));
            assert!(fit_reply(&mut command, max_payload).is_some());
            let json = serde_json::to_vec(&command).expect("JSON");
            assert!(json.len() <= max_payload - HEADERS_ROOM, "{} > {max_payload}", json.len());
            assert!(text_of(&command).ends_with(text::CUT));
            assert!(text_of(&command).len() > (max_payload - HEADERS_ROOM) / 8, "not cut more than needed");
        }
    }

    #[test]
    fn an_interrupted_answer_keeps_its_reason_whatever_its_length() {
        let partial = "word ".repeat(4 << 20);
        let text = interrupted(&partial, "Sorry, the workflow failed.");
        assert!(text.len() <= MAX_REPLY_TEXT, "{}", text.len());
        assert!(text.ends_with("Sorry, the workflow failed."));
        assert!(text.contains(text::CUT));
        let mut command = reply(text.clone());
        assert_eq!(fit_reply(&mut command, 1 << 20), None, "the reason is not cut away again");
    }
}
