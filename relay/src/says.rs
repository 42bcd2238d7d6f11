//! What the bot says on its own behalf: notices, and apologies naming the
//! kind of failure. Every user-visible sentence of the relay is here, so
//! wording is changed (or translated) in one place.

use crate::fastgpt::{FastGptError, Refusal};

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
