//! `[[channels]]`: each Lark app and the FastGPT app it is bound to, with
//! their secrets (which service keeps which: `crate::secrets`).

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use super::defaults;

/// One publishing channel: a Lark app bound to a FastGPT app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub id: String,
    pub app_id: String,
    /// Needed by the relay and the responder (Lark's API), not by a webhook
    /// ingress: see [`crate::secrets`].
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    #[serde(default)]
    pub encrypt_key: Option<SecretString>,
    #[serde(default)]
    pub verification_token: Option<SecretString>,
    #[serde(default = "defaults::lark_base_url")]
    pub lark_base_url: Url,
    pub fastgpt_base_url: Url,
    /// Needed by the relay only.
    #[serde(default)]
    pub fastgpt_api_key: Option<SecretString>,
    /// The FastGPT app's id, sent as `appId`: required with a team (account)
    /// key, which FastGPT refuses without it; optional with an app key.
    #[serde(default)]
    pub fastgpt_app_id: Option<String>,
    /// A webhook channel with neither `encrypt_key` nor `verification_token`
    /// accepts forged events from anyone: the ingress refuses to start with
    /// one unless this says so.
    #[serde(default)]
    pub allow_unverified: bool,
    /// How Lark delivers this channel's events: to the Request URL
    /// (`webhook`), or over WebSockets the ingress opens (`long_connection`:
    /// no public URL; needs app_id and app_secret only).
    #[serde(default)]
    pub subscription: Subscription,
    /// Answers appear as FastGPT writes them, in one card per answer
    /// (CardKit, scope `cardkit:card:write`); `false` sends each answer whole.
    #[serde(default = "defaults::yes")]
    pub streaming: bool,
    /// 👍 and 👎 buttons on each final answer: the asker's click rates the
    /// answer in FastGPT's chat log (`updateUserFeedback`).
    #[serde(default = "defaults::yes")]
    pub feedback: bool,
    /// The Lark API calls this app may make in a calendar month (a free
    /// Feishu tenant has 10,000 for all its custom apps). Counted across
    /// every replica and restart; past 90 % answers go whole instead of
    /// streaming, and `/status` and an alert say so. Unset: counted, no limit.
    #[serde(default)]
    pub lark_calls_per_month: Option<u64>,
}

/// How Lark delivers a channel's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// Lark posts each event to `/lark/{id}/events`.
    #[default]
    Webhook,
    /// The ingress connects to Lark and receives events over WebSockets.
    LongConnection,
}
