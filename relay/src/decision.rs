//! What the relay decides to say, on plain values: which path an event
//! takes, when a message needs no FastGPT at all, what FastGPT's answer or
//! failure comes to, and what a message typed while a question card waits
//! means. The handlers act on NATS and FastGPT around these; the decisions
//! themselves are tested here without either.

use std::time::Duration;

use common::envelope::ReplyKind;
use common::lark::card_action::CardAction;
use common::lark::event::{EventEnvelope, MessageEvent};
use common::question::{Interaction, Pending};
use common::worker::backoff;

use crate::attachments::Resource;
use crate::fastgpt::FastGptError;
use crate::incoming::Asked;
use crate::says;

/// What the relay decided to say for one event.
#[derive(Debug)]
pub(crate) struct Decision {
    pub kind: ReplyKind,
    pub text: String,
    /// FastGPT stopped to ask the user this: it waits for a click.
    pub pending: Option<Pending>,
    /// The answer's sources and feedback buttons (`crate::feedback`).
    pub extras: common::answer::Extras,
}

/// A decision with nothing to ask the user.
pub(crate) fn say(kind: ReplyKind, text: impl Into<String>) -> Decision {
    Decision { kind, text: text.into(), pending: None, extras: Default::default() }
}

/// Which path an event takes.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A click on a card's button or form.
    Click(CardAction),
    /// The bot entered a chat: the app's welcome text.
    Welcome,
    /// A user's message: a question, `Reset`, or something to explain.
    Message(Box<MessageEvent>),
    /// Acknowledged and dropped, nothing said (what and why, for the log).
    Ignored(&'static str),
    /// Cannot ever be handled: the reason, for the dead letter.
    Malformed(String),
}

/// Which path `envelope` takes. A message an app sent is ignored, so two
/// bots in one group never answer each other for ever.
pub(crate) fn classify(envelope: &EventEnvelope) -> Incoming {
    if let Some(action) = CardAction::of(envelope) {
        return match action {
            Ok(action) => Incoming::Click(action),
            Err(e) => Incoming::Malformed(format!("card.action.trigger with an unexpected shape: {e}")),
        };
    }
    if crate::welcome::is_welcome_event(&envelope.header.event_type) {
        return Incoming::Welcome;
    }
    match envelope.message_event() {
        None => Incoming::Ignored("not a message event; acknowledged and dropped"),
        Some(Err(e)) => Incoming::Malformed(format!("im.message.receive_v1 with an unexpected shape: {e}")),
        Some(Ok(event)) if event.sender.sender_type == "app" => {
            Incoming::Ignored("message sent by an app; ignored (no bot loops)")
        }
        Some(Ok(event)) => Incoming::Message(Box::new(event)),
    }
}

/// What a message asks of the relay, once read.
#[derive(Debug)]
pub(crate) enum Request {
    /// FastGPT cannot be asked (not text, or nothing left once the @mention
    /// is removed): the notice that says why.
    Notice(String),
    /// Start a new history for the conversation.
    Reset,
    /// Ask FastGPT this text.
    Ask(String),
    /// Ask FastGPT this text with these images or files, once downloaded.
    WithResources { text: String, resources: Vec<Resource> },
}

/// What `asked` asks of the relay.
pub(crate) fn request_of(asked: Asked) -> Request {
    match asked {
        Asked::NotText(message_type) => Request::Notice(crate::attachments::notice::not_readable(&message_type)),
        Asked::Empty => Request::Notice(says::EMPTY.into()),
        Asked::Reset => Request::Reset,
        Asked::Ask(text) => Request::Ask(text),
        Asked::WithResources { text, resources } => Request::WithResources { text, resources },
    }
}

/// What FastGPT's answer, or its failure, comes to.
#[derive(Debug)]
pub(crate) enum Answered {
    /// The answer, and what FastGPT waits for the user to choose or fill in
    /// (a question card).
    Asks(String, Interaction),
    /// A whole answer.
    Answer(String),
    /// FastGPT answered nothing.
    Empty,
    /// Worth asking again, after `delay`.
    Retry { delay: Duration, detail: String },
    /// No (whole) answer will come: what the user is told instead. `midway`
    /// when the card already showed part of an answer.
    Failed { error: FastGptError, text: String, midway: bool },
}

/// What FastGPT's `result` comes to at `attempt` of `max_attempts`;
/// `partial` is what a streamed card already shows, `interaction` what
/// FastGPT stopped to ask the user, if it did. A transient failure is retried until the last
/// attempt; a refusal is not (asking again cannot help). An answer that
/// stopped midway says so below what was written, so it never passes for a
/// whole answer.
pub(crate) fn answered(
    result: Result<String, FastGptError>,
    partial: &str,
    interaction: Option<Interaction>,
    attempt: u32,
    max_attempts: u32,
) -> Answered {
    match (result, interaction) {
        (Ok(answer), Some(interaction)) => Answered::Asks(answer, interaction),
        (Ok(answer), None) if answer.trim().is_empty() => Answered::Empty,
        (Ok(answer), None) => Answered::Answer(answer),
        (Err(FastGptError::Transient(detail)), _) if attempt < max_attempts => {
            Answered::Retry { delay: backoff(attempt, Duration::from_secs(60)), detail }
        }
        (Err(error), _) => {
            let apology = says::apology(&error, attempt);
            let midway = !partial.trim().is_empty();
            let text = if midway { crate::cut::interrupted(partial, &apology) } else { apology };
            Answered::Failed { error, text, midway }
        }
    }
}

/// A message typed while the conversation's question card waits for a
/// click. FastGPT gives it to the waiting node, which matches no option and
/// skips every branch: the answer is empty, and the user is told why. The
/// card expires unless this answer asks a new question (which replaces
/// it): returns whether the waiting card is to be closed.
pub(crate) fn while_a_card_waits(decision: &mut Decision, waiting: bool) -> bool {
    if waiting && decision.kind == ReplyKind::Answer && decision.text == says::EMPTY_ANSWER {
        decision.text = says::NOT_A_CHOICE.into();
    }
    waiting && decision.pending.is_none()
}

#[cfg(test)]
mod tests;
