//! Asking FastGPT one question, from a user's message or a click: the
//! conversation's chatId and the user's id, the question's text and files,
//! streamed or whole, and what the answer comes to (`crate::decision`).
//! A question FastGPT already ran (a redelivery after a crash) is answered
//! from FastGPT's record, not run again (`crate::once`).

use std::sync::Arc;
use std::time::Duration;

use common::channel::Channel;
use common::conversation::{short_hash, ConversationKey};
use common::envelope::{ReplyCommand, ReplyKind};
use common::lark::event::MessageEvent;
use common::question::Pending;
use common::worker::Outcome;
use tracing::Instrument;

use crate::attachments::Declined;
use crate::decision::{answered, request_of, say, Answered, Decision, Request};
use crate::fastgpt::{Ask, FastGptError};
use crate::handler::Relay;
use crate::incoming::{self, Asked};
use crate::says;
use crate::typing::Typing;

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

impl Relay {
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

    /// What to say to a user's message: a notice, a reset, or FastGPT's
    /// answer; `Err` carries the outcome when the event must be retried.
    pub(crate) async fn answer_message(
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
                return Ok(say(ReplyKind::Notice, says::NOT_TEXT));
            }
        };
        if let Asked::NotText(t) = &asked {
            tracing::info!(message_type = %t, "not a text, image or file message");
        }
        let _in_memory;
        let (text, attachments) = match request_of(asked) {
            Request::Notice(notice) => return Ok(say(ReplyKind::Notice, notice)),
            Request::Reset => {
                return match self.sessions.reset(&channel.id, conversation).await {
                    Ok(generation) => {
                        tracing::info!(generation, "conversation reset");
                        Ok(say(ReplyKind::Notice, says::RESET))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reset the conversation; retrying");
                        Err(Outcome::Retry(Duration::from_secs(1)))
                    }
                };
            }
            Request::Ask(text) => (text, Vec::new()),
            Request::WithResources { text, resources } => {
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
        match answered(result, &partial, interaction, attempt, self.settings.max_attempts) {
            Answered::Asks(answer, interaction) => {
                tracing::info!(?elapsed, answer_len = answer.len(), "FastGPT answered and asks the user");
                let question = common::question::Question {
                    id: short_hash(&[target.source.as_bytes()]),
                    conversation,
                    interaction,
                };
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
                Ok(Decision { pending: Some(pending), ..say(ReplyKind::Answer, answer) })
            }
            Answered::Empty => {
                tracing::warn!(?elapsed, "FastGPT returned an empty answer");
                Ok(say(ReplyKind::Answer, says::EMPTY_ANSWER))
            }
            Answered::Answer(answer) => {
                tracing::info!(?elapsed, answer_len = answer.len(), "FastGPT answered");
                let extras = crate::feedback::extras(channel, &chat_id, &turn, asked_by, sources.list, target);
                Ok(Decision { extras, ..say(ReplyKind::Answer, answer) })
            }
            Answered::Retry { delay, detail } => {
                metrics::counter!(common::metric_names::FASTGPT_RETRIES_TOTAL, "channel" => channel.id.clone())
                    .increment(1);
                tracing::warn!(%detail, attempt, retry_in = ?delay, "FastGPT unavailable; will retry");
                Err(Outcome::Retry(delay))
            }
            Answered::Failed { error, text, midway: false } => {
                tracing::error!(error = %error, attempt, "FastGPT gave no answer; apologising to the user");
                Ok(say(ReplyKind::Apology, text))
            }
            Answered::Failed { error, text, midway: true } => {
                tracing::error!(error = %error, attempt, shown = partial.len(), "FastGPT's answer stopped midway");
                Ok(say(ReplyKind::Apology, text))
            }
        }
    }
}
