//! A card shown by a message: the checks of a send or reply that shows a
//! card by reference (230099 with the CardKit code inside), the link from
//! the card to the visible message, a card replaced by a card action's
//! answer, and what the sandbox's long poll sees change (the streaming
//! window closing, a card updated).

use serde_json::Value;

use crate::fake_lark::api::Outcome;
use crate::fake_lark::{Inner, SentMessage};

impl Inner {
    /// A change a user can see in the visible message `index` (new, edited,
    /// or its card updated): the sandbox's long poll reports it.
    pub(in crate::fake_lark) fn touch(&mut self, index: usize) {
        self.stamp += 1;
        if self.visible_stamps.len() <= index {
            self.visible_stamps.resize(index + 1, 0);
        }
        self.visible_stamps[index] = self.stamp;
    }

    /// Closes the streaming mode of cards whose window has passed (a change
    /// the sandbox must see even when no request comes).
    pub(in crate::fake_lark) fn expire_streaming(&mut self) {
        let window = self.cardkit.window;
        let mut touched = Vec::new();
        for card in self.cardkit.cards.values_mut() {
            if card.refresh(window) {
                touched.extend(card.message.as_ref().map(|(i, _)| *i));
            }
        }
        touched.into_iter().for_each(|i| self.touch(i));
    }

    /// `m` with the card it shows, when it shows one by reference.
    pub(in crate::fake_lark) fn with_card(&self, m: &SentMessage) -> SentMessage {
        let mut m = m.clone();
        m.card = card_id_of(&m.msg_type, &m.content)
            .and_then(|id| self.cardkit.cards.get(id))
            .map(|c| c.snapshot(self.cardkit.window));
        m
    }
}

/// The card id of a message content that shows a card by reference.
pub(in crate::fake_lark) fn card_id_of<'a>(msg_type: &str, content: &'a Value) -> Option<&'a str> {
    (msg_type == "interactive" && content.get("type").and_then(Value::as_str) == Some("card"))
        .then(|| content.pointer("/data/card_id").and_then(Value::as_str))
        .flatten()
}

/// 230099, as Lark answers a send of a card it cannot build.
fn card_content_failed(inner_code: i64, inner_msg: &str) -> Outcome {
    let msg = format!("Failed to create card content, ext=ErrCode: {inner_code}; ErrMsg: {inner_msg}; ");
    Outcome::error(400, 230099, &msg)
}

/// Checks the card a send or reply shows by reference: `Ok(None)` for any other content.
pub(in crate::fake_lark) fn referenced_card(
    inner: &Inner,
    app_id: &str,
    msg_type: &str,
    content: &Value,
) -> Result<Option<String>, Outcome> {
    if msg_type != "interactive" || content.get("type").and_then(Value::as_str) != Some("card") {
        return Ok(None);
    }
    let Some(card_id) = card_id_of(msg_type, content) else {
        return Err(card_content_failed(10002, "data.card_id is required"));
    };
    match inner.cardkit.cards.get(card_id) {
        None => Err(card_content_failed(200740, "The card entity does not exist")),
        Some(card) if card.app_id != app_id => {
            Err(card_content_failed(300311, "The current application does not have permission to update/use this card"))
        }
        Some(card) if card.message.is_some() => {
            Err(card_content_failed(300311, "The card entity has already been sent: a card entity is sent once"))
        }
        Some(_) => Ok(Some(card_id.to_owned())),
    }
}

/// A card action's answer replaced the card (Lark's client shows the new
/// one): no `sequence`, streaming as its config says. False for an unknown card.
pub(in crate::fake_lark) fn replace_by_callback(inner: &mut Inner, card_id: &str, json: Value) -> bool {
    let Some(card) = inner.cardkit.cards.get_mut(card_id) else { return false };
    card.set_streaming(json.pointer("/config/streaming_mode") == Some(&Value::Bool(true)));
    if let Some(index) = card.replace_json(json) {
        inner.touch(index);
    }
    true
}

/// Records that the visible message `index` shows the card.
pub(in crate::fake_lark) fn link_message(inner: &mut Inner, card_id: &str, index: usize, message_id: &str) {
    if let Some(card) = inner.cardkit.cards.get_mut(card_id) {
        card.message = Some((index, message_id.to_owned()));
    }
}
