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
use common::lark::card_action::CardAction;
use common::lark::event::{EventEnvelope, MessageEvent};
use common::question::Pending;
use common::topology::Topology;
use common::worker::{backoff, Handler, Outcome};
use tracing::Instrument;

use crate::attachments::{Attachments, Declined};
use crate::fastgpt::{Ask, FastGpt, FastGptError, Refusal};
use crate::question::{self, Question};
use crate::questions::Questions;
use crate::sessions::Sessions;
use crate::typing::Typing;

pub mod text {
    //! What the bot says on its own behalf.
    pub const RESET: &str = "New conversation started: I have forgotten our previous messages.";
    pub const EMPTY: &str =
        "Hi! Write your question in the same message as the @mention, for example: @bot How do I request leave?";
    pub const NOT_TEXT: &str = "Sorry, I can only read text messages. Please type your question.";
    pub const EMPTY_ANSWER: &str = "(FastGPT returned an empty answer.)";
    pub const INTERRUPTED: &str = "**The answer was interrupted.**";
    pub const NOT_A_CHOICE: &str = "The app was waiting for a choice in the card above, and your message did not match any option. Please ask again, or send Reset to start over.";
}

pub struct Relay {
    pub channels: Channels,
    pub lark: LarkClients,
    pub fastgpt: FastGpt,
    pub sessions: Sessions,
    pub handled: kv::Store,
    pub js: jetstream::Context,
    /// Core NATS, for the drafts of streamed answers.
    pub nats: async_nats::Client,
    pub topology: Topology,
    pub settings: RelaySettings,
    pub status: common::status::StatusBoard,
    /// The images and files of messages (download, sniff, store, sign).
    pub attachments: Attachments,
    /// Question cards waiting for a click.
    pub questions: Questions,
    /// Each app's Lark calls this month, against its budget.
    pub lark_usage: common::lark::calls::UsageCache,
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
        self.conclude(&mut command, &handled_key, decision, closing).await
    }

    /// The answered-events key of `source`, unless it is answered already
    /// (a re-push from Lark, a second click): then `Err(Done)`, or
    /// `Err(Retry)` when the record cannot be read.
    pub(crate) async fn unanswered(&self, channel: &str, source: &str) -> Result<String, Outcome> {
        let handled_key = common::topology::keys::handled(channel, source);
        match self.handled.get(&handled_key).await {
            Ok(Some(_)) => {
                metrics::counter!("lark_bridge_relay_duplicates_total", "channel" => channel.to_owned()).increment(1);
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
        command: &mut ReplyCommand,
        handled_key: &str,
        decision: Decision,
        closing: Option<&str>,
    ) -> Outcome {
        let Decision { kind, text, mut pending, extras } = decision;
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
        (command.kind, command.body) = (kind, ReplyBody::Markdown { text, question, extras });
        if let Err(e) = self.publish_reply(command).await {
            tracing::warn!(error = %e, "cannot publish the reply command; retrying the event");
            return Outcome::Retry(Duration::from_secs(1));
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
        metrics::counter!("lark_bridge_relay_replies_total", "channel" => command.channel.clone(), "kind" => kind.as_str())
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
        let question = match question::read(&event.message, bot_open_id.as_deref()) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, message_type = %event.message.message_type, "unreadable message content");
                return Ok(say(ReplyKind::Notice, text::NOT_TEXT));
            }
        };
        let _in_memory;
        let (text, attachments) = match question {
            Question::NotText(t) => {
                tracing::info!(message_type = %t, "not a text, image or file message");
                return Ok(say(ReplyKind::Notice, crate::attachments::notice::not_readable(&t)));
            }
            Question::Empty => return Ok(say(ReplyKind::Notice, text::EMPTY)),
            Question::Reset => {
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
            Question::Ask(text) => (text, Vec::new()),
            Question::WithResources { text, resources } => {
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
            let streamed =
                crate::streaming::ask(self, channel, &ask, target, typing).instrument(ask_span.clone()).await;
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
                metrics::counter!("lark_bridge_fastgpt_duplicates_total", "channel" => channel.id.clone()).increment(1);
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
        metrics::histogram!("lark_bridge_fastgpt_seconds", "channel" => channel.id.clone(), "outcome" => outcome_label)
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
                metrics::counter!("lark_bridge_fastgpt_retries_total", "channel" => channel.id.clone()).increment(1);
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

    pub(crate) async fn publish_reply(&self, command: &ReplyCommand) -> Result<(), async_nats::Error> {
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

    pub(crate) async fn dead(&self, message: &Message, channel_id: &str, reason: &str) -> Outcome {
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

/// A streamed answer that stopped midway: what was written, then why it stopped.
pub fn interrupted(partial: &str, apology: &str) -> String {
    format!("{}\n\n---\n{} {apology}", partial.trim_end(), text::INTERRUPTED)
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
    }
}
