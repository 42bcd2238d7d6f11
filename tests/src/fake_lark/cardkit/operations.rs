//! An operation on an existing card (content, settings, full update): the
//! request parsed and checked, then the rules applied under the lock, in
//! Lark's order: the card and its app, a repeated `uuid`, the per-card rate,
//! a rising `sequence`, then the operation itself (streaming mode, the
//! element, the size).

use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::{json, Value};

use super::card::{find_element, validate_card};
use super::limits::card_rate_limited;
use super::CardOpKind;
use crate::fake_lark::api::{parse_json, Outcome};
use crate::fake_lark::{Inner, CARD_LIMIT_BYTES};

/// The longest `content` Lark takes, in characters.
const CONTENT_MAX_CHARS: usize = 100_000;

/// What an operation on an existing card asks.
enum Payload {
    Content(String),
    Settings(Value),
    Card(Value),
}

pub(super) struct OpRequest {
    sequence: i64,
    uuid: Option<String>,
    payload: Payload,
    /// The request, to tell a replayed `uuid` from a conflicting one.
    fingerprint: String,
}

pub(super) fn parse_op(kind: CardOpKind, body: &Bytes) -> Result<OpRequest, Outcome> {
    let body = parse_json(body)?;
    let sequence = match body.get("sequence") {
        None | Some(Value::Null) => return Err(Outcome::field_violation("sequence", "sequence is required")),
        Some(v) => v
            .as_i64()
            .filter(|s| (1..=i64::from(i32::MAX)).contains(s))
            .ok_or_else(|| Outcome::field_violation("sequence", "sequence must be an int32 from 1"))?,
    };
    let uuid = match body.get("uuid") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if (1..=64).contains(&u.chars().count()) => Some(u.clone()),
        Some(_) => return Err(Outcome::field_violation("uuid", "the len of uuid is 1 to 64")),
    };
    let text_field = |name: &str| match body.get(name).and_then(Value::as_str) {
        None => Err(Outcome::field_violation(name, &format!("{name} is required and must be a string"))),
        Some(s) if s.is_empty() || s.chars().count() > CONTENT_MAX_CHARS => {
            Err(Outcome::field_violation(name, &format!("the len of {name} is 1 to {CONTENT_MAX_CHARS}")))
        }
        Some(s) => Ok(s.to_owned()),
    };
    let payload = match kind {
        CardOpKind::Content => Payload::Content(text_field("content")?),
        CardOpKind::Settings => {
            let settings = text_field("settings")?;
            let parsed = serde_json::from_str::<Value>(&settings).ok().filter(Value::is_object).ok_or_else(|| {
                Outcome::error(400, 10002, "Your request contains an invalid request parameter, settings is not JSON.")
            })?;
            Payload::Settings(parsed)
        }
        CardOpKind::Update | CardOpKind::Create => {
            let card = body.get("card").filter(|c| c.is_object());
            let Some(card) = card else {
                return Err(Outcome::field_violation("card", "card is required"));
            };
            if card.get("type").and_then(Value::as_str) != Some("card_json") {
                return Err(Outcome::field_violation("card.type", "card.type must be card_json"));
            }
            let Some(data) = card.get("data").and_then(Value::as_str) else {
                return Err(Outcome::field_violation("card.data", "card.data is required"));
            };
            Payload::Card(validate_card(data)?)
        }
    };
    let mut fingerprint = body;
    if let Some(map) = fingerprint.as_object_mut() {
        map.remove("sequence");
        map.remove("uuid");
    }
    Ok(OpRequest { sequence, uuid, payload, fingerprint: fingerprint.to_string() })
}

/// The outcome of an operation, and whether a repeated `uuid` was answered.
pub(super) struct Applied {
    pub(super) outcome: Outcome,
    pub(super) replayed: bool,
}

impl Applied {
    pub(super) fn of(outcome: Outcome) -> Self {
        Self { outcome, replayed: false }
    }
}

/// Runs an operation on an existing card, under the lock.
pub(super) fn apply(
    inner: &mut Inner,
    app_id: &str,
    card_id: &str,
    element_id: Option<&str>,
    request: &OpRequest,
) -> Applied {
    let window = inner.cardkit.window;
    let rate_limit = inner.cardkit.rate_limit;
    let Some(card) = inner.cardkit.cards.get_mut(card_id) else {
        return Applied::of(Outcome::error(400, 200740, "The card entity does not exist"));
    };
    if card.app_id != app_id {
        let msg = "The current application does not have permission to update/use this card";
        return Applied::of(Outcome::error(400, 300311, msg));
    }
    if let Some(uuid) = &request.uuid {
        match card.uuids.get(uuid) {
            Some(seen) if *seen == request.fingerprint => {
                return Applied {
                    outcome: Outcome::ok(json!({ "code": 0, "msg": "success", "data": {} })),
                    replayed: true,
                };
            }
            Some(_) => return Applied::of(Outcome::error(400, 200770, "UUID conflict")),
            None => {}
        }
    }
    let now = Instant::now();
    while card.recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
        card.recent.pop_front();
    }
    if let Some(limit) = rate_limit {
        if card.recent.len() >= limit {
            return Applied::of(card_rate_limited(limit));
        }
    }
    card.recent.push_back(now);
    if request.sequence <= card.last_sequence {
        let msg = "The sequence number for operating on the card did not increment consecutively";
        return Applied::of(Outcome::error(400, 300317, msg));
    }
    card.refresh(window);
    let mut json = card.json.clone();
    match &request.payload {
        Payload::Content(text) => {
            let id = element_id.unwrap_or_default();
            let Some(element) = find_element(&mut json, id) else {
                let msg = format!("Failed to update element properties, ErrMsg: not find elementID : {id}; ");
                return Applied::of(Outcome::error(400, 300313, &msg));
            };
            if !matches!(element.get("tag").and_then(Value::as_str), Some("markdown" | "plain_text")) {
                return Applied::of(Outcome::error(400, 300310, "Only update text"));
            }
            if !card.streaming_on {
                if std::mem::take(&mut card.timeout_untold) {
                    return Applied::of(Outcome::error(400, 200850, "Card streaming timeout"));
                }
                return Applied::of(Outcome::error(400, 300309, "Card streaming closed"));
            }
            element["content"] = json!(text);
            if json.to_string().len() > CARD_LIMIT_BYTES {
                return Applied::of(Outcome::error(400, 200860, "Card content exceeds limit."));
            }
        }
        Payload::Settings(settings) => {
            let config = settings.get("config").and_then(Value::as_object);
            if config.and_then(|c| c.get("update_multi")) == Some(&Value::Bool(false)) {
                return Applied::of(Outcome::error(400, 300302, "update_multi property is false"));
            }
            if let Some(config) = config {
                if !json.get("config").is_some_and(Value::is_object) {
                    json["config"] = json!({});
                }
                for (key, value) in config {
                    json["config"][key] = value.clone();
                }
            }
            if let Some(link) = settings.get("card_link") {
                json["card_link"] = link.clone();
            }
            if let Some(on) = config.and_then(|c| c.get("streaming_mode")).and_then(Value::as_bool) {
                card.set_streaming(on);
            }
        }
        Payload::Card(new) => {
            json = new.clone();
            card.set_streaming(new.pointer("/config/streaming_mode") == Some(&Value::Bool(true)));
        }
    }
    card.last_sequence = request.sequence;
    if let Some(uuid) = &request.uuid {
        card.uuids.insert(uuid.clone(), request.fingerprint.clone());
    }
    if let Some(index) = card.replace_json(json) {
        inner.touch(index);
    }
    Applied { outcome: Outcome::ok(json!({ "code": 0, "msg": "success", "data": {} })), replayed: false }
}
