//! The final answer of a streamed answer, into its card: exactly FastGPT's
//! full text, streaming closed, and the rest of a long answer as further
//! cards, in order.
//!
//! The final answer first takes the card over (phase `Final`, its
//! operations' sequences reserved in one compare-and-set, above every block
//! of sequences reserved for drafts): from then on no draft writes, and a
//! draft already on its way to Lark carries a lower sequence, so Lark
//! refuses it (300317) or the final text overwrites it. Its operations come
//! out of the app's CardKit budget ahead of any draft (`crate::budget`).
//! Within the 10-minute streaming window the card's text is set and
//! streaming closed; after it (or when Lark says it has closed), the whole
//! card is replaced, which works at any time. An answer with extras (its
//! sources, the 👍 / 👎 buttons) replaces the whole card at once: its text,
//! the extras below it and streaming closed in one call. Extras of an answer
//! longer than one card go into its last card.

use std::time::Duration;

use async_nats::jetstream::Message;
use common::answer::Extras;
use common::envelope::{ReplyBody, ReplyCommand};
use common::lark::api::{LarkClient, LarkError};
use common::lark::cardkit::{card_message_content, CardFailure, CARDKIT_FIX};
use common::question::Question;
use common::topology::keys;
use common::worker::Outcome;

use crate::budget::{Api, Class};
use crate::card_start::count_card_op;
use crate::card_state::{now_ms, CardRecord, Phase};
use crate::handler::Responder;
use crate::render::{card, card_chunks, final_card, question_card, with_extras, Part, ANSWER_ELEMENT};
use crate::send::send_part;

/// Lark closes streaming mode 10 minutes after it was turned on; past this,
/// the final answer replaces the card rather than race the deadline.
pub const STREAMING_WINDOW_MS: u64 = 9 * 60 * 1000 + 30 * 1000;

/// Operations the final answer reserves: text, close, and a full update.
const FINAL_OPERATIONS: u64 = 3;

impl Responder {
    pub(crate) async fn finish_card(
        &self,
        message: &Message,
        lark: &LarkClient,
        command: &ReplyCommand,
        text: &str,
        question: Option<&Question>,
        attempt: u32,
    ) -> Outcome {
        let key = &keys::card(&command.channel, &command.source);
        // 1. No draft goes out from now on (one already on its way carries a
        // lower sequence); take the card over and reserve the final operations.
        self.streams.settle(key);
        let taken = self.cards.modify(key, take_for_final).await;
        let (mut state, mut revision) = match taken {
            Ok(Some(taken)) => taken,
            // It changed phase meanwhile (done, or plain): the handler looks again.
            Ok(None) => return self.again(message, command, attempt, "the card changed phase").await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the card over; retrying");
                return self.again(message, command, attempt, "the cards bucket does not answer").await;
            }
        };
        let Some(card_id) = state.card_id.clone() else {
            return self.again(message, command, attempt, "the card has no id").await;
        };
        let first_sequence = state.sequence + 1 - FINAL_OPERATIONS;
        let extras = match &command.body {
            ReplyBody::Markdown { extras, .. } => extras,
            ReplyBody::CardStart { .. } => &NO_EXTRAS,
        };
        let layout = lay_out(text, extras, question);

        if state.parts_shown == 0 {
            // 2. The card's final content, streaming closed.
            if let Err(e) = self.final_card_content(lark, command, &card_id, &layout, &state, first_sequence).await {
                return match CardFailure::of(&e) {
                    CardFailure::SequenceTaken => {
                        self.again(message, command, attempt, "another operation went first").await
                    }
                    CardFailure::Refused => {
                        // The answer goes out whole instead, once (under uuids of
                        // its own: the card's message took the first part's).
                        tracing::error!(error = %e, fix = CARDKIT_FIX, "CardKit refused the final card; sending the answer whole");
                        self.status.error(&command.channel, format!("CardKit refused a final card: {e}"), CARDKIT_FIX);
                        match self
                            .cards
                            .modify(key, |s| std::mem::replace(&mut s.phase, Phase::Plain) != Phase::Plain)
                            .await
                        {
                            Ok(_) => Outcome::Retry(Duration::ZERO),
                            Err(_) => Outcome::Retry(Duration::from_secs(1)),
                        }
                    }
                    _ => self.failed(message, command, attempt, &e, 0).await,
                };
            }
            // 3. Show the card, if its start could not.
            if !state.sent {
                self.pacing.wait(&lark.channel().app_id, &command.chat_id).await;
                let part = Part { msg_type: "interactive", content: card_message_content(&card_id) };
                let sent = send_part(lark, command, 0, &part).await;
                count_card_op(&command.channel, "send", &sent);
                if let Err(e) = sent {
                    return self.failed(message, command, attempt, &e, 0).await;
                }
                state.sent = true;
            }
            state.parts_shown = 1;
            revision = self.save(key, &state, revision).await;
        }
        // 4. The rest of a long answer, in order; then the question FastGPT asks.
        // Part 0 is the card itself.
        let rest = &layout.rest;
        for (i, part) in (1..).zip(rest).skip(state.parts_shown.saturating_sub(1)) {
            self.pacing.wait(&lark.channel().app_id, &command.chat_id).await;
            if let Err(e) = send_part(lark, command, i, part).await {
                return self.failed(message, command, attempt, &e, i).await;
            }
            state.parts_shown = i + 1;
            revision = self.save(key, &state, revision).await;
        }
        state.phase = Phase::Done;
        self.save(key, &state, revision).await;
        metrics::counter!(common::metric_names::REPLIES_SENT_TOTAL, "channel" => command.channel.clone(), "kind" => command.kind.as_str())
            .increment(1);
        self.status.ok(&command.channel);
        tracing::info!(%card_id, parts = 1 + rest.len(), "streamed answer finished");
        Outcome::Done
    }

    /// Tries the final answer again soon, up to the last attempt; then
    /// dead-letters it with the reason.
    async fn again(&self, message: &Message, command: &ReplyCommand, attempt: u32, why: &str) -> Outcome {
        if attempt < self.max_attempts {
            tracing::info!(why, "finishing the card again shortly");
            return Outcome::Retry(Duration::from_millis(200));
        }
        self.dead(message, &command.channel, &format!("cannot finish the streaming card: {why}")).await
    }

    /// Sets the card's text and closes streaming (Lark types out the last
    /// words), or replaces the whole card: when it gets extras below the
    /// text (one call for all of it) or when streaming has closed.
    async fn final_card_content(
        &self,
        lark: &LarkClient,
        command: &ReplyCommand,
        card_id: &str,
        layout: &Layout<'_>,
        state: &CardRecord,
        sequence: u64,
    ) -> Result<(), LarkError> {
        let Layout { text, summary, extras, .. } = layout;
        let app = &lark.channel().app_id;
        if final_content(extras, state.opened_at, now_ms()) == FinalContent::SetTextAndClose {
            self.budget.take(app, Api::CardContent, Class::Answer).await;
            let set = self.paused_on_limit(
                app,
                Api::CardContent,
                lark.set_card_text(card_id, ANSWER_ELEMENT, text, sequence).await,
            );
            count_card_op(&command.channel, "update", &set);
            let closed = match set {
                Ok(()) => {
                    self.budget.take(app, Api::CardSettings, Class::Answer).await;
                    let closed = self.paused_on_limit(
                        app,
                        Api::CardSettings,
                        lark.close_streaming(card_id, summary, sequence + 1).await,
                    );
                    count_card_op(&command.channel, "close", &closed);
                    closed
                }
                Err(e) => Err(e),
            };
            match closed {
                Err(e) if CardFailure::of(&e) == CardFailure::StreamingClosed => {
                    tracing::info!("streaming mode has closed; replacing the whole card");
                }
                other => return other,
            }
        }
        self.budget.take(app, Api::CardUpdate, Class::Answer).await;
        let replaced = lark.replace_card(card_id, &final_card(text, summary, extras), sequence + 2).await;
        let replaced = self.paused_on_limit(app, Api::CardUpdate, replaced);
        count_card_op(&command.channel, "replace", &replaced);
        replaced
    }

    /// A call Lark refused as over its rate limit pauses that API for the
    /// app until Lark's reset (the answer itself is retried after it).
    fn paused_on_limit<T>(&self, app: &str, api: Api, result: Result<T, LarkError>) -> Result<T, LarkError> {
        if let Err(e) = &result {
            if e.is_rate_limited() {
                self.budget.pause(app, api, e.retry_after());
            }
        }
        result
    }

    /// Writes the state; a failure is logged (at worst a retry repeats a step,
    /// with the same uuids and new sequences).
    async fn save(&self, key: &str, state: &CardRecord, revision: u64) -> u64 {
        match self.cards.update(key, state, revision).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!("the card's state changed under the final answer");
                revision
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the card's progress");
                revision
            }
        }
    }
}

/// No extras: the card of an answer longer than one card, or a card start's.
static NO_EXTRAS: Extras = Extras { sources: Vec::new(), feedback: None };

/// Takes the card for the final answer (phase `Final`) and reserves the
/// final operations' sequences above every block reserved for drafts;
/// false when the card no longer streams (done, or the answer went plain).
/// A final answer tried again takes it again, with sequences of its own.
fn take_for_final(s: &mut CardRecord) -> bool {
    if !matches!(s.phase, Phase::Streaming | Phase::Final) {
        return false;
    }
    s.phase = Phase::Final;
    s.reserve(FINAL_OPERATIONS);
    true
}

/// A final answer laid out: what goes into its card, then the parts after it.
#[derive(Debug)]
struct Layout<'a> {
    /// The card's text: the answer's first card's worth, or an ellipsis
    /// when it has none (Lark refuses an empty text, and an answer that is
    /// only a question has none).
    text: String,
    /// What the chat list shows for the card.
    summary: String,
    /// Below the card's text: the answer's extras when the card holds all of it.
    extras: &'a Extras,
    /// The parts after the card, numbered from 1: the rest of a long answer
    /// (its extras in its last card), then the question FastGPT asks.
    rest: Vec<Part>,
}

/// Lays `text` out in its card and the parts after it. The extras (sources,
/// feedback buttons) go below the answer's last words.
fn lay_out<'a>(text: &str, extras: &'a Extras, question: Option<&Question>) -> Layout<'a> {
    let mut chunks = card_chunks(text).into_iter();
    let first = chunks.next().filter(|c| !c.is_empty()).unwrap_or_else(|| "…".to_owned());
    let more: Vec<Part> = chunks.map(|chunk| Part { msg_type: "interactive", content: card(&chunk) }).collect();
    let (card_extras, rest_extras) = if more.is_empty() { (extras, &NO_EXTRAS) } else { (&NO_EXTRAS, extras) };
    let rest = with_extras(more, rest_extras).into_iter().chain(question.map(question_card)).collect();
    Layout { summary: summary_of(&first), text: first, extras: card_extras, rest }
}

/// How the final answer goes into its card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinalContent {
    /// Set the card's text, then close streaming (Lark types out the last words).
    SetTextAndClose,
    /// Replace the whole card: text, extras and streaming closed in one call.
    Replace,
}

/// How the final answer of a card opened at `opened_at` goes into it at
/// `now` (Unix ms): its text set within the streaming window, else the
/// card replaced, which works at any time. Extras replace the card at once.
fn final_content(extras: &Extras, opened_at: u64, now: u64) -> FinalContent {
    if extras.is_empty() && now.saturating_sub(opened_at) < STREAMING_WINDOW_MS {
        FinalContent::SetTextAndClose
    } else {
        FinalContent::Replace
    }
}

/// What the chat list shows for the finished card: its first words (while
/// streaming it said "Answering...").
fn summary_of(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("…");
    common::question::clip(line.trim_start_matches(['#', '*', '>', '-', ' ']), 60)
}

#[cfg(test)]
mod tests;
