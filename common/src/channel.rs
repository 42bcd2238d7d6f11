//! One publishing channel: a Lark app bound to a FastGPT app, looked up by the
//! `{channel}` of the Request URL. Built once from the settings, with the AES
//! key derived up front so the callback path only does the AES work.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use url::Url;

use crate::config::{ChannelSettings, Subscription};
use crate::lark::crypto::EncryptKey;

#[derive(Debug)]
pub struct Channel {
    pub id: String,
    pub app_id: String,
    /// `None` in a service that does not call Lark's API ([`crate::secrets`]).
    pub app_secret: Option<SecretString>,
    pub encrypt_key: Option<EncryptKey>,
    pub verification_token: Option<SecretString>,
    pub lark_base_url: Url,
    pub fastgpt_base_url: Url,
    /// `None` in a service that does not call FastGPT.
    pub fastgpt_api_key: Option<SecretString>,
    /// The FastGPT app's id (`fastgpt_app_id`): a team key needs it in every
    /// call; with an app key the relay learns it from `init` when unset.
    pub fastgpt_app_id: Option<String>,
    /// Webhook or long connection.
    pub subscription: Subscription,
    /// Answers stream into a card as FastGPT writes them.
    pub streaming: bool,
    /// Final answers carry 👍 / 👎 buttons (`feedback`).
    pub feedback: bool,
    /// The app's monthly Lark call budget (`lark_calls_per_month`).
    pub lark_calls_per_month: Option<u64>,
}

impl Channel {
    pub fn new(s: &ChannelSettings) -> Self {
        Self {
            id: s.id.clone(),
            app_id: s.app_id.clone(),
            app_secret: s.app_secret.clone(),
            encrypt_key: s.encrypt_key.clone().map(EncryptKey::new),
            verification_token: s.verification_token.clone(),
            lark_base_url: s.lark_base_url.clone(),
            fastgpt_base_url: s.fastgpt_base_url.clone(),
            fastgpt_api_key: s.fastgpt_api_key.clone(),
            fastgpt_app_id: s.fastgpt_app_id.clone().filter(|a| !a.trim().is_empty()),
            subscription: s.subscription,
            streaming: s.streaming,
            feedback: s.feedback,
            lark_calls_per_month: s.lark_calls_per_month,
        }
    }

    /// True when no verification token is configured, or `given` equals it
    /// (compared in constant time).
    pub fn token_matches(&self, given: Option<&str>) -> bool {
        match (&self.verification_token, given) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(got)) => bool::from(want.expose_secret().as_bytes().ct_eq(got.as_bytes())),
        }
    }

    /// `{lark_base_url}/open-apis/{path}`.
    pub fn lark_url(&self, path: &str) -> String {
        join(&self.lark_base_url, &format!("open-apis/{path}"))
    }

    /// `{fastgpt_base_url}/v1/chat/completions`.
    pub fn fastgpt_completions_url(&self) -> String {
        join(&self.fastgpt_base_url, "v1/chat/completions")
    }

    /// `{fastgpt_base_url}/{path}`, e.g. `core/chat/init`.
    pub fn fastgpt_url(&self, path: &str) -> String {
        join(&self.fastgpt_base_url, path)
    }
}

fn join(base: &Url, path: &str) -> String {
    format!("{}/{}", base.as_str().trim_end_matches('/'), path)
}

/// Every configured channel, by id.
#[derive(Debug, Clone, Default)]
pub struct Channels(HashMap<String, Arc<Channel>>);

impl Channels {
    pub fn new(settings: &[ChannelSettings]) -> Self {
        Self(settings.iter().map(|s| (s.id.clone(), Arc::new(Channel::new(s)))).collect())
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Channel>> {
        self.0.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Channel>> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(base: &str, token: Option<&str>) -> Channel {
        Channel::new(&ChannelSettings {
            id: "c".into(),
            app_id: "cli_x".into(),
            app_secret: Some(SecretString::from("s".to_owned())),
            encrypt_key: None,
            verification_token: token.map(|t| SecretString::from(t.to_owned())),
            lark_base_url: Url::parse("https://open.feishu.cn").expect("url"),
            fastgpt_base_url: Url::parse(base).expect("url"),
            fastgpt_api_key: Some(SecretString::from("k".to_owned())),
            fastgpt_app_id: None,
            allow_unverified: false,
            subscription: Default::default(),
            streaming: true,
            feedback: true,
            lark_calls_per_month: None,
        })
    }

    #[test]
    fn urls_join_with_or_without_trailing_slash() {
        assert_eq!(channel("https://x.io/api", None).fastgpt_completions_url(), "https://x.io/api/v1/chat/completions");
        assert_eq!(
            channel("https://x.io/api/", None).fastgpt_completions_url(),
            "https://x.io/api/v1/chat/completions"
        );
        assert_eq!(
            channel("https://x.io/api", None).lark_url("im/v1/messages/om_1/reply"),
            "https://open.feishu.cn/open-apis/im/v1/messages/om_1/reply"
        );
    }

    #[test]
    fn verification_token() {
        assert!(channel("http://x", None).token_matches(None));
        assert!(channel("http://x", Some("t")).token_matches(Some("t")));
        assert!(!channel("http://x", Some("t")).token_matches(Some("u")));
        assert!(!channel("http://x", Some("t")).token_matches(None));
    }
}
