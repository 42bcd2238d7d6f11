//! A click on a question card (`card.action.trigger`, stored by the ingress
//! after it checked the click): the workflow resumes where it stopped.
//!
//! The click travels under its conversation, so it waits behind a question
//! still in work there. It is checked again against the conversation's
//! waiting question (the conversation may have moved on since the ingress
//! said yes), then FastGPT is asked in the same chatId with the option's
//! value or the form's JSON, and the answer goes to the same conversation
//! as a reply to the card. It may end in a new question card.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use common::channel::Channel;
use common::envelope::{click_dedup_key, ReplyBody, ReplyCommand, ReplyKind};
use common::lark::card_action::CardAction;
use common::lark::event::EventEnvelope;
use common::question::{Click, Refusal};
use common::worker::Outcome;

use crate::ask::Asking;
use crate::decision::say;
use crate::handler::Relay;

/// What the user is told when the click came too late (the ingress said
/// yes, then the conversation moved on before the click's turn).
pub const EXPIRED: &str = "This choice has expired: the conversation has moved on. Please ask again.";

impl Relay {
    pub(crate) async fn handle_click(
        &self,
        message: &Message,
        channel: &Arc<Channel>,
        envelope: &EventEnvelope,
        action: CardAction,
        attempt: u32,
    ) -> Outcome {
        if let Some(feedback) = common::answer::FeedbackClick::read(&action.action.value) {
            return self.handle_feedback(channel, &action, feedback, attempt).await;
        }
        let Some(click) = Click::read(&action.action.value, action.action.form_value.as_ref()) else {
            tracing::info!("a click on a card that is not one of the bridge's questions; ignored");
            return Outcome::Done;
        };
        let Some(card_message) = action.context.open_message_id.clone() else {
            return self.dead(message, &channel.id, "a card action without context.open_message_id").await;
        };
        let source = click_dedup_key(&channel.id, &click.question);
        let handled_key = match self.unanswered(&channel.id, &source).await {
            Ok(key) => key,
            Err(done_or_retry) => {
                // Answered, but maybe stopped before closing its question.
                if matches!(done_or_retry, Outcome::Done) {
                    self.questions.remove_if(&channel.id, &click.conversation, &click.question).await;
                }
                return done_or_retry;
            }
        };
        tracing::Span::current().record("message_id", card_message.as_str());
        let pending = match self.questions.get(&channel.id, &click.conversation).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the conversation's question; retrying");
                return Outcome::Retry(Duration::from_secs(1));
            }
        };
        let mut command = ReplyCommand {
            channel: channel.id.clone(),
            source,
            reply_to: card_message.clone(),
            chat_id: pending
                .as_ref()
                .map(|p| p.lark_chat_id.clone())
                .or(action.context.open_chat_id.clone())
                .unwrap_or_default(),
            in_thread: pending.as_ref().is_some_and(|p| p.in_thread),
            kind: ReplyKind::Answer,
            body: ReplyBody::markdown(String::new()),
        };
        let operator = action.operator.open_id.as_deref();
        let chat = action.context.open_chat_id.as_deref();
        let resolved = match pending.as_ref().map(|p| (p, p.resolve(&click, operator, chat))) {
            Some((p, Ok(resolved))) => (p, resolved),
            // The ingress took it, then the conversation moved on before its
            // turn: the user was told "Got it", so say it expired.
            Some((_, Err(Refusal::Expired))) | None => {
                metrics::counter!(common::metric_names::RELAY_CLICKS_TOTAL, "channel" => channel.id.clone(), "outcome" => "expired")
                    .increment(1);
                let decision = say(ReplyKind::Notice, EXPIRED);
                return self.conclude(message, attempt, &mut command, &handled_key, decision, None).await;
            }
            Some((_, Err(refusal))) => {
                tracing::info!(refusal = refusal.label(), event_id = %envelope.header.event_id, "click refused at resume");
                metrics::counter!(common::metric_names::RELAY_CLICKS_TOTAL, "channel" => channel.id.clone(), "outcome" => refusal.label())
                    .increment(1);
                return Outcome::Done; // the ingress refused it too, and said so
            }
        };
        let (pending, resolved) = resolved;
        metrics::counter!(common::metric_names::RELAY_CLICKS_TOTAL, "channel" => channel.id.clone(), "outcome" => "resumed")
            .increment(1);
        tracing::info!(question = %click.question, "resuming the workflow with the user's choice");
        let asking = Asking {
            chat_id: pending.chat_id.clone(),
            custom_uid: pending.custom_uid.clone(),
            text: resolved.content,
            attachments: Vec::new(),
            typing_on: &card_message,
            conversation: click.conversation.clone(),
            asked_by: pending.asked_by.clone(),
            resumes: pending.data_id.clone(),
        };
        if let Some(done) = self.conclude_kept(message, attempt, &mut command, &handled_key).await {
            return done;
        }
        let decision = match self.ask_fastgpt(channel, asking, attempt, &command).await {
            Ok(d) => d,
            Err(retry) => return retry,
        };
        let closing = decision.pending.is_none().then_some(click.conversation.as_str());
        self.conclude(message, attempt, &mut command, &handled_key, decision, closing).await
    }
}
