//! A fake of Lark's Open API over HTTP, for the end-to-end suites and the sandbox.
//!
//! The responder must be tested against Lark's real wire behaviour, which is
//! easy to get wrong: the token and bot-info endpoints put their fields at the
//! top level (not under `data`), most errors are HTTP 400 with a non-zero
//! `code`, the rate limit is HTTP 429 with `x-ogw-ratelimit-reset`, and a
//! request repeated with the same `uuid` within an hour is executed once. This
//! fake reproduces those, lets a test script failures per endpoint, and records
//! what a Lark user would see ([`FakeLark::visible_messages`]) apart from every
//! request made ([`FakeLark::all_attempts`]).
//!
//! Shapes and codes follow Lark's documentation (tenant_access_token/internal,
//! the rate-limit guide, the 99991672 troubleshooting page) and the official Go
//! SDK (token-invalid codes 99991663/99991664/99991671).
//!
//! CardKit (card entities created, sent by reference and updated while an
//! answer streams) is in [`cardkit`]: its rules and codes, and what a test
//! reads ([`FakeLark::cards`], [`FakeLark::card_operations`],
//! [`FakeLark::wait_for_card`], [`FakeLark::visible_text_history`]).
//!
//! A user's clicks on cards' buttons and form submits, as `card.action.trigger`
//! callbacks to the bridge, are in [`card_actions`] ([`FakeLark::click`],
//! [`FakeLark::submit_form`], [`FakeLark::deliver_card_action`]).

mod api;
pub mod card_actions;
pub mod cardkit;
mod content;
pub mod long_connection;
pub mod resources;
pub(crate) mod server;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::lark::crypto::EncryptKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::eventually::within_every;
use crate::lark_events::SignedRequest;
pub use api::SandboxRegistration;
pub use card_actions::{
    ButtonRef, CardActionBuilder, CardButton, CardControls, CardForm, ClickError, ClickOutcome, FormComponent,
    FrameType, Toast,
};
pub use cardkit::{Card, CardOpKind, CardOperation};
pub use content::content_text;
use server::ServerHandle;

/// Lark's limit on a text message's content (code 230025 beyond it).
pub const TEXT_LIMIT_BYTES: usize = 150 * 1024;
/// Lark's limit on a card's or a post's content (code 230025 beyond it).
pub const CARD_LIMIT_BYTES: usize = 30 * 1024;
/// How long Lark remembers a `uuid` for idempotency.
const UUID_WINDOW: Duration = Duration::from_secs(3600);
/// Lark hands out the same token again while it has at least this long to live.
const TOKEN_REUSE_SECS: u64 = 30 * 60;

/// One Lark app (bot) the fake knows.
#[derive(Clone, Debug)]
pub struct FakeApp {
    pub app_id: String,
    pub app_secret: String,
    pub bot_open_id: String,
    pub app_name: String,
    /// The app's Verification Token, put in the `header.token` of the card
    /// callbacks the fake sends ([`FakeLark::click`]).
    pub verification_token: Option<String>,
}

impl FakeApp {
    pub fn new(app_id: impl Into<String>, app_secret: impl Into<String>, bot_open_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            bot_open_id: bot_open_id.into(),
            app_name: "FastGPT bot".to_owned(),
            verification_token: None,
        }
    }

    /// The app's Verification Token (the card callbacks carry it).
    pub fn with_verification_token(mut self, token: impl Into<String>) -> Self {
        self.verification_token = Some(token.into());
        self
    }
}

/// Which Lark API a request went to: the key of scripted failures and attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /open-apis/auth/v3/tenant_access_token/internal`
    TenantToken,
    /// `POST /open-apis/im/v1/messages/{message_id}/reply`
    Reply,
    /// `POST /open-apis/im/v1/messages?receive_id_type=...`
    Send,
    /// `PATCH` (card) or `PUT` (text/post) `/open-apis/im/v1/messages/{message_id}`
    Update,
    /// `POST /open-apis/im/v1/messages/{message_id}/reactions`
    AddReaction,
    /// `DELETE /open-apis/im/v1/messages/{message_id}/reactions/{reaction_id}`
    DeleteReaction,
    /// `GET /open-apis/bot/v3/info`
    BotInfo,
    /// `POST /open-apis/cardkit/v1/cards`
    CardCreate,
    /// `PUT /open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content`
    CardContent,
    /// `PATCH /open-apis/cardkit/v1/cards/{card_id}/settings`
    CardSettings,
    /// `PUT /open-apis/cardkit/v1/cards/{card_id}`
    CardUpdate,
    /// `GET /open-apis/im/v1/messages/{message_id}/resources/{file_key}` ([`resources`])
    Resource,
}

impl Endpoint {
    /// The scopes of which the app needs one (Lark's 99991672 names them).
    fn scopes(self) -> &'static [&'static str] {
        match self {
            Endpoint::Reply | Endpoint::Send | Endpoint::Update => &["im:message", "im:message:send_as_bot"],
            Endpoint::AddReaction | Endpoint::DeleteReaction => &["im:message", "im:message.reactions:write_only"],
            Endpoint::TenantToken | Endpoint::BotInfo => &[],
            Endpoint::Resource => &["im:message", "im:message:readonly"],
            Endpoint::CardCreate | Endpoint::CardContent | Endpoint::CardSettings | Endpoint::CardUpdate => {
                &["cardkit:card:write"]
            }
        }
    }
}

/// A scripted failure, consumed by one request to its endpoint.
#[derive(Clone, Debug)]
pub enum Failure {
    /// Lark's error envelope `{"code", "msg", "error": {"log_id"}}` with this status and headers.
    Lark { http_status: u16, code: i64, msg: String, headers: Vec<(String, String)> },
    /// A bare HTTP 500, as from an overloaded gateway.
    Http500,
    /// Lark executes the request (the message is shown) but the response is lost:
    /// the client sees a 502 and will retry.
    AcceptButDropResponse,
    /// The request is handled normally after this delay.
    Delay(Duration),
}

impl Failure {
    pub fn lark(http_status: u16, code: i64, msg: impl Into<String>) -> Self {
        Failure::Lark { http_status, code, msg: msg.into(), headers: Vec::new() }
    }

    /// Lark's rate limit: HTTP 429, code 99991400, wait `reset_secs`.
    pub fn rate_limited(reset_secs: u64) -> Self {
        Failure::Lark {
            http_status: 429,
            code: 99991400,
            msg: "request trigger frequency limit".to_owned(),
            headers: vec![
                ("x-ogw-ratelimit-limit".to_owned(), "50".to_owned()),
                ("x-ogw-ratelimit-reset".to_owned(), reset_secs.to_string()),
            ],
        }
    }

    /// 230020: the 5-per-second limit of one chat.
    pub fn chat_rate_limited() -> Self {
        Self::lark(400, 230020, "This operation triggers the frequency limit.")
    }

    /// 230002: the bot is not in the chat.
    pub fn bot_not_in_chat() -> Self {
        Self::lark(400, 230002, "Bot/User can NOT be out of the chat.")
    }

    /// 230006: the app's bot capability is off.
    pub fn bot_capability_off() -> Self {
        Self::lark(400, 230006, "Bot ability is not activated.")
    }

    /// 230013: the user is outside the app's availability.
    pub fn user_out_of_availability() -> Self {
        Self::lark(400, 230013, "Bot has NO availability to this user.")
    }

    /// 230027: a permission is missing.
    pub fn no_permission() -> Self {
        Self::lark(400, 230027, "Lack of necessary permissions.")
    }

    /// 230011: the message replied to was withdrawn.
    pub fn message_withdrawn() -> Self {
        Self::lark(400, 230011, "The message was withdrawn.")
    }

    /// 231003: the message replied to was deleted.
    pub fn message_deleted() -> Self {
        Self::lark(400, 231003, "The message is not found, maybe not exist or deleted.")
    }

    /// 99991663: the tenant token is invalid (revoked or expired).
    pub fn invalid_token() -> Self {
        Self::lark(400, 99991663, INVALID_TOKEN_MSG)
    }
}

const INVALID_TOKEN_MSG: &str = "Invalid access token for authorization. Please make a request with token attached.";
const MISSING_TOKEN_MSG: &str = "Missing access token for authorization. Please make a request with token attached.";

/// How a message reached its chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A reply to `message_id`.
    Reply { message_id: String },
    /// A new message sent to `receive_id` (of the request's `receive_id_type`).
    Chat { receive_id: String },
}

/// A message the bot sent, as Lark stored it.
#[derive(Clone, Debug)]
pub struct SentMessage {
    pub app_id: String,
    pub via: Via,
    /// The id Lark gave the new message.
    pub message_id: String,
    /// The chat, when the fake knows it (sends by chat_id, replies to delivered events).
    pub chat_id: Option<String>,
    /// The topic it went into: the topic of the message replied to, or a new one.
    pub thread_id: Option<String>,
    pub msg_type: String,
    /// The parsed `content` string (the latest version after updates).
    pub content: Value,
    pub uuid: Option<String>,
    pub reply_in_thread: bool,
    /// How many times it was edited (PUT) or its card updated (PATCH) since.
    pub updates: usize,
    pub create_time_ms: i64,
    pub received_at: Instant,
    /// For a card sent by reference (`{"type": "card", "data": {"card_id"}}`):
    /// the card as it was when this copy was taken ([`FakeLark::visible_messages`]
    /// and the others fill it in).
    pub card: Option<Card>,
}

impl SentMessage {
    /// The readable text of the content: see [`content_text`]; for a card sent
    /// by reference, the card's text (as of this copy).
    pub fn text(&self) -> String {
        match &self.card {
            Some(card) => card.text.clone(),
            None => content_text(&self.msg_type, &self.content),
        }
    }

    /// The CardKit card it shows by reference, if any.
    pub fn card_id(&self) -> Option<&str> {
        cardkit::card_id_of(&self.msg_type, &self.content)
    }

    /// The message replied to, for replies.
    pub fn reply_to(&self) -> Option<&str> {
        match &self.via {
            Via::Reply { message_id } => Some(message_id),
            Via::Chat { .. } => None,
        }
    }
}

/// One request to an API endpoint (token fetches are counted separately).
#[derive(Clone, Debug)]
pub struct Attempt {
    pub endpoint: Endpoint,
    /// The app of the token, when it was valid.
    pub app_id: Option<String>,
    pub http_status: u16,
    /// Lark's `code` (0 on success; 0 too for non-Lark answers such as a bare 500).
    pub code: i64,
    /// For sends and replies that parsed: the message, as requested.
    pub message: Option<SentMessage>,
    /// The `uuid` was seen before: Lark answered with the first message, showed nothing new.
    pub duplicate: bool,
    pub received_at: Instant,
}

/// A reaction the bot put on a message.
#[derive(Clone, Debug)]
pub struct Reaction {
    pub app_id: String,
    pub message_id: String,
    pub reaction_id: String,
    pub emoji_type: String,
    pub added_at: Instant,
    pub removed_at: Option<Instant>,
}

/// A visible message as `GET /_sandbox/messages` lists it, for a separate process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxMessage {
    pub index: usize,
    pub app_id: String,
    pub via: Via,
    pub message_id: String,
    pub chat_id: Option<String>,
    pub thread_id: Option<String>,
    pub msg_type: String,
    pub content: Value,
    pub text: String,
    pub uuid: Option<String>,
    pub reply_in_thread: bool,
    pub updates: usize,
    /// The CardKit card it shows by reference (`text` is then the card's text now).
    #[serde(default)]
    pub card_id: Option<String>,
    /// Rises with every change a user sees: an edit of the message, an
    /// operation on its card (those before it was sent included).
    #[serde(default)]
    pub version: u64,
    /// Its card is still streaming (the text may still grow).
    #[serde(default)]
    pub streaming: bool,
    /// The card it shows now (its content, or its CardKit card), for cards.
    #[serde(default)]
    pub card: Option<Value>,
}

/// The answer of `GET /_sandbox/messages?after=N[&wait_ms=M][&changes_since=S]`:
/// messages `N..next`, once there is at least one or after `M` ms (at most
/// 5 s). With `changes_since`, the answer also comes when a message before
/// `N` changed after the change stamp `S`, and lists those in `changed`;
/// `stamp` is the stamp to pass next time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxPage {
    pub messages: Vec<SandboxMessage>,
    pub next: usize,
    /// Messages before `after` that changed since `changes_since` (as they are now).
    #[serde(default)]
    pub changed: Vec<SandboxMessage>,
    /// The latest change stamp.
    #[serde(default)]
    pub stamp: u64,
}
struct AppState {
    app: FakeApp,
    secret_rejected: bool,
    scopes: HashSet<String>,
    current_token: Option<String>,
}

struct TokenInfo {
    app_id: String,
    issued: Instant,
    lifetime: Duration,
    revoked: bool,
}

impl TokenInfo {
    fn remaining(&self) -> Option<Duration> {
        if self.revoked {
            return None;
        }
        self.lifetime.checked_sub(self.issued.elapsed()).filter(|d| !d.is_zero())
    }
}

#[derive(Clone)]
struct MessageInfo {
    chat_id: String,
    thread_id: Option<String>,
    root_id: Option<String>,
}

struct Inner {
    apps: HashMap<String, AppState>,
    tokens: HashMap<String, TokenInfo>,
    token_fetches: usize,
    token_lifetime: Duration,
    failures: HashMap<Endpoint, VecDeque<Failure>>,
    visible: Vec<SentMessage>,
    attempts: Vec<Attempt>,
    by_uuid: HashMap<(String, String), usize>,
    reactions: Vec<Reaction>,
    messages: HashMap<String, MessageInfo>,
    chat_rate_limit: Option<usize>,
    cardkit: cardkit::CardKit,
    /// Rises with every change a user can see (for the sandbox's long poll).
    stamp: u64,
    /// The stamp of the last change of each visible message.
    visible_stamps: Vec<u64>,
    /// Every card callback sent, and what came of it.
    card_actions: Vec<card_actions::ClickOutcome>,
}

struct Shared {
    inner: Mutex<Inner>,
    cancel: CancellationToken,
    resources: resources::Resources,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fake Lark Open API server. Stops when dropped or on [`FakeLark::shutdown`].
pub struct FakeLark {
    shared: Arc<Shared>,
    server: ServerHandle,
    client: reqwest::Client,
    long_connection: long_connection::LongConnection,
}

impl FakeLark {
    /// Starts on 127.0.0.1 with a random port.
    pub async fn start(apps: Vec<FakeApp>) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(addr, apps).await.expect("bind the fake Lark server on 127.0.0.1:0")
    }

    /// Starts on a given address (the sandbox's fixed port).
    pub async fn start_on(addr: SocketAddr, apps: Vec<FakeApp>) -> std::io::Result<Self> {
        let default_scopes =
            ["im:message:send_as_bot", "im:message.reactions:write_only", "cardkit:card:write", "im:message:readonly"];
        let apps = apps
            .into_iter()
            .map(|app| {
                let scopes = default_scopes.iter().map(|s| (*s).to_owned()).collect();
                let state = AppState { app: app.clone(), secret_rejected: false, scopes, current_token: None };
                (app.app_id, state)
            })
            .collect();
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                apps,
                tokens: HashMap::new(),
                token_fetches: 0,
                token_lifetime: Duration::from_secs(7200),
                failures: HashMap::new(),
                visible: Vec::new(),
                attempts: Vec::new(),
                by_uuid: HashMap::new(),
                reactions: Vec::new(),
                messages: HashMap::new(),
                chat_rate_limit: Some(5),
                cardkit: cardkit::CardKit::default(),
                stamp: 0,
                visible_stamps: Vec::new(),
                card_actions: Vec::new(),
            }),
            cancel: cancel.clone(),
            resources: Default::default(),
        });
        let (long_connection, lc_routes) =
            long_connection::LongConnection::start(shared.clone(), cancel.clone()).await?;
        let clicks = card_actions::Clicks::new(shared.clone(), long_connection.clone());
        let router = api::router(shared.clone()).merge(lc_routes).merge(card_actions::routes(clicks));
        let server = ServerHandle::spawn(addr, router, cancel).await?;
        Ok(Self { shared, server, client: reqwest::Client::new(), long_connection })
    }

    /// `http://127.0.0.1:PORT`: the channel's `lark_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops the server and waits (briefly) for in-flight requests.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Queues failures for the next requests to `endpoint`, one per request, in order.
    pub fn fail_next(&self, endpoint: Endpoint, failures: Vec<Failure>) {
        self.shared.lock().failures.entry(endpoint).or_default().extend(failures);
    }

    /// Every tenant token handed out so far (to check none leaks into logs).
    pub fn tenant_tokens(&self) -> Vec<String> {
        self.shared.lock().tokens.keys().cloned().collect()
    }

    /// Revokes every token issued so far: the next call with one gets 99991663.
    pub fn expire_tokens(&self) {
        let mut inner = self.shared.lock();
        inner.tokens.values_mut().for_each(|t| t.revoked = true);
        inner.apps.values_mut().for_each(|a| a.current_token = None);
    }

    /// The `expire` of tokens issued from now on (Lark: 7200 s). Under 30 minutes,
    /// every fetch mints a new token, as Lark does near the end of a token's life.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = lifetime;
    }

    /// Makes the token endpoint refuse this app's secret (10014), or accept it again.
    pub fn reject_secret(&self, app_id: &str, rejected: bool) {
        if let Some(app) = self.shared.lock().apps.get_mut(app_id) {
            app.secret_rejected = rejected;
        }
    }

    /// Removes a scope from an app (for example `im:message:send_as_bot`): calls
    /// that need it answer 99991672 naming the scopes, with the console link.
    pub fn remove_scope(&self, app_id: &str, scope: &str) {
        if let Some(app) = self.shared.lock().apps.get_mut(app_id) {
            app.scopes.remove(scope);
        }
    }

    /// Grants a scope again.
    pub fn grant_scope(&self, app_id: &str, scope: &str) {
        if let Some(app) = self.shared.lock().apps.get_mut(app_id) {
            app.scopes.insert(scope.to_owned());
        }
    }

    /// Lark's limit of messages per second into one chat (230020 beyond it),
    /// checked where the fake knows the chat; `None` turns it off. Default 5.
    pub fn set_chat_rate_limit(&self, per_second: Option<usize>) {
        self.shared.lock().chat_rate_limit = per_second;
    }

    /// Tells the fake which chat (and topic) a user's message is in, so replies
    /// to it carry the right `chat_id`/`thread_id` and count towards that chat's
    /// rate limit. [`FakeLark::deliver`] does this for the events it sends.
    pub fn register_message(&self, message_id: &str, chat_id: &str, thread_id: Option<&str>) {
        let info = MessageInfo { chat_id: chat_id.to_owned(), thread_id: thread_id.map(str::to_owned), root_id: None };
        self.shared.lock().messages.insert(message_id.to_owned(), info);
    }

    /// Registers the message of an `im.message.receive_v1` event (no-op for others).
    pub fn register_event(&self, event: &Value) {
        let message = event.pointer("/event/message");
        let id = message.and_then(|m| m.get("message_id")).and_then(Value::as_str);
        let chat = message.and_then(|m| m.get("chat_id")).and_then(Value::as_str);
        if let (Some(id), Some(chat)) = (id, chat) {
            let thread = message.and_then(|m| m.get("thread_id")).and_then(Value::as_str);
            self.register_message(id, chat, thread);
        }
    }

    /// Pushes an event to a Request URL as Lark does: encrypted and signed when
    /// `key` is given. The event's message is registered first.
    pub async fn deliver(
        &self,
        url: &str,
        event: &Value,
        key: Option<&EncryptKey>,
    ) -> reqwest::Result<reqwest::Response> {
        self.register_event(event);
        SignedRequest::now(event, key).post_to(&self.client, url).await
    }

    /// Lark's long connection (endpoint and WebSockets): see [`long_connection`].
    pub fn long_connection(&self) -> &long_connection::LongConnection {
        &self.long_connection
    }

    /// Pushes an event over the long connection of its app, as one frame (or
    /// `fragments` frames); the event's message is registered first. Returns
    /// the frame's `message_id`, or `None` when the app has no connection.
    pub fn push_event(&self, event: &Value, fragments: usize) -> Option<String> {
        self.register_event(event);
        let app_id = event.pointer("/header/app_id").and_then(Value::as_str).unwrap_or_default();
        self.long_connection.push(app_id, event.to_string().into_bytes(), "event", fragments)
    }

    /// What Lark users see: one message per `uuid`, in arrival order (a card
    /// sent by reference with the card as it is now).
    pub fn visible_messages(&self) -> Vec<SentMessage> {
        let inner = self.shared.lock();
        inner.visible.iter().map(|m| inner.with_card(m)).collect()
    }

    /// Every API request except token fetches, in arrival order.
    pub fn all_attempts(&self) -> Vec<Attempt> {
        let inner = self.shared.lock();
        let mut attempts = inner.attempts.clone();
        for attempt in &mut attempts {
            attempt.message = attempt.message.as_ref().map(|m| inner.with_card(m));
        }
        attempts
    }

    /// Requests to the token endpoint, successful or not.
    pub fn token_fetches(&self) -> usize {
        self.shared.lock().token_fetches
    }

    /// Every reaction added, with `removed_at` once deleted.
    pub fn reactions(&self) -> Vec<Reaction> {
        self.shared.lock().reactions.clone()
    }

    /// Waits until at least `n` messages are visible or `timeout` passes, and
    /// returns the visible messages either way (the caller asserts the count).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let enough = within_every(timeout, Duration::from_millis(10), || async {
            let visible = self.visible_messages();
            (visible.len() >= n).then_some(visible)
        });
        enough.await.unwrap_or_else(|| self.visible_messages())
    }
}

/// A tenant access token of `app_id` from the (fake) Lark at `lark`, as the
/// bridge gets one: what a test playing the bot's side puts in
/// `Authorization: Bearer`.
#[cfg(test)]
pub(crate) async fn tenant_token(client: &reqwest::Client, lark: &str, app_id: &str, app_secret: &str) -> String {
    let answer: serde_json::Value = client
        .post(format!("{lark}/open-apis/auth/v3/tenant_access_token/internal"))
        .json(&serde_json::json!({ "app_id": app_id, "app_secret": app_secret }))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("JSON");
    answer["tenant_access_token"].as_str().expect("token").to_owned()
}
