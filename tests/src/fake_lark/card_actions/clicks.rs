//! A click as Lark's client makes it: what it refuses, the callback sent to
//! a Request URL or over the long connection, and the answer's card shown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::lark::crypto::EncryptKey;
use serde_json::{json, Map, Value};

use super::{ButtonRef, CardActionBuilder, CardControls, ClickError, ClickOutcome, FrameType, Transport};
use crate::fake_lark::long_connection::LongConnection;
use crate::fake_lark::{cardkit, FakeLark, Inner, Shared};
use crate::lark_events::SignedRequest;

/// How long the fake waits for an acknowledgement over the long connection
/// (past Lark's 3 s, so a test sees a late answer as late).
const ACK_WAIT: Duration = Duration::from_secs(6);

/// What the callbacks need of the fake: its state, its long connection, a client.
#[derive(Clone)]
pub(in crate::fake_lark) struct Clicks {
    shared: Arc<Shared>,
    lc: LongConnection,
    client: reqwest::Client,
}

/// A visible card message, as a click needs it.
pub(super) struct Shown {
    app_id: String,
    chat_id: Option<String>,
    pub(super) card: Value,
    streaming: bool,
}

/// The visible card message `message_id`, as a click needs it.
pub(super) fn shown(inner: &Inner, message_id: &str) -> Result<Shown, ClickError> {
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
    pub(in crate::fake_lark) fn new(shared: Arc<Shared>, lc: LongConnection) -> Self {
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
    /// What a click on this fake's cards needs.
    pub(super) fn clicks(&self) -> Clicks {
        Clicks { shared: self.shared.clone(), lc: self.long_connection.clone(), client: self.client.clone() }
    }
}
