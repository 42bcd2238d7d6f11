//! A click on a question card (`card.action.trigger`), from the Request URL
//! or the long connection, already decrypted and verified like any event.
//!
//! Lark never sends a card action again and waits 3 s for the answer, which
//! may carry a toast and a new card. So the click is checked here, against
//! the question waiting in its conversation (`{ns}_questions`), before it is
//! stored: a refusal (expired, another member, not an option, a required
//! field empty) is a toast at once and FastGPT is never asked. An accepted
//! click is stored in JetStream under its conversation, with one
//! de-duplication key per question (a double click, or the same click at two
//! replicas, is stored once), and answered with the card showing the choice,
//! its buttons disabled.

use async_nats::jetstream::{self, kv};
use common::answer::FeedbackClick;
use common::channel::Channel;
use common::lark::card_action::CardAction;
use common::question::{card, clip, CardState, Choice, Click, Pending, Refusal};
use common::status::StatusBoard;
use common::topology::{keys, Topology};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::accept::Via;
use crate::callback::VerifiedEvent;
use crate::publish::Publisher;

/// What the ingress needs to answer clicks.
pub struct Clicks {
    js: jetstream::Context,
    topology: Topology,
    /// Opened at the first click (the bucket is declared by the relay, or here).
    questions: OnceCell<kv::Store>,
}

impl Clicks {
    pub fn new(js: jetstream::Context, topology: Topology) -> Self {
        Self { js, topology, questions: OnceCell::new() }
    }

    async fn questions(&self) -> Result<&kv::Store, String> {
        self.questions.get_or_try_init(|| self.topology.questions(&self.js)).await.map_err(|e| e.to_string())
    }
}

/// The answer to one click: Lark shows the toast, and the card if any.
pub async fn answer(
    clicks: &Clicks,
    publisher: &Publisher,
    status: &StatusBoard,
    channel: &Channel,
    event: &VerifiedEvent,
    via: Via,
) -> Value {
    if let Some(Ok(action)) = CardAction::of(&event.envelope) {
        if let Some(click) = FeedbackClick::read(&action.action.value) {
            return feedback(publisher, status, channel, event, via, &action, &click).await;
        }
    }
    let outcome = take(clicks, publisher, status, channel, event, via).await;
    let label = match &outcome {
        Ok(_) => "accepted",
        Err(Answer::Refused(r)) => r.label(),
        Err(Answer::Unreadable) => "unreadable",
        Err(Answer::NotStored) => "not_stored",
    };
    metrics::counter!(common::metric_names::INGRESS_CLICKS_TOTAL, "channel" => channel.id.clone(), "outcome" => label)
        .increment(1);
    match outcome {
        Ok((summary, new_card)) => json!({
            "toast": { "type": "success", "content": format!("Got it: {}", clip(&summary, 60)) },
            "card": { "type": "raw", "data": new_card },
        }),
        Err(Answer::Refused(Refusal::Answered)) => toast("info", &Refusal::Answered.toast()),
        Err(Answer::Refused(r)) => toast("warning", &r.toast()),
        Err(Answer::Unreadable) => toast("error", "This card action could not be read."),
        Err(Answer::NotStored) => toast("error", "Your answer could not be recorded. Please try again in a moment."),
    }
}

enum Answer {
    Refused(Refusal),
    Unreadable,
    NotStored,
}

async fn take(
    clicks: &Clicks,
    publisher: &Publisher,
    status: &StatusBoard,
    channel: &Channel,
    event: &VerifiedEvent,
    via: Via,
) -> Result<(String, Value), Answer> {
    let action = match CardAction::of(&event.envelope) {
        Some(Ok(a)) => a,
        _ => return Err(Answer::Unreadable),
    };
    let click = Click::read(&action.action.value, action.action.form_value.as_ref())
        .ok_or(Answer::Refused(Refusal::NotOurs))?;
    let operator = action.operator.open_id.as_deref();
    let questions = clicks.questions().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot open the questions bucket; the click is not taken");
        Answer::NotStored
    })?;
    let key = keys::question(&channel.id, &click.conversation);
    let entry = questions.entry(&key).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the conversation's question; the click is not taken");
        Answer::NotStored
    })?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Err(Answer::Refused(Refusal::Expired));
    };
    let mut pending: Pending = serde_json::from_slice(&entry.value).map_err(|_| Answer::Refused(Refusal::Expired))?;
    if pending.question.id == click.question && pending.answered_by.is_some() {
        return Err(Answer::Refused(Refusal::Answered));
    }
    let chat = action.context.open_chat_id.as_deref();
    let resolved = pending.resolve(&click, operator, chat).map_err(Answer::Refused)?;
    let stored = crate::accept::store(publisher, status, channel, event, via).await.map_err(|_| Answer::NotStored)?;
    if stored.duplicate {
        return Err(Answer::Refused(Refusal::Answered));
    }
    // Later clicks see it answered (the de-duplication key covers the next
    // 10 minutes, this the card's lifetime). Losing this race costs nothing.
    pending.answered_by = Some(operator.unwrap_or_default().to_owned());
    if let Ok(bytes) = serde_json::to_vec(&pending) {
        if let Err(e) = questions.update(&key, bytes.into(), entry.revision).await {
            tracing::debug!(error = %e, "cannot mark the question answered (the stored click still counts once)");
        }
    }
    let option = match click.choice {
        Choice::Option(i) => Some(i),
        Choice::Form(_) => None,
    };
    let shown = card(&pending.question, &CardState::Answered { summary: &resolved.summary, option }, escape);
    tracing::info!(question = %click.question, "click stored; the workflow resumes");
    Ok((resolved.summary, shown))
}

/// A 👍 / 👎 click: the asker's is stored for the relay (which tells
/// FastGPT) and thanked; anyone else's is a toast and nothing else.
async fn feedback(
    publisher: &Publisher,
    status: &StatusBoard,
    channel: &Channel,
    event: &VerifiedEvent,
    via: Via,
    action: &CardAction,
    click: &FeedbackClick,
) -> Value {
    let allowed = click.allowed(action.operator.open_id.as_deref(), action.context.open_chat_id.as_deref());
    let (label, answer) = if !allowed {
        ("not_the_asker", toast("warning", common::answer::NOT_YOURS))
    } else {
        match crate::accept::store(publisher, status, channel, event, via).await {
            Ok(_) => ("accepted", toast("success", click.verdict.toast())),
            Err(_) => {
                ("not_stored", toast("error", "Your rating could not be recorded. Please try again in a moment."))
            }
        }
    };
    metrics::counter!(common::metric_names::INGRESS_FEEDBACK_TOTAL, "channel" => channel.id.clone(), "outcome" => label)
        .increment(1);
    answer
}

fn toast(kind: &str, content: &str) -> Value {
    json!({ "toast": { "type": kind, "content": content } })
}

/// Markup in what a user typed (a form's values shown back) stays inert,
/// by the same rules as FastGPT's answers.
fn escape(s: &str) -> String {
    common::neutralize::neutralize(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_shown_back_are_markup_inert() {
        assert_ne!(escape("<at id=all></at>"), "<at id=all></at>", "a mention made inert");
    }
}
