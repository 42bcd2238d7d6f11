//! One reply command → one or more Lark messages, in order.
//!
//! Each part carries a Lark `uuid` derived from the event and the part number,
//! the same on every retry and redelivery: Lark executes a uuid at most once
//! an hour, so a response lost on the way back never shows a reply twice. A
//! retry resumes after the parts already shown ([`crate::progress`]).
//!
//! Failures, by Lark's code (`common::lark::errors`):
//! - transient (429/99991400, 230020, 5xx, network): retried by redelivery with
//!   backoff and jitter, waiting at least `x-ogw-ratelimit-reset`; after the
//!   last attempt, a dead letter;
//! - invalid token: the client already fetched a new one and retried once;
//! - permanent: not retried. A withdrawn message (230011, 231003) gets the
//!   answer in its chat instead; anything else is dead-lettered and logged
//!   with the fix in the Lark console.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Message};
use common::envelope::{header, ReplyBody, ReplyCommand, CHANNEL_HEADER};
use common::lark::api::{LarkClients, LarkError};
use common::service_name::Service;
use common::topology::keys;
use common::topology::Topology;
use common::worker::{Handler, Outcome};
use tracing::Instrument;

use crate::card_state::Cards;
use crate::pacing::Pacing;
use crate::progress::ShownParts;
use crate::route::{route, Route};
use crate::send::send_part;
use crate::verdict::{verdict, Verdict};
use crate::whole::whole_parts;

pub struct Responder {
    pub lark: LarkClients,
    pub pacing: Pacing,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub max_attempts: u32,
    pub status: common::status::StatusBoard,
    pub shown: ShownParts,
    /// Streaming cards' records, for whichever replica owns the chat next.
    pub cards: Cards,
    /// The cards this replica is updating.
    pub streams: crate::drafts::Streams,
    /// Lark's per-app limits, this replica's share (CardKit; messages go
    /// through `pacing`, which draws on the same budget).
    pub budget: crate::budget::Budget,
    /// Channels whose cards CardKit refused lately.
    pub cardkit_refused: crate::card_state::CardkitRefusals,
}

impl Handler for Responder {
    async fn handle(&self, message: &Message, attempt: u32) -> Outcome {
        let command: ReplyCommand = match serde_json::from_slice(&message.payload) {
            Ok(c) => c,
            Err(e) => return self.dead(message, "unknown", &format!("not a reply command: {e}")).await,
        };
        let span = tracing::info_span!(
            "responder.reply",
            channel = %command.channel,
            trace_id = tracing::field::Empty,
            source = %command.source,
            message_id = %command.reply_to,
            kind = command.kind.as_str(),
            attempt
        );
        common::telemetry::continue_trace(&span, message.headers.as_ref());
        self.send(message, &command, attempt).instrument(span).await
    }

    async fn give_up(&self, message: &Message, attempt: u32) -> Outcome {
        if let Ok(ReplyCommand { body: ReplyBody::CardStart { .. }, .. }) = serde_json::from_slice(&message.payload) {
            // The final answer still comes, and shows or replaces the card.
            tracing::warn!(attempt, "cannot start the streaming card; the final answer will show the answer");
            return Outcome::Done;
        }
        let channel = header(message.headers.as_ref(), CHANNEL_HEADER).unwrap_or("unknown").to_owned();
        let reason = format!(
            "still failing after {attempt} attempts (responder.max_attempts); the responder's log has each failure (most likely the cards bucket not answering). Fix: check NATS and JetStream, then redrive"
        );
        self.dead(message, &channel, &reason).await
    }
}

impl Responder {
    async fn send(&self, message: &Message, command: &ReplyCommand, attempt: u32) -> Outcome {
        let Some(lark) = self.lark.get(&command.channel) else {
            return self.dead(message, &command.channel, "no such channel in this responder's configuration").await;
        };
        let (text, question, extras) = match &command.body {
            ReplyBody::CardStart { .. } => return self.start_card(message, lark, command, attempt).await,
            ReplyBody::Markdown { text, question, extras } => (text, question.as_ref(), extras),
        };
        let card = match self.cards.read(&keys::card(&command.channel, &command.source)).await {
            Ok(read) => read.map(|(card, _)| card),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the answer's card; retrying");
                return Outcome::Retry(Duration::from_secs(1));
            }
        };
        let whole_after_card;
        let command = match route(card.as_ref()) {
            Route::FinishCard => return self.finish_card(message, lark, command, text, question, attempt).await,
            Route::AlreadyShown => {
                tracing::info!("the card already shows this answer (a redelivery)");
                return Outcome::Done;
            }
            Route::Whole { after_card: true } => {
                whole_after_card = crate::whole::after_card(command);
                &whole_after_card
            }
            Route::Whole { after_card: false } => command,
        };
        let parts = whole_parts(text, question, extras);
        let first = self.shown.resume_from(&command.source);
        if first > 0 {
            tracing::info!(shown = first, parts = parts.len(), "resuming after the parts already shown");
        }
        for (i, part) in parts.iter().enumerate().skip(first) {
            self.pacing.wait(&lark.channel().app_id, &command.chat_id).await;
            let started = Instant::now();
            let result = send_part(lark, command, i, part)
                .instrument(tracing::info_span!("lark.send", part = i, msg_type = part.msg_type))
                .await;
            let code = match &result {
                Ok(()) => "0".to_owned(),
                Err(e) => e.code_label(),
            };
            metrics::histogram!(common::metric_names::LARK_SEND_SECONDS, "channel" => command.channel.clone(), "code" => code)
                .record(started.elapsed().as_secs_f64());
            let Err(e) = result else {
                self.shown.shown(&command.source, i + 1);
                continue;
            };
            let outcome = self.failed(message, command, attempt, &e, i).await;
            if !matches!(outcome, Outcome::Retry(_)) {
                self.shown.forget(&command.source);
            }
            return outcome;
        }
        metrics::counter!(common::metric_names::REPLIES_SENT_TOTAL, "channel" => command.channel.clone(), "kind" => command.kind.as_str())
            .increment(1);
        self.status.ok(&command.channel);
        self.shown.forget(&command.source);
        tracing::info!(parts = parts.len(), "reply shown in Lark");
        Outcome::Done
    }

    /// Acts on what a failed send of part `part` means ([`verdict`]): a
    /// retry later, or a dead letter.
    pub(crate) async fn failed(
        &self,
        message: &Message,
        command: &ReplyCommand,
        attempt: u32,
        e: &LarkError,
        part: usize,
    ) -> Outcome {
        if e.is_rate_limited() {
            if let Some(lark) = self.lark.get(&command.channel) {
                self.pacing.pause(&lark.channel().app_id, e.retry_after());
            }
        }
        match verdict(e.class(), attempt, self.max_attempts) {
            Verdict::Retry(delay) => {
                metrics::counter!(common::metric_names::LARK_RETRIES_TOTAL, "channel" => command.channel.clone())
                    .increment(1);
                tracing::warn!(error = %e, part, retry_in = ?delay, "Lark send failed; will retry");
                Outcome::Retry(delay)
            }
            Verdict::RetryToken(delay) => {
                tracing::warn!(error = %e, "Lark still says the token is invalid; will retry");
                Outcome::Retry(delay)
            }
            Verdict::Refused { fix } => {
                tracing::error!(error = %e, fix, "Lark refused the reply; not retrying");
                self.dead(message, &command.channel, &format!("{e}. Fix: {fix}")).await
            }
            Verdict::LastAttempt => {
                tracing::error!(error = %e, attempt, "Lark send failed on the last attempt");
                self.dead(message, &command.channel, &format!("{e} (after {attempt} attempts)")).await
            }
        }
    }

    pub(crate) async fn dead(&self, message: &Message, channel: &str, reason: &str) -> Outcome {
        match common::dead_letter::publish(
            &self.js,
            &self.topology,
            Service::Responder.name(),
            channel,
            message,
            reason,
        )
        .await
        {
            Ok(()) => {
                self.status.error(channel, reason, "fix the cause, then `responder --dead-letters` and `--redrive`");
                tracing::error!(reason, "reply dead-lettered");
                Outcome::Drop
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot dead-letter the reply; retrying");
                Outcome::Retry(Duration::from_secs(5))
            }
        }
    }
}
