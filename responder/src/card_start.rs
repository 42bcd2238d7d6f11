//! The first words of a streamed answer: create the answer's card and show
//! it, exactly once whichever replica or attempt does it.
//!
//! The card start travels the durable replies queue, so it is sent by the
//! replica that owns the chat's partition, in the chat's order, within
//! Lark's message limits. The card is created before its state is written:
//! a crash in between leaves an unsent card nobody sees, and the state's
//! compare-and-set makes every replica use the same card. The message that
//! shows it carries the answer's first-part `uuid`, so a retry never shows it
//! twice.

use std::time::Duration;

use async_nats::jetstream::Message;
use common::envelope::{ReplyBody, ReplyCommand};
use common::lark::api::{LarkClient, LarkError};
use common::lark::cardkit::{card_message_content, CardFailure, CARDKIT_FIX, CARD_CONTENT_FAILED};
use common::topology::keys;
use common::worker::{backoff, Outcome};

use crate::budget::{Api, Class};
use crate::card_state::{now_ms, CardRecord, Phase};
use crate::drafts::Chat;
use crate::handler::Responder;
use crate::live_cards::{partition_of_chat, LiveCard};
use crate::render::{card_chunks, streaming_card, Part};
use crate::send::send_part;

impl Responder {
    pub(crate) async fn start_card(
        &self,
        _message: &Message,
        lark: &LarkClient,
        command: &ReplyCommand,
        attempt: u32,
    ) -> Outcome {
        let ReplyBody::CardStart { text, run, first_text_at } = &command.body else { return Outcome::Done };
        let key = keys::card(&command.channel, &command.source);
        let state = match self.cards.read(&key).await {
            Ok(Some((state, _))) => {
                // A redelivery, or this replica took the chat over: its drafts
                // go on here, above the sequences anyone used before.
                if state.phase == Phase::Streaming && !self.streams.lock().contains(&key) {
                    self.adopt_card(lark, command, &key).await;
                }
                state
            }
            Ok(None) => match self.create_card(lark, command, &key, text, *run, attempt).await {
                Ok(Some(state)) => state,
                Ok(None) => return Outcome::Done,
                Err(outcome) => return outcome,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the answer's card; retrying");
                return Outcome::Retry(Duration::from_secs(1));
            }
        };
        let Some(card_id) = card_to_show(&state) else { return Outcome::Done };
        self.pacing.wait(&lark.channel().app_id, &command.chat_id).await;
        let part = Part { msg_type: "interactive", content: card_message_content(card_id) };
        let sent = send_part(lark, command, 0, &part).await;
        count_card_op(&command.channel, "send", &sent);
        match sent {
            Ok(()) => {
                if let Err(e) = self.cards.modify(&key, |s| !std::mem::replace(&mut s.sent, true)).await {
                    tracing::warn!(error = %e, "cannot record the card as shown (the final answer shows it again, once)");
                }
                let waited = now_ms().saturating_sub(*first_text_at);
                metrics::histogram!(common::metric_names::STREAM_FIRST_TEXT, "channel" => command.channel.clone())
                    .record(waited as f64 / 1000.0);
                tracing::info!(card_id, first_text_ms = waited, "streaming card shown");
                Outcome::Done
            }
            // Not about the card (the bot left the chat...): the final
            // answer meets the same refusal and dead-letters it with its fix.
            Err(e) if refused_for_the_chat(&e) => {
                tracing::warn!(error = %e, "cannot show the streaming card; the final answer will try again");
                Outcome::Done
            }
            Err(e) => self.card_start_failed(command, &key, &e, attempt).await,
        }
    }

    /// Creates the card and records it: the state (this replica's or one
    /// written first by another), or `None` when CardKit refused.
    async fn create_card(
        &self,
        lark: &LarkClient,
        command: &ReplyCommand,
        key: &str,
        text: &str,
        run: u64,
        attempt: u32,
    ) -> Result<Option<CardRecord>, Outcome> {
        if self.cardkit_refused.recently(&command.channel) {
            // Refused a moment ago (a missing scope, most likely): not every
            // answer pays a failed call and an error line for it.
            return match self.cards.create(key, &CardRecord::plain()).await {
                Ok(_) => Ok(None),
                Err(e) => Err(self.start_later(attempt, &e.to_string())),
            };
        }
        let first = card_chunks(text).swap_remove(0);
        let app = &lark.channel().app_id;
        self.budget.take(app, Api::CardCreate, Class::Answer).await;
        let created = lark.create_card(&streaming_card(&first, true)).await;
        count_card_op(&command.channel, "create", &created);
        let card_id = match created {
            Ok(id) => id,
            Err(e) => {
                if e.is_rate_limited() {
                    self.budget.pause(app, Api::CardCreate, e.retry_after());
                }
                return Err(self.card_start_failed(command, key, &e, attempt).await);
            }
        };
        let state = CardRecord::streaming(card_id.clone(), (run, 0));
        match self.cards.create(key, &state).await {
            Ok(Some(_)) => {
                let ids = (command.channel.clone(), app.clone(), card_id);
                let partition = partition_of_chat(&command.channel, &command.chat_id);
                let card = LiveCard::new(ids, partition, state.opened_at, (run, 0), (1, state.sequence));
                self.streams.start(key.to_owned(), card);
                Ok(Some(state))
            }
            // Another replica created one first: use theirs (ours is never shown).
            Ok(None) => match self.cards.read(key).await {
                Ok(Some((theirs, _))) => Ok(Some(theirs)),
                Ok(None) => Err(self.start_later(attempt, "the card's state vanished")),
                Err(e) => Err(self.start_later(attempt, &e.to_string())),
            },
            // Each try creates a card nobody sees: a few at most.
            Err(e) => Err(self.start_later(attempt, &e.to_string())),
        }
    }

    /// Takes the card into this replica's memory with a new block of
    /// sequences; without it the card still gets its final answer.
    async fn adopt_card(&self, lark: &LarkClient, command: &ReplyCommand, key: &str) {
        let chat = Chat { channel: &command.channel, app_id: &lark.channel().app_id, chat_id: &command.chat_id };
        if let Err(e) = self.streams.adopt(&self.cards, key, &chat).await {
            tracing::warn!(error = %e, "cannot take the card over; it shows its final answer only");
        }
    }

    /// The card start again in a second, up to the last attempt; then the
    /// answer comes whole (no dead letter: the final answer still comes).
    fn start_later(&self, attempt: u32, why: &str) -> Outcome {
        match start_again(attempt, self.max_attempts) {
            Some(delay) => {
                tracing::warn!(why, "cannot record the answer's card; retrying");
                Outcome::Retry(delay)
            }
            None => {
                tracing::warn!(why, "cannot record the answer's card; the answer will come whole");
                Outcome::Done
            }
        }
    }

    /// A card start that failed: retried while it may still work; else the
    /// answer goes out whole (the card is marked plain when CardKit refused,
    /// so no draft shows a card either). Never a dead letter: the final
    /// answer still comes.
    async fn card_start_failed(&self, command: &ReplyCommand, key: &str, e: &LarkError, attempt: u32) -> Outcome {
        match start_verdict(CardFailure::of(e), attempt, self.max_attempts) {
            StartVerdict::Retry(delay) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot start the streaming card; will retry");
                Outcome::Retry(delay)
            }
            StartVerdict::LeaveToFinalAnswer => {
                tracing::warn!(error = %e, "cannot start the streaming card; the final answer will show it");
                Outcome::Done
            }
            StartVerdict::Refused => {
                self.cardkit_refused.record(&command.channel);
                tracing::error!(error = %e, fix = CARDKIT_FIX, "CardKit refused the card; answers go out whole for the next minute");
                self.status.error(&command.channel, format!("CardKit refused a streaming card: {e}"), CARDKIT_FIX);
                let plain = CardRecord::plain();
                let marked = match self.cards.create(key, &plain).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => self.cards.modify(key, mark_plain).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match marked {
                    Ok(()) => Outcome::Done,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot mark the answer as not streamed; retrying");
                        Outcome::Retry(Duration::from_secs(1))
                    }
                }
            }
        }
    }
}

/// The card a card start shows: a streaming card whose message is not sent
/// yet. One already shown (a redelivery), one the final answer has taken,
/// or none (the answer goes out whole) is left alone.
fn card_to_show(state: &CardRecord) -> Option<&str> {
    state.card_id.as_deref().filter(|_| state.phase == Phase::Streaming && !state.sent)
}

/// Lark refused the card's message for a reason not about the card (the
/// bot left the chat...), rather than for the card itself (230099: Lark
/// could not build the message from it).
fn refused_for_the_chat(e: &LarkError) -> bool {
    CardFailure::of(e) == CardFailure::Refused && !matches!(e, LarkError::Api { code: Some(CARD_CONTENT_FAILED), .. })
}

/// What a failed card start (creating the card, or showing it) leads to.
/// Never a dead letter: the final answer still comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartVerdict {
    /// It may still work: again after this long.
    Retry(Duration),
    /// Still failing on the last attempt: the final answer shows the card,
    /// or the answer whole.
    LeaveToFinalAnswer,
    /// CardKit refused: the answer goes out whole, and the channel's next
    /// answers too for a while (a missing scope, most likely).
    Refused,
}

/// The verdict for a card start that failed with `failure` at attempt
/// `attempt` of `max_attempts`.
fn start_verdict(failure: CardFailure, attempt: u32, max_attempts: u32) -> StartVerdict {
    match failure {
        CardFailure::Transient if attempt < max_attempts => StartVerdict::Retry(backoff(attempt, START_BACKOFF_CAP)),
        CardFailure::Transient => StartVerdict::LeaveToFinalAnswer,
        CardFailure::Refused | CardFailure::SequenceTaken | CardFailure::StreamingClosed => StartVerdict::Refused,
    }
}

/// The longest a card start waits before it is tried again.
const START_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// When to try recording the answer's card again: in a second, up to the
/// last attempt; then not at all (the answer comes whole). Each try may
/// create a card nobody sees, so there are few.
fn start_again(attempt: u32, max_attempts: u32) -> Option<Duration> {
    (attempt < max_attempts).then_some(Duration::from_secs(1))
}

/// Marks an answer as not streamed, so no draft shows its card; false when
/// nothing changes. A card already shown stays: the final answer finishes it.
fn mark_plain(s: &mut CardRecord) -> bool {
    if s.phase != Phase::Streaming || s.sent {
        return false;
    }
    s.phase = Phase::Plain;
    true
}

/// Counts one CardKit operation (or the message showing the card) of
/// `channel` by its result: draft updates and the answer's own operations alike.
pub(crate) fn count_card_op<T>(channel: &str, op: &'static str, result: &Result<T, LarkError>) {
    let code = match result {
        Ok(_) => "0".to_owned(),
        Err(e) => e.code_label(),
    };
    metrics::counter!(common::metric_names::CARD_OPERATIONS, "channel" => channel.to_owned(), "op" => op, "code" => code)
        .increment(1);
}

#[cfg(test)]
mod tests;
