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
//!   ([`SignedRequest`](crate::lark_events::SignedRequest)). Over the long connection: a data frame whose
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
//!
//! The code: this file is what a test calls on [`FakeLark`]; `controls.rs`
//! reads a card, `callback.rs` builds the callback, `clicks.rs` checks,
//! sends and applies it, `outcome.rs` is what came of it, `sandbox.rs` the
//! route `sandbox chat` clicks with.

use std::time::Duration;

use common::lark::crypto::EncryptKey;
use serde_json::Value;

use super::FakeLark;

mod callback;
mod clicks;
mod controls;
mod outcome;
mod sandbox;
#[cfg(test)]
mod tests;

pub use callback::CardActionBuilder;
use clicks::shown;
pub(super) use clicks::Clicks;
pub use controls::{ButtonRef, CardButton, CardControls, CardForm, FormComponent};
pub use outcome::{ClickError, ClickOutcome, FrameType, Toast, Transport};
pub(super) use sandbox::routes;
pub use sandbox::SandboxCardAction;

/// The event type of a card callback.
pub const CARD_ACTION_TRIGGER: &str = "card.action.trigger";
/// How long Lark waits for the answer to a callback.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(3);
/// The route `sandbox chat` clicks with.
pub const SANDBOX_CARD_ACTION_PATH: &str = "/_sandbox/card_action";

impl FakeLark {
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
