//! What came of a callback (the answer, read as Lark's client reads it), and
//! why a click was not sent.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ANSWER_WINDOW;

/// The toast of an answer: `{"type": "info|success|error|warning", "content"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toast {
    pub kind: String,
    pub content: String,
}

/// How a callback reached the bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// POSTed to the Request URL.
    RequestUrl { url: String },
    /// Pushed over the long connection, in a frame of this type.
    LongConnection { frame_type: FrameType },
}

/// The `type` header of the long connection's data frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameType {
    /// `card`.
    #[default]
    Card,
    /// `event` (how Lark's SDKs receive `card.action.trigger`).
    Event,
}

impl FrameType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            FrameType::Card => "card",
            FrameType::Event => "event",
        }
    }
}

/// What came of one callback: see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClickOutcome {
    /// The HTTP status (the ack's `code` over the long connection); 0 when
    /// no answer came.
    pub status: u16,
    /// The answer JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The answer as it came.
    pub raw_body: String,
    pub toast: Option<Toast>,
    /// The card of the answer (`card.data` of a `raw` card).
    pub card: Option<Value>,
    /// How long the bridge took to answer, in milliseconds.
    pub elapsed_ms: u64,
    /// Within Lark's 3 s: only then does the user see the toast and the card.
    pub in_time: bool,
    /// The message now shows the answer's card.
    pub card_applied: bool,
    /// The callback sent.
    pub callback: Value,
    pub transport: Transport,
}

impl ClickOutcome {
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms)
    }

    /// The toast's text, or "".
    pub fn toast_text(&self) -> &str {
        self.toast.as_ref().map_or("", |t| t.content.as_str())
    }

    pub(super) fn of_answer(
        status: u16,
        raw: String,
        elapsed: Duration,
        callback: Value,
        transport: Transport,
    ) -> Self {
        let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        let toast = body.get("toast").map(|t| Toast {
            kind: t.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
            content: t.get("content").and_then(Value::as_str).unwrap_or_default().to_owned(),
        });
        let card = body.get("card").filter(|c| c.get("type").and_then(Value::as_str) == Some("raw")).and_then(|c| {
            match c.get("data") {
                Some(Value::String(s)) => serde_json::from_str(s).ok(),
                Some(data @ Value::Object(_)) => Some(data.clone()),
                _ => None,
            }
        });
        ClickOutcome {
            status,
            body,
            raw_body: raw,
            toast,
            card,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            in_time: status != 0 && elapsed <= ANSWER_WINDOW,
            card_applied: false,
            callback,
            transport,
        }
    }
}

/// Why a click was not sent, or failed on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClickError {
    /// No visible message with this id.
    NoSuchMessage(String),
    /// The message is not a card.
    NotACard(String),
    /// No such button; the card's buttons' texts.
    NoSuchButton { button: String, available: Vec<String> },
    /// Lark's client does not let a disabled button be clicked.
    Disabled(String),
    /// Lark's client refuses clicks on a card while it streams.
    Streaming,
    /// The card has no form.
    NoForm,
    /// No component of that name in the form.
    UnknownComponent(String),
    /// Lark's client does not submit a form with these required components empty.
    RequiredMissing(Vec<String>),
    /// A value that is none of the select's options.
    NotAnOption { component: String, value: String },
    /// The app has no long connection open.
    NoLongConnection(String),
    /// The request failed on the way.
    Transport(String),
}

impl std::fmt::Display for ClickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClickError::NoSuchMessage(id) => write!(f, "no visible message {id}"),
            ClickError::NotACard(id) => write!(f, "message {id} is not a card"),
            ClickError::NoSuchButton { button, available } => {
                write!(f, "no button {button} in the card (its buttons: {})", available.join(", "))
            }
            ClickError::Disabled(text) => write!(f, "the button {text:?} is disabled"),
            ClickError::Streaming => write!(f, "the card is still streaming: Lark takes no click on it"),
            ClickError::NoForm => write!(f, "the card has no form"),
            ClickError::UnknownComponent(name) => write!(f, "the form has no component {name:?}"),
            ClickError::RequiredMissing(names) => write!(f, "required and empty: {}", names.join(", ")),
            ClickError::NotAnOption { component, value } => {
                write!(f, "{value:?} is not one of the options of {component:?}")
            }
            ClickError::NoLongConnection(app) => write!(f, "app {app} has no long connection"),
            ClickError::Transport(e) => write!(f, "the callback failed on the way: {e}"),
        }
    }
}

impl std::error::Error for ClickError {}
