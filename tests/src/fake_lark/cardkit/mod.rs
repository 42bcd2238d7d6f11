//! Lark's CardKit over HTTP: card entities that a bot creates, sends by
//! reference and then updates while the user watches (streamed answers).
//!
//! - `POST /open-apis/cardkit/v1/cards` `{"type": "card_json", "data": "<card
//!   JSON 2.0>"}` → `data.card_id`.
//! - `PUT .../cards/{card_id}/elements/{element_id}/content` `{"content",
//!   "sequence", "uuid"?}`: the full text of a `markdown` or `plain_text`
//!   element, only while streaming mode is on.
//! - `PATCH .../cards/{card_id}/settings` `{"settings": "<{\"config\": ...}>",
//!   "sequence", "uuid"?}`: merges the config (`streaming_mode` on or off).
//! - `PUT .../cards/{card_id}` `{"card": {"type": "card_json", "data"},
//!   "sequence", "uuid"?}`: replaces the card; its `config.streaming_mode`
//!   turns streaming on or off. Works after streaming closed.
//! - A reply or send with `msg_type` `interactive` and content `{"type":
//!   "card", "data": {"card_id"}}` shows the card; the message's text is the
//!   card's text as it is now.
//!
//! Rules and codes, from Lark's CardKit pages (create, settings, update,
//! card-element content / update / delete) and its streaming guide: every
//! endpoint needs the scope `cardkit:card:write` (99991672 otherwise); the card
//! data must be JSON (200220), non-empty (300307), schema 2.0 (300303), not
//! `update_multi: false` (300302), without duplicate `element_id`s (300301),
//! at most 30 KB (200860); an unknown card is 200740; a card of another app is
//! 300311; `sequence` (1..2^31) must rise strictly across every operation on a
//! card (300317); an element id not in the card is 300313 (the message real
//! Lark gives, "not find elementID"), an element that is not text 300310; a
//! content update while streaming mode is off is 300309, and after the mode
//! closed by itself (10 minutes after it was turned on, configurable with
//! [`FakeLark::set_streaming_window`]) 200850 once, then 300309. A `uuid` seen
//! before on the card with the same request is answered with success and not
//! executed again; with another request it is 200770. At most 10 operations
//! per second on one card: Lark's pages state the limit but not its code, so
//! the fake answers like its other rate limits, HTTP 429 with code 99991400
//! and `x-ogw-ratelimit-reset`. Each CardKit API is also limited per app,
//! across every caller: 50 requests a second and 1,000 a minute (each API's
//! page, "接口频率限制"), answered the same way with the seconds until the
//! window frees a request in `x-ogw-ratelimit-reset`
//! ([`FakeLark::set_cardkit_app_limits`]). Sending a card that does not exist, belongs to
//! another app or was already sent is 230099 ("Failed to create card
//! content", with the CardKit code in `ext`); that a card entity can be sent
//! once is in Lark's streaming guide, its exact inner code is the fake's
//! guess.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::api::{parse_json, Call, Outcome};
use super::content::content_text;
use super::{Endpoint, Failure, FakeLark, Inner, SentMessage, Shared, CARD_LIMIT_BYTES};

/// Streaming mode closes by itself this long after it was turned on.
pub const STREAMING_WINDOW: Duration = Duration::from_secs(600);
/// Lark's limit of operations per second on one card.
pub const CARD_OPS_PER_SECOND: usize = 10;
/// The longest `content` Lark takes, in characters.
const CONTENT_MAX_CHARS: usize = 100_000;

/// A card entity as a test sees it: see [`FakeLark::cards`].
#[derive(Clone, Debug)]
pub struct Card {
    pub card_id: String,
    /// The app that created it.
    pub app_id: String,
    /// The card JSON as it is now, after every update.
    pub json: Value,
    /// Its readable text now (header title and text elements, as
    /// [`super::content_text`] reads a card): what a user sees.
    pub text: String,
    /// Streaming mode is on now: turned on and not closed, by the app or by
    /// the streaming window.
    pub streaming: bool,
    /// When streaming mode was last turned on.
    pub streaming_since: Option<Instant>,
    pub created_at: Instant,
    /// The last `sequence` accepted (0 before any update).
    pub sequence: i64,
    /// How many operations changed it since it was created.
    pub version: u64,
    /// The message that shows it, once sent.
    pub message_id: Option<String>,
    /// Its text after creation and after each operation that changed the text.
    pub text_history: Vec<(Instant, String)>,
}

/// Which CardKit API an operation went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CardOpKind {
    /// `POST /open-apis/cardkit/v1/cards`
    Create,
    /// `PUT /open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content`
    Content,
    /// `PATCH /open-apis/cardkit/v1/cards/{card_id}/settings`
    Settings,
    /// `PUT /open-apis/cardkit/v1/cards/{card_id}`
    Update,
}

impl CardOpKind {
    fn endpoint(self) -> Endpoint {
        match self {
            CardOpKind::Create => Endpoint::CardCreate,
            CardOpKind::Content => Endpoint::CardContent,
            CardOpKind::Settings => Endpoint::CardSettings,
            CardOpKind::Update => Endpoint::CardUpdate,
        }
    }
}

/// One request to a CardKit endpoint, whatever its outcome.
#[derive(Clone, Debug)]
pub struct CardOperation {
    /// The card (for a create: the new card's id, or empty when refused).
    pub card_id: String,
    pub kind: CardOpKind,
    /// For content updates.
    pub element_id: Option<String>,
    pub sequence: Option<i64>,
    pub uuid: Option<String>,
    /// The app of the token, when it was valid.
    pub app_id: Option<String>,
    pub http_status: u16,
    /// Lark's `code` (0 on success).
    pub code: i64,
    /// For content updates: the text sent.
    pub content: Option<String>,
    /// A repeated `uuid`: answered with success, not executed again.
    pub replayed: bool,
    /// Executed, but the response was lost on the way (a scripted
    /// [`Failure::AcceptButDropResponse`]): the client saw a 502.
    pub response_lost: bool,
    pub at: Instant,
}

/// A card entity as the fake keeps it.
pub(super) struct CardState {
    card_id: String,
    app_id: String,
    json: Value,
    created_at: Instant,
    /// Streaming mode as last set (it may have run out since: see `refresh`).
    streaming_on: bool,
    streaming_since: Option<Instant>,
    /// Streaming closed by the window and no content update has been told yet (200850 next).
    timeout_untold: bool,
    last_sequence: i64,
    version: u64,
    /// Operations admitted in the last second.
    recent: VecDeque<Instant>,
    /// `uuid` → the request it came with.
    uuids: HashMap<String, String>,
    /// The visible message that shows it: its index and id.
    message: Option<(usize, String)>,
    history: Vec<(Instant, String)>,
}

impl CardState {
    fn text(&self) -> String {
        content_text("interactive", &self.json)
    }

    /// Closes streaming mode once its window has passed.
    fn refresh(&mut self, window: Duration) -> bool {
        let expired = self.streaming_on && self.streaming_since.is_none_or(|since| since.elapsed() >= window);
        if expired {
            self.streaming_on = false;
            self.timeout_untold = true;
        }
        expired
    }

    /// Turns streaming mode on or off, as a setting or a full update says.
    fn set_streaming(&mut self, on: bool) {
        if on && !self.streaming_on {
            self.streaming_since = Some(Instant::now());
        }
        self.streaming_on = on;
        self.timeout_untold = false;
    }

    fn snapshot(&self, window: Duration) -> Card {
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

/// Lark's limits of each CardKit API per app: per second, per minute.
pub const APP_LIMITS: (usize, usize) = (50, 1000);

/// The CardKit part of the fake's state.
pub(super) struct CardKit {
    cards: HashMap<String, CardState>,
    ops: Vec<CardOperation>,
    window: Duration,
    rate_limit: Option<usize>,
    /// Per app and API: per second, per minute (`None`: not enforced).
    app_limits: Option<(usize, usize)>,
    /// Per app and API: the requests admitted in the last minute.
    app_recent: HashMap<(String, CardOpKind), VecDeque<Instant>>,
}

impl Default for CardKit {
    fn default() -> Self {
        Self {
            cards: HashMap::new(),
            ops: Vec::new(),
            window: STREAMING_WINDOW,
            rate_limit: Some(CARD_OPS_PER_SECOND),
            app_limits: Some(APP_LIMITS),
            app_recent: HashMap::new(),
        }
    }
}

impl CardKit {
    /// Admits one request of `app_id` to `kind` within the app's limits, or
    /// answers as Lark does past them.
    fn admit(&mut self, app_id: &str, kind: CardOpKind, now: Instant) -> Result<(), Outcome> {
        let Some((per_second, per_minute)) = self.app_limits else { return Ok(()) };
        let recent = self.app_recent.entry((app_id.to_owned(), kind)).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            recent.pop_front();
        }
        let in_second = recent.iter().rev().take_while(|t| now.duration_since(**t) < Duration::from_secs(1)).count();
        let over = if in_second >= per_second {
            Some((per_second, recent.get(recent.len() - in_second).map(|t| *t + Duration::from_secs(1))))
        } else if recent.len() >= per_minute {
            Some((per_minute, recent.front().map(|t| *t + Duration::from_secs(60))))
        } else {
            None
        };
        if let Some((limit, frees_at)) = over {
            let wait = frees_at.map_or(Duration::from_secs(1), |at| at.saturating_duration_since(now));
            let reset = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let headers = vec![
                ("x-ogw-ratelimit-limit".to_owned(), limit.to_string()),
                ("x-ogw-ratelimit-reset".to_owned(), reset.max(1).to_string()),
            ];
            return Err(Outcome::error_with(429, 99991400, "request trigger frequency limit", json!({}), headers));
        }
        recent.push_back(now);
        Ok(())
    }
}

impl Inner {
    /// A change a user can see in the visible message `index` (new, edited,
    /// or its card updated): the sandbox's long poll reports it.
    pub(super) fn touch(&mut self, index: usize) {
        self.stamp += 1;
        if self.visible_stamps.len() <= index {
            self.visible_stamps.resize(index + 1, 0);
        }
        self.visible_stamps[index] = self.stamp;
    }

    /// Closes the streaming mode of cards whose window has passed (a change
    /// the sandbox must see even when no request comes).
    pub(super) fn expire_streaming(&mut self) {
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
    pub(super) fn with_card(&self, m: &SentMessage) -> SentMessage {
        let mut m = m.clone();
        m.card = card_id_of(&m.msg_type, &m.content)
            .and_then(|id| self.cardkit.cards.get(id))
            .map(|c| c.snapshot(self.cardkit.window));
        m
    }
}

/// The card id of a message content that shows a card by reference.
pub(super) fn card_id_of<'a>(msg_type: &str, content: &'a Value) -> Option<&'a str> {
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
pub(super) fn referenced_card(
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
pub(super) fn replace_by_callback(inner: &mut Inner, card_id: &str, json: Value) -> bool {
    let Some(card) = inner.cardkit.cards.get_mut(card_id) else { return false };
    let before = card.text();
    card.set_streaming(json.pointer("/config/streaming_mode") == Some(&Value::Bool(true)));
    card.json = json;
    card.version += 1;
    let after = card.text();
    if after != before {
        card.history.push((Instant::now(), after));
    }
    let index = card.message.as_ref().map(|(i, _)| *i);
    if let Some(index) = index {
        inner.touch(index);
    }
    true
}

/// Records that the visible message `index` shows the card.
pub(super) fn link_message(inner: &mut Inner, card_id: &str, index: usize, message_id: &str) {
    if let Some(card) = inner.cardkit.cards.get_mut(card_id) {
        card.message = Some((index, message_id.to_owned()));
    }
}

/// Checks card data as the create and full-update endpoints do; the parsed card.
fn validate_card(data: &str) -> Result<Value, Outcome> {
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

fn find_element<'a>(v: &'a mut Value, id: &str) -> Option<&'a mut Value> {
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
fn new_card_id() -> String {
    format!("73{:017}", rand::random::<u64>() % 100_000_000_000_000_000)
}

/// What an operation on an existing card asks.
enum Payload {
    Content(String),
    Settings(Value),
    Card(Value),
}

struct OpRequest {
    sequence: i64,
    uuid: Option<String>,
    payload: Payload,
    /// The request, to tell a replayed `uuid` from a conflicting one.
    fingerprint: String,
}

fn parse_op(kind: CardOpKind, body: &Bytes) -> Result<OpRequest, Outcome> {
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
struct Applied {
    outcome: Outcome,
    replayed: bool,
}

impl Applied {
    fn of(outcome: Outcome) -> Self {
        Self { outcome, replayed: false }
    }
}

/// Lark's rate limit, as the fake answers the per-card limit.
fn card_rate_limited(limit: usize) -> Outcome {
    let headers = vec![
        ("x-ogw-ratelimit-limit".to_owned(), limit.to_string()),
        ("x-ogw-ratelimit-reset".to_owned(), "1".to_owned()),
    ];
    Outcome::error_with(429, 99991400, "request trigger frequency limit", json!({}), headers)
}

/// Runs an operation on an existing card, under the lock.
fn apply(inner: &mut Inner, app_id: &str, card_id: &str, element_id: Option<&str>, request: &OpRequest) -> Applied {
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
    let before = card.text();
    card.json = json;
    card.last_sequence = request.sequence;
    card.version += 1;
    if let Some(uuid) = &request.uuid {
        card.uuids.insert(uuid.clone(), request.fingerprint.clone());
    }
    let after = card.text();
    if after != before {
        card.history.push((Instant::now(), after));
    }
    let index = card.message.as_ref().map(|(i, _)| *i);
    if let Some(index) = index {
        inner.touch(index);
    }
    Applied { outcome: Outcome::ok(json!({ "code": 0, "msg": "success", "data": {} })), replayed: false }
}

/// The fields of an operation record that do not depend on its outcome.
#[derive(Clone)]
struct OpDraft {
    card_id: String,
    kind: CardOpKind,
    element_id: Option<String>,
    sequence: Option<i64>,
    uuid: Option<String>,
    content: Option<String>,
}

impl Shared {
    fn record_op(&self, draft: OpDraft, app_id: Option<String>, outcome: &Outcome, replayed: bool, lost: bool) {
        let (http_status, code) = outcome.status_and_code();
        let op = CardOperation {
            card_id: draft.card_id,
            kind: draft.kind,
            element_id: draft.element_id,
            sequence: draft.sequence,
            uuid: draft.uuid,
            app_id,
            http_status,
            code,
            content: draft.content,
            replayed,
            response_lost: lost && (http_status, code) == (200, 0),
            at: Instant::now(),
        };
        self.lock().cardkit.ops.push(op);
    }

    /// Records the operation and the attempt, and answers.
    fn finish_op(&self, draft: OpDraft, call: &Call, applied: Applied) -> Response {
        let endpoint = draft.kind.endpoint();
        self.record_op(draft, Some(call.app_id.clone()), &applied.outcome, applied.replayed, call.drop_response);
        self.finish(endpoint, call, applied.outcome, None, false)
    }

    /// The common start of a CardKit call; a refusal (including the app's
    /// rate limits) is recorded and answered.
    async fn begin_op(&self, draft: &OpDraft, headers: &HeaderMap) -> Result<Call, Response> {
        let endpoint = draft.kind.endpoint();
        match self.begin(endpoint, headers).await {
            Ok(call) => {
                let admitted = self.lock().cardkit.admit(&call.app_id, draft.kind, Instant::now());
                match admitted {
                    Ok(()) => Ok(call),
                    Err(outcome) => Err(self.finish_op(draft.clone(), &call, Applied::of(outcome))),
                }
            }
            Err((app_id, outcome)) => {
                self.record_op(draft.clone(), app_id.clone(), &outcome, false, false);
                Err(self.refuse(endpoint, (app_id, outcome)))
            }
        }
    }
}

/// `POST /open-apis/cardkit/v1/cards`
pub(super) async fn create_card(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut draft = OpDraft {
        card_id: String::new(),
        kind: CardOpKind::Create,
        element_id: None,
        sequence: None,
        uuid: None,
        content: None,
    };
    let call = match shared.begin_op(&draft, &headers).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let card = parse_json(&body).and_then(|body| {
        match body.get("type").and_then(Value::as_str) {
            Some("card_json") => {}
            Some("template") => {
                let msg =
                    "Your request contains an invalid request parameter: the fake Lark builds card_json cards only.";
                return Err(Outcome::error(400, 10002, msg));
            }
            _ => return Err(Outcome::field_violation("type", "type is required: card_json or template")),
        }
        let data = body.get("data").and_then(Value::as_str);
        let data = data.ok_or_else(|| Outcome::field_violation("data", "data is required and must be a string"))?;
        validate_card(data)
    });
    let card = match card {
        Ok(card) => card,
        Err(outcome) => return shared.finish_op(draft, &call, Applied::of(outcome)),
    };
    let card_id = new_card_id();
    let now = Instant::now();
    let streaming = card.pointer("/config/streaming_mode") == Some(&Value::Bool(true));
    let mut state = CardState {
        card_id: card_id.clone(),
        app_id: call.app_id.clone(),
        json: card,
        created_at: now,
        streaming_on: streaming,
        streaming_since: streaming.then_some(now),
        timeout_untold: false,
        last_sequence: 0,
        version: 0,
        recent: VecDeque::new(),
        uuids: HashMap::new(),
        message: None,
        history: Vec::new(),
    };
    state.history.push((now, state.text()));
    shared.lock().cardkit.cards.insert(card_id.clone(), state);
    draft.card_id = card_id.clone();
    let outcome = Outcome::ok(json!({ "code": 0, "msg": "success", "data": { "card_id": card_id } }));
    shared.finish_op(draft, &call, Applied::of(outcome))
}

/// The common part of the three operations on an existing card.
async fn operate(
    shared: &Shared,
    kind: CardOpKind,
    card_id: String,
    element_id: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut draft = OpDraft { card_id, kind, element_id, sequence: None, uuid: None, content: None };
    if let Ok(body) = serde_json::from_slice::<Value>(body) {
        draft.sequence = body.get("sequence").and_then(Value::as_i64);
        draft.uuid = body.get("uuid").and_then(Value::as_str).map(str::to_owned);
        if kind == CardOpKind::Content {
            draft.content = body.get("content").and_then(Value::as_str).map(str::to_owned);
        }
    }
    let call = match shared.begin_op(&draft, headers).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let request = match parse_op(kind, body) {
        Ok(request) => request,
        Err(outcome) => return shared.finish_op(draft, &call, Applied::of(outcome)),
    };
    let applied = {
        let mut inner = shared.lock();
        apply(&mut inner, &call.app_id, &draft.card_id, draft.element_id.as_deref(), &request)
    };
    shared.finish_op(draft, &call, applied)
}

/// `PUT /open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content`
pub(super) async fn element_content(
    State(shared): State<Arc<Shared>>,
    Path((card_id, element_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    operate(&shared, CardOpKind::Content, card_id, Some(element_id), &headers, &body).await
}

/// `PATCH /open-apis/cardkit/v1/cards/{card_id}/settings`
pub(super) async fn card_settings(
    State(shared): State<Arc<Shared>>,
    Path(card_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    operate(&shared, CardOpKind::Settings, card_id, None, &headers, &body).await
}

/// `PUT /open-apis/cardkit/v1/cards/{card_id}`
pub(super) async fn update_card(
    State(shared): State<Arc<Shared>>,
    Path(card_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    operate(&shared, CardOpKind::Update, card_id, None, &headers, &body).await
}

impl Failure {
    /// 200850: streaming mode closed by itself (10 minutes after it was turned on).
    pub fn card_streaming_timeout() -> Self {
        Self::lark(400, 200850, "Card streaming timeout")
    }

    /// 300309: streaming mode is off.
    pub fn card_streaming_closed() -> Self {
        Self::lark(400, 300309, "Card streaming closed")
    }

    /// 300317: `sequence` did not rise.
    pub fn card_sequence_not_rising() -> Self {
        Self::lark(400, 300317, "The sequence number for operating on the card did not increment consecutively")
    }

    /// 200740: no such card entity.
    pub fn card_not_found() -> Self {
        Self::lark(400, 200740, "The card entity does not exist")
    }

    /// 230099: a send or reply whose card cannot be built.
    pub fn card_content_failed() -> Self {
        Self::lark(
            400,
            230099,
            "Failed to create card content, ext=ErrCode: 200220; ErrMsg: Failed to generate card content; ",
        )
    }

    /// The per-card limit of 10 operations a second (answered as Lark's rate limit).
    pub fn card_rate_limited() -> Self {
        Self::rate_limited(1)
    }
}

impl FakeLark {
    /// Every request to a CardKit endpoint, in arrival order.
    pub fn card_operations(&self) -> Vec<CardOperation> {
        self.shared.lock().cardkit.ops.clone()
    }

    /// Every card entity created, oldest first, as it is now.
    pub fn cards(&self) -> Vec<Card> {
        let inner = self.shared.lock();
        let window = inner.cardkit.window;
        let mut cards: Vec<Card> = inner.cardkit.cards.values().map(|c| c.snapshot(window)).collect();
        cards.sort_by_key(|c| c.created_at);
        cards
    }

    /// One card entity as it is now.
    pub fn card(&self, card_id: &str) -> Option<Card> {
        let inner = self.shared.lock();
        inner.cardkit.cards.get(card_id).map(|c| c.snapshot(inner.cardkit.window))
    }

    /// Waits until some card satisfies `predicate` (checked every 5 ms) or
    /// `timeout` passes; the first such card, oldest first.
    pub async fn wait_for_card(&self, mut predicate: impl FnMut(&Card) -> bool, timeout: Duration) -> Option<Card> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(card) = self.cards().into_iter().find(|c| predicate(c)) {
                return Some(card);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until some card's text satisfies `predicate`: see [`FakeLark::wait_for_card`].
    pub async fn wait_for_card_text(&self, mut predicate: impl FnMut(&str) -> bool, timeout: Duration) -> Option<Card> {
        self.wait_for_card(|c| predicate(&c.text), timeout).await
    }

    /// How long streaming mode stays on before it closes by itself (Lark: 10
    /// minutes). Applies to cards already streaming too.
    pub fn set_streaming_window(&self, window: Duration) {
        self.shared.lock().cardkit.window = window;
    }

    /// Lark's limits of each CardKit API per app, (per second, per minute):
    /// default [`APP_LIMITS`]; `None` turns them off.
    pub fn set_cardkit_app_limits(&self, limits: Option<(usize, usize)>) {
        self.shared.lock().cardkit.app_limits = limits;
    }

    /// CardKit requests refused as over a rate limit (the app's or a card's).
    pub fn cardkit_rate_limited(&self) -> usize {
        self.shared.lock().cardkit.ops.iter().filter(|o| o.code == 99991400).count()
    }

    /// Lark's limit of operations per second on one card (default 10); `None` turns it off.
    pub fn set_card_rate_limit(&self, per_second: Option<usize>) {
        self.shared.lock().cardkit.rate_limit = per_second;
    }

    /// What the visible message `message_id` showed over time: its text when
    /// it was sent, then (for a card sent by reference) each later change of
    /// the card's text. Empty when no such message is visible.
    pub fn visible_text_history(&self, message_id: &str) -> Vec<(Instant, String)> {
        let inner = self.shared.lock();
        let Some(m) = inner.visible.iter().find(|m| m.message_id == message_id) else {
            return Vec::new();
        };
        let m = inner.with_card(m);
        let Some(card) = &m.card else {
            return vec![(m.received_at, m.text())];
        };
        let at_send = card.text_history.iter().rev().find(|(t, _)| *t <= m.received_at);
        let mut out = vec![(m.received_at, at_send.map(|(_, text)| text.clone()).unwrap_or_default())];
        out.extend(card.text_history.iter().filter(|(t, _)| *t > m.received_at).cloned());
        out
    }
}
