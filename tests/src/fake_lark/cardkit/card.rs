//! A card entity as the fake keeps it: its JSON, streaming mode and the
//! window that closes it, the last `sequence`, the `uuid`s seen, the message
//! that shows it; and the checks of a card's JSON that the create and
//! full-update endpoints share (codes in the module documentation).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Card;
use crate::fake_lark::api::Outcome;
use crate::fake_lark::content::content_text;
use crate::fake_lark::CARD_LIMIT_BYTES;

/// A card entity as the fake keeps it.
pub(super) struct CardState {
    pub(super) card_id: String,
    pub(super) app_id: String,
    pub(super) json: Value,
    pub(super) created_at: Instant,
    /// Streaming mode as last set (it may have run out since: see `refresh`).
    pub(super) streaming_on: bool,
    pub(super) streaming_since: Option<Instant>,
    /// Streaming closed by the window and no content update has been told yet (200850 next).
    pub(super) timeout_untold: bool,
    pub(super) last_sequence: i64,
    pub(super) version: u64,
    /// Operations admitted in the last second.
    pub(super) recent: VecDeque<Instant>,
    /// `uuid` → the request it came with.
    pub(super) uuids: HashMap<String, String>,
    /// The visible message that shows it: its index and id.
    pub(super) message: Option<(usize, String)>,
    pub(super) history: Vec<(Instant, String)>,
}

impl CardState {
    pub(super) fn text(&self) -> String {
        content_text("interactive", &self.json)
    }

    /// Closes streaming mode once its window has passed.
    pub(super) fn refresh(&mut self, window: Duration) -> bool {
        let expired = self.streaming_on && self.streaming_since.is_none_or(|since| since.elapsed() >= window);
        if expired {
            self.streaming_on = false;
            self.timeout_untold = true;
        }
        expired
    }

    /// Replaces the card's JSON (a new version; its text history grows when
    /// the text changed); the index of the message showing it, which the
    /// caller marks as changed.
    pub(super) fn replace_json(&mut self, json: Value) -> Option<usize> {
        let before = self.text();
        self.json = json;
        self.version += 1;
        let after = self.text();
        if after != before {
            self.history.push((Instant::now(), after));
        }
        self.message.as_ref().map(|(i, _)| *i)
    }

    /// Turns streaming mode on or off, as a setting or a full update says.
    pub(super) fn set_streaming(&mut self, on: bool) {
        if on && !self.streaming_on {
            self.streaming_since = Some(Instant::now());
        }
        self.streaming_on = on;
        self.timeout_untold = false;
    }

    pub(super) fn snapshot(&self, window: Duration) -> Card {
        let streaming = self.streaming_on && self.streaming_since.is_some_and(|since| since.elapsed() < window);
        Card {
            card_id: self.card_id.clone(),
            app_id: self.app_id.clone(),
            json: self.json.clone(),
            text: self.text(),
            streaming,
            streaming_since: self.streaming_since,
            created_at: self.created_at,
            sequence: self.last_sequence,
            version: self.version,
            message_id: self.message.as_ref().map(|(_, id)| id.clone()),
            text_history: self.history.clone(),
        }
    }
}

/// Checks card data as the create and full-update endpoints do; the parsed card.
pub(super) fn validate_card(data: &str) -> Result<Value, Outcome> {
    if data.trim().is_empty() {
        return Err(Outcome::error(400, 300307, "The card DSL is empty"));
    }
    let Some(card) = serde_json::from_str::<Value>(data).ok().filter(Value::is_object) else {
        return Err(Outcome::error(400, 200220, "Failed to generate card content"));
    };
    if card.get("schema").and_then(Value::as_str) != Some("2.0") {
        return Err(Outcome::error(400, 300303, "Only schema 2.0 is supported"));
    }
    if card.pointer("/config/update_multi") == Some(&Value::Bool(false)) {
        return Err(Outcome::error(400, 300302, "update_multi property is false"));
    }
    let mut ids = Vec::new();
    element_ids(&card, &mut ids);
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    if unique.len() != ids.len() {
        return Err(Outcome::error(400, 300301, "Duplicate element_id in card component."));
    }
    if data.len() > CARD_LIMIT_BYTES {
        return Err(Outcome::error(400, 200860, "Card content exceeds limit."));
    }
    Ok(card)
}

fn element_ids<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            out.extend(map.get("element_id").and_then(Value::as_str));
            map.values().for_each(|c| element_ids(c, out));
        }
        Value::Array(items) => items.iter().for_each(|c| element_ids(c, out)),
        _ => {}
    }
}

pub(super) fn find_element<'a>(v: &'a mut Value, id: &str) -> Option<&'a mut Value> {
    if v.get("element_id").and_then(Value::as_str) == Some(id) {
        return Some(v);
    }
    match v {
        Value::Object(map) => map.values_mut().find_map(|c| find_element(c, id)),
        Value::Array(items) => items.iter_mut().find_map(|c| find_element(c, id)),
        _ => None,
    }
}

/// A card id in Lark's style: 19 digits.
pub(super) fn new_card_id() -> String {
    format!("73{:017}", rand::random::<u64>() % 100_000_000_000_000_000)
}
