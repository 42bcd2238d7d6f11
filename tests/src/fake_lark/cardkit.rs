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
//!
//! The code: this file is what a test reads and scripts (the records
//! [`Card`] and [`CardOperation`], the CardKit failures and the
//! [`FakeLark`] methods); `card.rs` is a card entity as the fake keeps it and
//! the checks of a card's JSON, `handlers.rs` the four endpoints,
//! `operations.rs` the rules of an operation on an existing card,
//! `limits.rs` the per-app and per-card rate limits, `messages.rs` a card
//! shown by a message (sent by reference, replaced by a callback).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Endpoint, Failure, FakeLark};
use crate::eventually::within_every;

mod card;
mod handlers;
mod limits;
mod messages;
mod operations;

use card::CardState;
pub(super) use handlers::{card_settings, create_card, element_content, update_card};
pub use limits::{APP_LIMITS, CARD_OPS_PER_SECOND};
pub(super) use messages::{card_id_of, link_message, referenced_card, replace_by_callback};

/// Streaming mode closes by itself this long after it was turned on.
pub const STREAMING_WINDOW: Duration = Duration::from_secs(600);

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
        let found = within_every(timeout, Duration::from_millis(5), || {
            let card = self.cards().into_iter().find(|c| predicate(c));
            async move { card }
        });
        found.await
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
