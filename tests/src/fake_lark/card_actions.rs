//! A Lark user clicking a card's buttons and submitting its forms:
//! `card.action.trigger` callbacks as Lark sends them, and what Lark's client
//! does with the answer.
//!
//! - **Reading a card.** [`CardControls::of`] finds, anywhere in a card (JSON
//!   2.0 `body.elements`, nested in forms, columns, panels; JSON 1.0
//!   `action` elements too), every `button` with a `callback` behaviour (its
//!   `value`, `name`, text, `disabled`), and every `form` container with its
//!   input components (`input`, `select_static`, ... with `name`, label,
//!   `required`) and its submit button (`form_action_type: "submit"`).
//! - **The callback** ([`CardActionBuilder`]): schema 2.0, `header`
//!   `{event_id, token (the app's Verification Token), create_time (µs),
//!   event_type "card.action.trigger", tenant_key, app_id}`, `event`
//!   `{operator {tenant_key, user_id, open_id, union_id}, token "c-...",
//!   action {value, tag "button", timezone, name, form_value}, host
//!   "im_message", context {open_message_id, open_chat_id}}`: the fields of
//!   Lark's sample (`testdata/lark-samples/card_action_trigger.json`), less
//!   those of link previews (`delivery_type`, `context.url`,
//!   `preview_token`). `value` is the button's callback value as the card
//!   set it; `name` only when the button has one; `form_value` (forms only)
//!   maps each component's `name` to its value (a select's option `value`),
//!   for the components the user filled in (the fake leaves empty optional
//!   ones out). The user's ids are derived from the open_id as
//!   [`crate::lark_events::EventBuilder`] derives a sender's.
//! - **Delivery.** To a Request URL: encrypted and signed as events are
//!   ([`SignedRequest`]). Over the long connection: a data frame whose
//!   payload is the plain callback JSON, of type `card` or `event`
//!   ([`FrameType`]; Lark's official SDKs drop `card` frames and receive
//!   `card.action.trigger` in `event` frames), never pushed again; the
//!   answer is the ack's `data`, base64 of the answer JSON. Lark waits 3 s
//!   for the answer ([`ANSWER_WINDOW`]) and never sends a callback again.
//! - **The answer** ([`ClickOutcome`]): `{"toast": {"type", "content"},
//!   "card": {"type": "raw", "data": <card>}}`, both optional. In time and
//!   with HTTP 200 (ack code 200), a raw card replaces the message's card, as
//!   Lark's client shows it: the message's content, or, for a card sent by
//!   reference, the CardKit card itself. A late answer changes nothing (Lark
//!   shows the user an error).
//! - **What Lark's client refuses** ([`ClickError`]): a disabled button, a
//!   card still streaming (a CardKit card in streaming mode), a form missing
//!   a required component, a select value that is not one of its options.
//!   Hostile callbacks go through [`FakeLark::deliver_card_action`] with any
//!   JSON.
//!
//! For `sandbox chat` (another process), `POST /_sandbox/card_action`
//! ([`SandboxCardAction`]) clicks or submits as [`FakeLark::click`] and
//! [`FakeLark::submit_form`] do, at the Request URL, or over the long
//! connection when the ingress answers that the channel takes none
//! (`long_connection_only`), and answers the [`ClickOutcome`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use common::lark::crypto::EncryptKey;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::long_connection::LongConnection;
use super::{cardkit, FakeLark, Inner, Shared};
use crate::lark_events::{now_ms, random_hex, SignedRequest};

#[cfg(test)]
mod tests;

/// The event type of a card callback.
pub const CARD_ACTION_TRIGGER: &str = "card.action.trigger";
/// How long Lark waits for the answer to a callback.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(3);
/// The route `sandbox chat` clicks with.
pub const SANDBOX_CARD_ACTION_PATH: &str = "/_sandbox/card_action";
/// The tenant of the fake's users (as in [`crate::lark_events::EventBuilder`]).
const TENANT_KEY: &str = "736588c9260f175e";
/// How long the fake waits for an acknowledgement over the long connection
/// (past Lark's 3 s, so a test sees a late answer as late).
const ACK_WAIT: Duration = Duration::from_secs(6);

/// Which button of a card: its place among the card's callback buttons
/// (from 0, in document order, forms' submit buttons included), its text,
/// or its `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonRef {
    Index(usize),
    Text(String),
    Name(String),
}

impl From<usize> for ButtonRef {
    fn from(index: usize) -> Self {
        ButtonRef::Index(index)
    }
}

impl From<&str> for ButtonRef {
    fn from(text: &str) -> Self {
        ButtonRef::Text(text.to_owned())
    }
}

/// A button with a `callback` behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CardButton {
    /// Its place among the card's callback buttons (from 0).
    pub index: usize,
    /// `text.content`.
    pub text: String,
    pub name: Option<String>,
    /// The callback behaviour's `value` (or, in a JSON 1.0 card, the button's `value`).
    pub value: Value,
    pub disabled: bool,
    /// The form it is in, by name.
    pub form: Option<String>,
    /// `form_action_type: "submit"`.
    pub submit: bool,
}

/// An input component of a form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormComponent {
    /// `input`, `select_static`, ...
    pub tag: String,
    pub name: String,
    /// `label.content`, else `placeholder.content`, else the name.
    pub label: String,
    pub required: bool,
    /// An `input` with `input_type: "multiline_text"`.
    pub multiline: bool,
    /// A select's options: (text, value).
    pub options: Vec<(String, String)>,
    pub disabled: bool,
}

/// A `form` container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CardForm {
    pub name: String,
    pub components: Vec<FormComponent>,
    /// Its first submit button.
    pub submit: Option<CardButton>,
}

/// What a user can do with a card: see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CardControls {
    /// Every callback button, forms' included, in document order.
    pub buttons: Vec<CardButton>,
    pub forms: Vec<CardForm>,
}

impl CardControls {
    /// Reads a card's JSON (2.0 or 1.0).
    pub fn of(card: &Value) -> Self {
        let mut controls = CardControls::default();
        walk(card, None, &mut controls);
        controls
    }

    /// The buttons outside forms: the choices of a question card.
    pub fn choices(&self) -> Vec<&CardButton> {
        self.buttons.iter().filter(|b| b.form.is_none()).collect()
    }

    /// Anything to click or fill in.
    pub fn is_empty(&self) -> bool {
        self.buttons.is_empty() && self.forms.is_empty()
    }

    /// The button `which` names.
    pub fn find(&self, which: &ButtonRef) -> Option<&CardButton> {
        match which {
            ButtonRef::Index(i) => self.buttons.get(*i),
            ButtonRef::Text(t) => self.buttons.iter().find(|b| &b.text == t),
            ButtonRef::Name(n) => self.buttons.iter().find(|b| b.name.as_ref() == Some(n)),
        }
    }
}

fn text_content(v: Option<&Value>) -> Option<String> {
    v.and_then(|t| t.get("content")).and_then(Value::as_str).map(str::to_owned)
}

fn walk(v: &Value, form: Option<&str>, out: &mut CardControls) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, form, out)),
        Value::Object(map) => {
            let tag = map.get("tag").and_then(Value::as_str).unwrap_or_default();
            let name = map.get("name").and_then(Value::as_str).map(str::to_owned);
            match tag {
                "form" => {
                    let form_name = name.unwrap_or_default();
                    out.forms.push(CardForm { name: form_name.clone(), components: Vec::new(), submit: None });
                    map.values().for_each(|c| walk(c, Some(&form_name), out));
                    return;
                }
                "button" => {
                    let callback = map
                        .get("behaviors")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|b| b.get("type").and_then(Value::as_str) == Some("callback"))
                        .map(|b| b.get("value").cloned().unwrap_or(Value::Null))
                        // JSON 1.0: the button's own value.
                        .or_else(|| map.get("value").cloned());
                    let submit = map.get("form_action_type").and_then(Value::as_str) == Some("submit");
                    if callback.is_some() || submit {
                        let button = CardButton {
                            index: out.buttons.len(),
                            text: text_content(map.get("text")).unwrap_or_default(),
                            name,
                            value: callback.unwrap_or(Value::Null),
                            disabled: map.get("disabled").and_then(Value::as_bool).unwrap_or(false),
                            form: form.map(str::to_owned),
                            submit,
                        };
                        if let (true, Some(f)) =
                            (submit, out.forms.iter_mut().rev().find(|f| Some(f.name.as_str()) == form))
                        {
                            f.submit.get_or_insert_with(|| button.clone());
                        }
                        out.buttons.push(button);
                    }
                    return;
                }
                _ => {}
            }
            if let (Some(form_name), Some(name)) = (form, &name) {
                if is_input(tag) {
                    let options = map
                        .get("options")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|o| {
                            let text = text_content(o.get("text")).unwrap_or_default();
                            (text, o.get("value").and_then(Value::as_str).unwrap_or_default().to_owned())
                        })
                        .collect();
                    let component = FormComponent {
                        tag: tag.to_owned(),
                        name: name.clone(),
                        label: text_content(map.get("label"))
                            .or_else(|| text_content(map.get("placeholder")))
                            .unwrap_or_else(|| name.clone()),
                        required: map.get("required").and_then(Value::as_bool).unwrap_or(false),
                        multiline: map.get("input_type").and_then(Value::as_str) == Some("multiline_text"),
                        options,
                        disabled: map.get("disabled").and_then(Value::as_bool).unwrap_or(false),
                    };
                    if let Some(f) = out.forms.iter_mut().rev().find(|f| f.name == form_name) {
                        f.components.push(component);
                    }
                    return;
                }
            }
            map.values().for_each(|c| walk(c, form, out));
        }
        _ => {}
    }
}

/// The tags of the components a form submits.
fn is_input(tag: &str) -> bool {
    matches!(
        tag,
        "input"
            | "select_static"
            | "multi_select_static"
            | "select_person"
            | "multi_select_person"
            | "date_picker"
            | "picker_time"
            | "picker_datetime"
            | "checker"
            | "select_img"
    )
}

/// Builds a `card.action.trigger` callback (see the module documentation):
/// a click by default; setters for every field a test may want to forge.
#[derive(Clone, Debug)]
pub struct CardActionBuilder {
    app_id: String,
    tenant_key: String,
    token: Option<String>,
    event_id: Option<String>,
    create_time_us: Option<i64>,
    operator_open_id: String,
    user_id: Option<String>,
    union_id: Option<String>,
    action_token: Option<String>,
    value: Value,
    tag: String,
    name: Option<String>,
    form_value: Option<Map<String, Value>>,
    timezone: String,
    host: String,
    message_id: Option<String>,
    chat_id: Option<String>,
}

impl CardActionBuilder {
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            tenant_key: TENANT_KEY.to_owned(),
            token: None,
            event_id: None,
            create_time_us: None,
            operator_open_id: "ou_card_user".to_owned(),
            user_id: None,
            union_id: None,
            action_token: None,
            value: json!({}),
            tag: "button".to_owned(),
            name: None,
            form_value: None,
            timezone: "Asia/Shanghai".to_owned(),
            host: "im_message".to_owned(),
            message_id: None,
            chat_id: None,
        }
    }

    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = app_id.into();
        self
    }

    /// `header.token`: the app's Verification Token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    /// `header.create_time`, in microseconds as Lark writes it.
    pub fn create_time_us(mut self, us: i64) -> Self {
        self.create_time_us = Some(us);
        self
    }

    pub fn tenant_key(mut self, tenant_key: impl Into<String>) -> Self {
        self.tenant_key = tenant_key.into();
        self
    }

    /// The user who clicked (`event.operator.open_id`; `user_id` and
    /// `union_id` are derived from it unless set).
    pub fn operator(mut self, open_id: impl Into<String>) -> Self {
        self.operator_open_id = open_id.into();
        self
    }

    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    pub fn union_id(mut self, union_id: impl Into<String>) -> Self {
        self.union_id = Some(union_id.into());
        self
    }

    /// `event.token`: the callback's own token (`c-` and hex by default).
    pub fn action_token(mut self, token: impl Into<String>) -> Self {
        self.action_token = Some(token.into());
        self
    }

    /// `event.action.value`: the button's callback value.
    pub fn value(mut self, value: Value) -> Self {
        self.value = value;
        self
    }

    /// `event.action.tag` (`button` by default).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// `event.action.name`: the component's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `event.action.form_value`: component name → value.
    pub fn form_value(mut self, form_value: Map<String, Value>) -> Self {
        self.form_value = Some(form_value);
        self
    }

    /// `event.action.form_value` from string pairs.
    pub fn form_values(self, values: &[(&str, &str)]) -> Self {
        let map = values.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        self.form_value(map)
    }

    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// `event.host` (`im_message` by default).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// `event.context.open_message_id`: the card's message.
    pub fn message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }

    /// `event.context.open_chat_id`.
    pub fn chat_id(mut self, chat_id: impl Into<String>) -> Self {
        self.chat_id = Some(chat_id.into());
        self
    }

    /// The callback JSON.
    pub fn build(&self) -> Value {
        let create_time = self.create_time_us.unwrap_or_else(|| now_ms() * 1000);
        let mut header = json!({
            "event_id": self.event_id.clone().unwrap_or_else(|| random_hex(16)),
            "create_time": create_time.to_string(),
            "event_type": CARD_ACTION_TRIGGER,
            "tenant_key": self.tenant_key,
            "app_id": self.app_id,
        });
        if let Some(token) = &self.token {
            header["token"] = json!(token);
        }
        let open_id = &self.operator_open_id;
        let hash = crate::lark_events::hash_hex(open_id);
        let mut action = json!({ "value": self.value, "tag": self.tag, "timezone": self.timezone });
        if let Some(name) = &self.name {
            action["name"] = json!(name);
        }
        if let Some(form_value) = &self.form_value {
            action["form_value"] = Value::Object(form_value.clone());
        }
        let mut context = json!({});
        if let Some(id) = &self.message_id {
            context["open_message_id"] = json!(id);
        }
        if let Some(id) = &self.chat_id {
            context["open_chat_id"] = json!(id);
        }
        json!({
            "schema": "2.0",
            "header": header,
            "event": {
                "operator": {
                    "tenant_key": self.tenant_key,
                    "user_id": self.user_id.clone().unwrap_or_else(|| hash[..8].to_owned()),
                    "open_id": open_id,
                    "union_id": self.union_id.clone().unwrap_or_else(|| format!("on_{hash}")),
                },
                "token": self.action_token.clone().unwrap_or_else(|| format!("c-{}", random_hex(20))),
                "action": action,
                "host": self.host,
                "context": context,
            }
        })
    }
}

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
    fn as_str(self) -> &'static str {
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

    fn of_answer(status: u16, raw: String, elapsed: Duration, callback: Value, transport: Transport) -> Self {
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

/// What the callbacks need of the fake: its state, its long connection, a client.
#[derive(Clone)]
pub(super) struct Clicks {
    shared: Arc<Shared>,
    lc: LongConnection,
    client: reqwest::Client,
}

/// A visible card message, as a click needs it.
struct Shown {
    app_id: String,
    chat_id: Option<String>,
    card: Value,
    streaming: bool,
}

fn shown(inner: &Inner, message_id: &str) -> Result<Shown, ClickError> {
    let m = inner
        .visible
        .iter()
        .find(|m| m.message_id == message_id)
        .ok_or_else(|| ClickError::NoSuchMessage(message_id.to_owned()))?;
    if m.msg_type != "interactive" {
        return Err(ClickError::NotACard(message_id.to_owned()));
    }
    let m = inner.with_card(m);
    let (card, streaming) = match &m.card {
        Some(card) => (card.json.clone(), card.streaming),
        None => (m.content.clone(), false),
    };
    Ok(Shown { app_id: m.app_id.clone(), chat_id: m.chat_id.clone(), card, streaming })
}

impl Clicks {
    pub(super) fn new(shared: Arc<Shared>, lc: LongConnection) -> Self {
        Self { shared, lc, client: reqwest::Client::new() }
    }

    /// The builder of a callback from `operator` on message `message_id`:
    /// its app, token, message and chat filled in.
    fn builder(&self, shown: &Shown, message_id: &str, operator: &str) -> CardActionBuilder {
        let token = self.shared.lock().apps.get(&shown.app_id).and_then(|a| a.app.verification_token.clone());
        let mut builder = CardActionBuilder::new(&shown.app_id).operator(operator).message_id(message_id);
        if let Some(token) = token {
            builder = builder.token(token);
        }
        if let Some(chat) = &shown.chat_id {
            builder = builder.chat_id(chat);
        }
        builder
    }

    /// The callback of a click on `button`, as Lark's client allows it.
    pub(super) fn click_callback(
        &self,
        message_id: &str,
        button: &ButtonRef,
        operator: &str,
    ) -> Result<CardActionBuilder, ClickError> {
        let shown = shown(&self.shared.lock(), message_id)?;
        let controls = CardControls::of(&shown.card);
        let found = controls.find(button).ok_or_else(|| ClickError::NoSuchButton {
            button: format!("{button:?}"),
            available: controls.buttons.iter().map(|b| b.text.clone()).collect(),
        })?;
        if shown.streaming {
            return Err(ClickError::Streaming);
        }
        if found.disabled {
            return Err(ClickError::Disabled(found.text.clone()));
        }
        let mut builder = self.builder(&shown, message_id, operator).value(found.value.clone());
        if let Some(name) = &found.name {
            builder = builder.name(name);
        }
        Ok(builder)
    }

    /// The callback of submitting the card's (first) form with `values`
    /// (component name → value; a select's option `value`).
    pub(super) fn submit_callback(
        &self,
        message_id: &str,
        values: &[(&str, &str)],
        operator: &str,
    ) -> Result<CardActionBuilder, ClickError> {
        let shown = shown(&self.shared.lock(), message_id)?;
        let controls = CardControls::of(&shown.card);
        let form = controls.forms.first().ok_or(ClickError::NoForm)?;
        let submit = form.submit.as_ref().ok_or(ClickError::NoForm)?;
        if shown.streaming {
            return Err(ClickError::Streaming);
        }
        if submit.disabled {
            return Err(ClickError::Disabled(submit.text.clone()));
        }
        let mut form_value = Map::new();
        for (name, value) in values {
            let component = form
                .components
                .iter()
                .find(|c| c.name == *name)
                .ok_or_else(|| ClickError::UnknownComponent((*name).to_owned()))?;
            if !component.options.is_empty() && !value.is_empty() && !component.options.iter().any(|(_, v)| v == value)
            {
                return Err(ClickError::NotAnOption { component: (*name).to_owned(), value: (*value).to_owned() });
            }
            if !value.is_empty() {
                let v = match component.tag.as_str() {
                    "multi_select_static" | "multi_select_person" => json!([value]),
                    _ => json!(value),
                };
                form_value.insert((*name).to_owned(), v);
            }
        }
        let missing: Vec<String> = form
            .components
            .iter()
            .filter(|c| c.required && !form_value.contains_key(&c.name))
            .map(|c| c.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(ClickError::RequiredMissing(missing));
        }
        let mut builder = self.builder(&shown, message_id, operator).value(submit.value.clone()).form_value(form_value);
        if let Some(name) = &submit.name {
            builder = builder.name(name);
        }
        Ok(builder)
    }

    /// POSTs `callback` to a Request URL as Lark does, and applies the answer.
    pub(super) async fn post(
        &self,
        url: &str,
        key: Option<&EncryptKey>,
        callback: &Value,
    ) -> Result<ClickOutcome, ClickError> {
        let started = Instant::now();
        let response = SignedRequest::now(callback, key)
            .post_to(&self.client, url)
            .await
            .map_err(|e| ClickError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let raw = response.text().await.map_err(|e| ClickError::Transport(e.to_string()))?;
        let transport = Transport::RequestUrl { url: url.to_owned() };
        let outcome = ClickOutcome::of_answer(status, raw, started.elapsed(), callback.clone(), transport);
        Ok(self.finish(outcome))
    }

    /// Pushes `callback` over its app's long connection and reads the answer
    /// from the acknowledgement; applies it.
    pub(super) async fn push(&self, callback: &Value, frame_type: FrameType) -> Result<ClickOutcome, ClickError> {
        let app_id = callback.pointer("/header/app_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let started = Instant::now();
        let id = self
            .lc
            .push_callback(&app_id, callback.to_string().into_bytes(), frame_type.as_str())
            .ok_or_else(|| ClickError::NoLongConnection(app_id.clone()))?;
        let transport = Transport::LongConnection { frame_type };
        let ack = loop {
            if let Some(ack) = self.lc.acks_of(&id).into_iter().next() {
                break Some(ack);
            }
            if started.elapsed() >= ACK_WAIT {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let elapsed = started.elapsed();
        let Some(ack) = ack else {
            let outcome = ClickOutcome::of_answer(0, String::new(), elapsed, callback.clone(), transport);
            return Ok(self.finish(outcome));
        };
        let status = ack.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(0);
        let raw = ack
            .payload
            .get("data")
            .and_then(Value::as_str)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let outcome = ClickOutcome::of_answer(status, raw, elapsed, callback.clone(), transport);
        Ok(self.finish(outcome))
    }

    /// Applies the answer's card, as Lark's client would, and records the outcome.
    fn finish(&self, mut outcome: ClickOutcome) -> ClickOutcome {
        let mut inner = self.shared.lock();
        let message_id = outcome.callback.pointer("/event/context/open_message_id").and_then(Value::as_str);
        if let (true, 200, Some(card), Some(id)) = (outcome.in_time, outcome.status, &outcome.card, message_id) {
            outcome.card_applied = show_card(&mut inner, id, card.clone());
        }
        inner.card_actions.push(outcome.clone());
        outcome
    }
}

/// The message `message_id` shows `card` from now on: its content, or its
/// CardKit card when it shows one by reference. False when no such card message.
fn show_card(inner: &mut Inner, message_id: &str, card: Value) -> bool {
    let Some(index) = inner.visible.iter().position(|m| m.message_id == message_id && m.msg_type == "interactive")
    else {
        return false;
    };
    let m = &inner.visible[index];
    if let Some(card_id) = cardkit::card_id_of(&m.msg_type, &m.content).map(str::to_owned) {
        return cardkit::replace_by_callback(inner, &card_id, card);
    }
    inner.visible[index].content = card;
    inner.touch(index);
    true
}

impl FakeLark {
    fn clicks(&self) -> Clicks {
        Clicks { shared: self.shared.clone(), lc: self.long_connection.clone(), client: self.client.clone() }
    }

    /// The callback a click by `operator_open_id` on `button` of the card
    /// message `message_id` would send (value, name, message, chat and token
    /// filled in), as a builder a test may alter: see [`CardActionBuilder`].
    pub fn card_action_for(
        &self,
        message_id: &str,
        button: impl Into<ButtonRef>,
        operator_open_id: &str,
    ) -> Result<CardActionBuilder, ClickError> {
        self.clicks().click_callback(message_id, &button.into(), operator_open_id)
    }

    /// The callback submitting the card's form with `values` would send: see [`FakeLark::submit_form`].
    pub fn form_action_for(
        &self,
        message_id: &str,
        values: &[(&str, &str)],
        operator_open_id: &str,
    ) -> Result<CardActionBuilder, ClickError> {
        self.clicks().submit_callback(message_id, values, operator_open_id)
    }

    /// What the buttons and forms of the card message `message_id` are now.
    pub fn card_controls(&self, message_id: &str) -> Result<CardControls, ClickError> {
        Ok(CardControls::of(&shown(&self.shared.lock(), message_id)?.card))
    }

    /// `operator_open_id` clicks `button` of the card message `message_id`:
    /// the callback goes to the Request URL, encrypted and signed with `key`
    /// when given; the answer's card replaces the message's when it came in time.
    pub async fn click(
        &self,
        ingress_events_url: &str,
        key: Option<&EncryptKey>,
        message_id: &str,
        button: impl Into<ButtonRef>,
        operator_open_id: &str,
    ) -> Result<ClickOutcome, ClickError> {
        let clicks = self.clicks();
        let callback = clicks.click_callback(message_id, &button.into(), operator_open_id)?.build();
        clicks.post(ingress_events_url, key, &callback).await
    }

    /// `operator_open_id` fills in the card's form (component name → value;
    /// a select's option value; empty for nothing) and submits it: see [`FakeLark::click`].
    pub async fn submit_form(
        &self,
        ingress_events_url: &str,
        key: Option<&EncryptKey>,
        message_id: &str,
        values: &[(&str, &str)],
        operator_open_id: &str,
    ) -> Result<ClickOutcome, ClickError> {
        let clicks = self.clicks();
        let callback = clicks.submit_callback(message_id, values, operator_open_id)?.build();
        clicks.post(ingress_events_url, key, &callback).await
    }

    /// [`FakeLark::click`] over the long connection of the card's app.
    pub async fn click_over_long_connection(
        &self,
        message_id: &str,
        button: impl Into<ButtonRef>,
        operator_open_id: &str,
        frame_type: FrameType,
    ) -> Result<ClickOutcome, ClickError> {
        let clicks = self.clicks();
        let callback = clicks.click_callback(message_id, &button.into(), operator_open_id)?.build();
        clicks.push(&callback, frame_type).await
    }

    /// [`FakeLark::submit_form`] over the long connection of the card's app.
    pub async fn submit_form_over_long_connection(
        &self,
        message_id: &str,
        values: &[(&str, &str)],
        operator_open_id: &str,
        frame_type: FrameType,
    ) -> Result<ClickOutcome, ClickError> {
        let clicks = self.clicks();
        let callback = clicks.submit_callback(message_id, values, operator_open_id)?.build();
        clicks.push(&callback, frame_type).await
    }

    /// Any JSON as a callback to a Request URL (encrypted and signed when
    /// `key` is given), for hostile tests; its answer is applied like a click's.
    pub async fn deliver_card_action(
        &self,
        url: &str,
        key: Option<&EncryptKey>,
        callback: &Value,
    ) -> Result<ClickOutcome, ClickError> {
        self.clicks().post(url, key, callback).await
    }

    /// Any JSON as a callback over the long connection of its `header.app_id`.
    pub async fn push_card_action(&self, callback: &Value, frame_type: FrameType) -> Result<ClickOutcome, ClickError> {
        self.clicks().push(callback, frame_type).await
    }

    /// Every callback sent so far and what came of it, in order.
    pub fn card_actions(&self) -> Vec<ClickOutcome> {
        self.shared.lock().card_actions.clone()
    }
}

/// The body of `POST /_sandbox/card_action`: a click (`button`) or a form
/// submitted (`form_values`) on `message_id` by `operator_open_id`, sent to
/// `url` (encrypted and signed with `encrypt_key` when given), or over the
/// long connection (frames of type `event`) when the ingress answers 403
/// `long_connection_only`. `verification_token` replaces the app's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxCardAction {
    pub url: String,
    pub encrypt_key: Option<String>,
    pub verification_token: Option<String>,
    pub message_id: String,
    pub operator_open_id: String,
    #[serde(default)]
    pub button: Option<ButtonRef>,
    #[serde(default)]
    pub form_values: Option<Vec<(String, String)>>,
}

pub(super) fn routes(clicks: Clicks) -> Router {
    Router::new().route(SANDBOX_CARD_ACTION_PATH, post(sandbox_card_action)).with_state(clicks)
}

async fn sandbox_card_action(
    State(clicks): State<Clicks>,
    Json(request): Json<SandboxCardAction>,
) -> (StatusCode, Json<Value>) {
    let refused = |e: ClickError| (StatusCode::CONFLICT, Json(json!({ "error": e.to_string() })));
    let builder = match (&request.button, &request.form_values) {
        (Some(button), _) => clicks.click_callback(&request.message_id, button, &request.operator_open_id),
        (None, Some(values)) => {
            let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            clicks.submit_callback(&request.message_id, &values, &request.operator_open_id)
        }
        (None, None) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": "a button or form_values is needed" })));
        }
    };
    let mut builder = match builder {
        Ok(builder) => builder,
        Err(e) => return refused(e),
    };
    if let Some(token) = &request.verification_token {
        builder = builder.token(token);
    }
    let callback = builder.build();
    let key = request.encrypt_key.clone().filter(|k| !k.is_empty()).map(|k| EncryptKey::new(SecretString::from(k)));
    let mut outcome = clicks.post(&request.url, key.as_ref(), &callback).await;
    if let Ok(o) = &outcome {
        if o.status == 403 && o.raw_body.contains("long_connection_only") {
            // The channel takes its callbacks over the long connection: Lark sends them there.
            outcome = clicks.push(&callback, FrameType::Event).await;
        }
    }
    match outcome {
        Ok(outcome) => (StatusCode::OK, Json(serde_json::to_value(outcome).unwrap_or_default())),
        Err(e) => refused(e),
    }
}
