//! The end of an event: the reply command published to the responder
//! owning the chat, the event recorded as answered, the conversation's
//! previous question card closed; or, when the reply cannot be stored, the
//! answer kept for the next attempt, then an apology and a dead letter.
//! Once FastGPT has answered, a failure of this bookkeeping never asks it
//! again.

use std::time::Duration;

use async_nats::jetstream::Message;
use common::envelope::{ReplyBody, ReplyCommand, ReplyKind, MAX_REPLY_TEXT};
use common::service_name::Service;
use common::worker::{backoff, Outcome};

use crate::cut::fit_reply;
use crate::decision::Decision;
use crate::handler::Relay;
use crate::replies::PublishError;
use crate::says;
use crate::unsent::Kept;

impl Relay {
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

    /// Concludes with the answer an earlier attempt of this event got from
    /// FastGPT but could not store, if one is kept: FastGPT is not asked
    /// again. `None` when there is none (ask FastGPT).
    pub(crate) async fn conclude_kept(
        &self,
        message: &Message,
        attempt: u32,
        command: &mut ReplyCommand,
        handled_key: &str,
    ) -> Option<Outcome> {
        let kept = self.unsent.take(handled_key)?;
        tracing::info!("publishing the answer of the last attempt; FastGPT not asked again");
        let closing = kept.closing.as_deref();
        Some(self.conclude(message, attempt, command, handled_key, kept.decision, closing).await)
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
        (command.kind, command.body) = (ReplyKind::Apology, ReplyBody::markdown(says::UNDELIVERED));
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
