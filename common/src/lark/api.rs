//! The Lark Open API client: tenant token cache, and the calls the bridge makes
//! (bot info, replies, messages into a chat, reactions).
//!
//! The token is cached per app and refreshed 30 minutes before it expires (the
//! point from which Lark hands out a new one); concurrent callers share one
//! fetch (the cache is behind an async mutex held during the fetch). When Lark
//! answers that a token is invalid, it is dropped and fetched again at once,
//! and the call is retried once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{Mutex, OnceCell};

use super::calls::{CallCounter, CallOutcome, LarkApi};
use super::errors::{classify, retry_after, ErrorClass};
use super::ids::path_segment as segment;
use crate::channel::Channel;

/// A failed Lark call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LarkError {
    #[error("Lark answered HTTP {http_status}, code {code:?}: {msg}")]
    Api { http_status: u16, code: Option<i64>, msg: String, retry_after: Option<Duration> },
    #[error("cannot reach Lark: {0}")]
    Network(String),
    #[error("refusing to call Lark: {0}")]
    BadId(#[from] super::ids::IdError),
    /// A service that does not hold the App Secret was asked to call Lark.
    #[error("channel {0} has no app_secret in this service")]
    NoAppSecret(String),
}

impl LarkError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { http_status, code, retry_after, .. } => classify(*http_status, *code, *retry_after),
            Self::Network(_) => ErrorClass::Transient { retry_after: None },
            Self::BadId(_) => ErrorClass::Permanent {
                fix: "the id is not a Lark id: the event was forged or corrupted (the ingress refuses such events)",
            },
            Self::NoAppSecret(_) => ErrorClass::Permanent {
                fix: "give this service the channel's app_secret (LARK_BRIDGE__CHANNELS__{ID}__APP_SECRET)",
            },
        }
    }

    /// Over one of Lark's rate limits (HTTP 429 or code 99991400).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Self::Api { http_status, code, .. }
            if *http_status == 429 || *code == Some(super::errors::RATE_LIMITED))
    }

    /// How long Lark said to wait (`x-ogw-ratelimit-reset`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The Lark code, for metrics (`network` when there was no answer).
    pub fn code_label(&self) -> String {
        match self {
            Self::Api { code: Some(c), .. } => c.to_string(),
            Self::Api { http_status, .. } => format!("http_{http_status}"),
            Self::Network(_) => "network".into(),
            Self::BadId(_) => "bad_id".into(),
            Self::NoAppSecret(_) => "no_app_secret".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct BotInfo {
    #[serde(default)]
    pub open_id: String,
    #[serde(default)]
    pub app_name: String,
    #[serde(default)]
    pub activate_status: Option<i64>,
}

/// A message Lark created.
#[derive(Debug, Clone, Deserialize)]
pub struct SentMessage {
    #[serde(default)]
    pub message_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reaction {
    #[serde(default)]
    pub reaction_id: String,
}

struct CachedToken {
    value: SecretString,
    refresh_at: Instant,
}

/// One Lark app's client.
pub struct LarkClient {
    pub(super) http: reqwest::Client,
    channel: Arc<Channel>,
    token: Mutex<Option<CachedToken>>,
    bot: OnceCell<BotInfo>,
    /// The last failure to read the bot's info, and when. While Lark is down
    /// or slow, messages do not each wait on it again (up to the Lark timeout)
    /// before being answered without it.
    bot_failure: Mutex<Option<(Instant, LarkError)>>,
    /// The app's calls not yet in the durable month count.
    calls: Arc<CallCounter>,
}

/// How long a failure to read the bot's info is remembered.
const BOT_INFO_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
pub(super) struct Envelope {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    data: Option<Value>,
    // Token and bot-info endpoints put their fields at the top level.
    #[serde(default)]
    tenant_access_token: Option<String>,
    #[serde(default)]
    expire: Option<u64>,
    #[serde(default)]
    bot: Option<Value>,
}

impl LarkClient {
    pub fn new(http: reqwest::Client, channel: Arc<Channel>) -> Self {
        Self {
            http,
            channel,
            token: Mutex::new(None),
            bot: OnceCell::new(),
            bot_failure: Mutex::new(None),
            calls: Arc::default(),
        }
    }

    /// This app's call counter (shared with the month's flusher).
    pub fn calls(&self) -> &Arc<CallCounter> {
        &self.calls
    }

    /// Counts one call to `api` that ended with `outcome`.
    pub(super) fn count(&self, api: LarkApi, outcome: CallOutcome) {
        self.calls.count(&self.channel.app_id, api, outcome);
    }

    pub fn channel(&self) -> &Arc<Channel> {
        &self.channel
    }

    /// Number of cached token refreshes is observable through metrics
    /// (`lark_bridge_lark_token_fetches_total`).
    pub async fn tenant_token(&self) -> Result<SecretString, LarkError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Drops the cached token if it is still `stale` (another task may already
    /// have replaced it).
    pub(super) async fn invalidate(&self, stale: &SecretString) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value.expose_secret() == stale.expose_secret()) {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, LarkError> {
        metrics::counter!(crate::metric_names::LARK_TOKEN_FETCHES_TOTAL, "channel" => self.channel.id.clone())
            .increment(1);
        let secret = self.channel.app_secret.as_ref().ok_or_else(|| LarkError::NoAppSecret(self.channel.id.clone()))?;
        let body = json!({ "app_id": self.channel.app_id, "app_secret": secret.expose_secret() });
        let path = "auth/v3/tenant_access_token/internal";
        let env = self.send_raw(LarkApi::TenantToken, Method::POST, path, None, Some(&body)).await?;
        let token = env.tenant_access_token.filter(|t| !t.is_empty()).ok_or_else(|| LarkError::Api {
            http_status: 200,
            code: env.code,
            msg: "no tenant_access_token in Lark's answer".into(),
            retry_after: None,
        })?;
        let expire = Duration::from_secs(env.expire.unwrap_or(7200));
        let margin = Duration::from_secs(1800);
        let lifetime = if expire > margin * 2 { expire - margin } else { expire / 2 };
        tracing::debug!(channel = %self.channel.id, expires_in = ?expire, "fetched a tenant_access_token");
        Ok(CachedToken { value: SecretString::from(token), refresh_at: Instant::now() + lifetime })
    }

    /// One HTTP exchange; a non-zero code or a non-2xx status is an error.
    async fn send_raw(
        &self,
        api: LarkApi,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<Envelope, LarkError> {
        let mut req = self.http.request(method, self.channel.lark_url(path));
        for (name, value) in crate::telemetry::http_headers() {
            req = req.header(name, value);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t.expose_secret());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.count(api, CallOutcome::Network);
                return Err(LarkError::Network(without_url(e)));
            }
        };
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let text = resp.bytes().await.map_err(|e| LarkError::Network(without_url(e)));
        let env: Option<Envelope> = text.as_ref().ok().and_then(|t| serde_json::from_slice(t).ok());
        self.count(api, CallOutcome::of(status.as_u16(), env.as_ref().and_then(|e| e.code)));
        let text = text?;
        match env {
            Some(env) if status.is_success() && env.code.unwrap_or(0) == 0 => Ok(env),
            Some(env) => {
                Err(LarkError::Api { http_status: status.as_u16(), code: env.code, msg: env.msg, retry_after: wait })
            }
            None => Err(LarkError::Api {
                http_status: status.as_u16(),
                code: None,
                msg: format!("not a Lark JSON answer: {}", String::from_utf8_lossy(&text[..text.len().min(200)])),
                retry_after: wait,
            }),
        }
    }

    /// An authenticated call; on an invalid token, fetches a new one and retries once.
    pub(super) async fn call(
        &self,
        api: LarkApi,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Envelope, LarkError> {
        let token = self.tenant_token().await?;
        match self.send_raw(api, method.clone(), path, Some(&token), body).await {
            Err(e) if e.class() == ErrorClass::TokenInvalid => {
                tracing::info!(channel = %self.channel.id, code = %e.code_label(), "Lark says the token is invalid; fetching a new one");
                self.invalidate(&token).await;
                let token = self.tenant_token().await?;
                self.send_raw(api, method, path, Some(&token), body).await
            }
            other => other,
        }
    }

    pub(super) fn data<T: DeserializeOwned>(env: Envelope) -> Result<T, LarkError> {
        serde_json::from_value(env.data.unwrap_or(Value::Null)).map_err(|e| LarkError::Api {
            http_status: 200,
            code: Some(0),
            msg: format!("unexpected data in Lark's answer: {e}"),
            retry_after: None,
        })
    }

    /// `GET /open-apis/bot/v3/info`, cached: the bot's open_id recognises its
    /// own @mention. A failure is remembered for [`BOT_INFO_RETRY_AFTER`] and
    /// returned again meanwhile, without asking Lark.
    pub async fn bot_info(&self) -> Result<&BotInfo, LarkError> {
        if let Some(info) = self.bot.get() {
            return Ok(info);
        }
        // One fetch at a time: messages arriving meanwhile wait for its outcome.
        let mut failure = self.bot_failure.lock().await;
        if let Some(info) = self.bot.get() {
            return Ok(info);
        }
        if let Some((at, e)) = &*failure {
            if at.elapsed() < BOT_INFO_RETRY_AFTER {
                return Err(e.clone());
            }
        }
        let result = self.fetch_bot_info().await;
        if let Err(e) = &result {
            *failure = Some((Instant::now(), e.clone()));
        }
        result
    }

    async fn fetch_bot_info(&self) -> Result<&BotInfo, LarkError> {
        self.bot
            .get_or_try_init(|| async {
                let env = self.call(LarkApi::BotInfo, Method::GET, "bot/v3/info", None).await?;
                serde_json::from_value(env.bot.unwrap_or(Value::Null)).map_err(|e| LarkError::Api {
                    http_status: 200,
                    code: Some(0),
                    msg: format!("unexpected bot info: {e}"),
                    retry_after: None,
                })
            })
            .await
    }

    /// `POST /open-apis/im/v1/messages/{message_id}/reply`.
    pub async fn reply(
        &self,
        message_id: &str,
        msg_type: &str,
        content: &str,
        in_thread: bool,
        uuid: &str,
    ) -> Result<SentMessage, LarkError> {
        let body = json!({ "msg_type": msg_type, "content": content, "reply_in_thread": in_thread, "uuid": uuid });
        let path = format!("im/v1/messages/{}/reply", segment("message_id", message_id)?);
        let env = self.call(LarkApi::MessageReply, Method::POST, &path, Some(&body)).await?;
        Self::data(env)
    }

    /// `POST /open-apis/im/v1/messages?receive_id_type=chat_id`: a new message in a chat.
    pub async fn send_to_chat(
        &self,
        chat_id: &str,
        msg_type: &str,
        content: &str,
        uuid: &str,
    ) -> Result<SentMessage, LarkError> {
        let body = json!({ "receive_id": chat_id, "msg_type": msg_type, "content": content, "uuid": uuid });
        let path = "im/v1/messages?receive_id_type=chat_id";
        let env = self.call(LarkApi::MessageCreate, Method::POST, path, Some(&body)).await?;
        Self::data(env)
    }

    /// `POST /open-apis/im/v1/messages/{message_id}/reactions`.
    pub async fn add_reaction(&self, message_id: &str, emoji_type: &str) -> Result<Reaction, LarkError> {
        let body = json!({ "reaction_type": { "emoji_type": emoji_type } });
        let path = format!("im/v1/messages/{}/reactions", segment("message_id", message_id)?);
        let env = self.call(LarkApi::ReactionCreate, Method::POST, &path, Some(&body)).await?;
        Self::data(env)
    }

    /// `DELETE /open-apis/im/v1/messages/{message_id}/reactions/{reaction_id}`.
    pub async fn delete_reaction(&self, message_id: &str, reaction_id: &str) -> Result<(), LarkError> {
        let path = format!(
            "im/v1/messages/{}/reactions/{}",
            segment("message_id", message_id)?,
            segment("reaction_id", reaction_id)?
        );
        self.call(LarkApi::ReactionDelete, Method::DELETE, &path, None).await.map(|_| ())
    }
}

/// reqwest's errors include the URL; ours has no secret in it, but the message
/// reads better without the query.
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{kind}: {}", e.without_url())
}

/// One client per channel.
#[derive(Clone, Default)]
pub struct LarkClients(std::collections::HashMap<String, Arc<LarkClient>>);

impl LarkClients {
    pub fn new(http: reqwest::Client, channels: &crate::channel::Channels) -> Self {
        Self(channels.iter().map(|c| (c.id.clone(), Arc::new(LarkClient::new(http.clone(), c.clone())))).collect())
    }

    pub fn get(&self, channel: &str) -> Option<&Arc<LarkClient>> {
        self.0.get(channel)
    }

    /// Each channel's call counter and its app's budget, for the month's
    /// count (channels of one app add to the same count).
    pub fn counted(&self) -> Vec<super::calls::Counted> {
        let mut apps: Vec<super::calls::Counted> = Vec::new();
        let mut clients: Vec<&Arc<LarkClient>> = self.0.values().collect();
        clients.sort_by(|a, b| a.channel.id.cmp(&b.channel.id));
        for c in clients {
            apps.push(super::calls::Counted {
                app_id: c.channel.app_id.clone(),
                counter: c.calls.clone(),
                budget: c.channel.lark_calls_per_month,
            });
        }
        apps
    }
}
