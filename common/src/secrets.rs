//! Each service holds only the secrets it uses (least privilege).
//!
//! One TOML file serves all three services, and Kubernetes gives each
//! Deployment only its own Secret keys; so a secret a service does not use may
//! be absent, and is dropped from memory when present:
//!
//! | secret | ingress | relay | responder |
//! |---|---|---|---|
//! | `encrypt_key`, `verification_token` | yes | – | – |
//! | `app_secret` | long-connection channels only | yes (bot info, Typing reaction, downloads) | yes |
//! | `fastgpt_api_key` | – | yes | – |
//! | `ingress.files_signing_key` | yes (checks file links) | yes (signs them) | – |
//!
//! The public-facing ingress thus holds no FastGPT key, and no App Secret of
//! a webhook channel: a compromise of it cannot ask FastGPT or post in Lark
//! as such a bot. A long-connection channel needs its App Secret in the
//! ingress (it opens the connection with it) and neither callback secret
//! (Lark authenticates the connection, not each event); when they are set
//! anyway, they are kept, and its Request URL keeps working with them.
//!
//! The ingress also refuses a webhook channel with neither `encrypt_key` nor
//! `verification_token` (anyone could post events to it) unless the channel
//! says `allow_unverified = true`.

use crate::config::{ConfigError, Settings, Subscription};
use crate::service_name::Service;

fn uses_callback_secrets(service: Service) -> bool {
    service == Service::Ingress
}
/// The ingress opens a long connection with the App Secret; the relay and
/// the responder call Lark's API with it.
fn uses_app_secret(service: Service, subscription: Subscription) -> bool {
    service != Service::Ingress || subscription == Subscription::LongConnection
}
fn uses_fastgpt_key(service: Service) -> bool {
    service == Service::Relay
}
/// The relay signs the file links it gives FastGPT, the ingress checks them
/// when FastGPT fetches one; the responder never sees a file.
fn uses_files_signing_key(service: Service) -> bool {
    service != Service::Responder
}

impl Settings {
    /// These settings as `service` may hold them: the secrets it needs are
    /// present (else an error naming the key and the environment variable),
    /// the others are dropped.
    pub fn for_service(mut self, service: Service) -> Result<Self, ConfigError> {
        // Optional: without it files are off (`Settings::files`), never an error.
        if !uses_files_signing_key(service) {
            self.ingress.files_signing_key = None;
        }
        for (i, c) in self.channels.iter_mut().enumerate() {
            // The key by its place in the file, the message by the channel's
            // id: an operator knows the channel by one or the other.
            let missing = |key: &str| ConfigError::Invalid {
                key: format!("channels[{i}].{key}"),
                message: format!(
                    "the {} needs it for channel {:?}: set it in the file or as {}__CHANNELS__{}__{}",
                    service.name(),
                    c.id,
                    crate::config::ENV_PREFIX,
                    crate::config::env_token(&c.id),
                    key.to_uppercase()
                ),
            };
            if !uses_callback_secrets(service) {
                c.encrypt_key = None;
                c.verification_token = None;
            } else if c.encrypt_key.is_none()
                && c.verification_token.is_none()
                && !c.allow_unverified
                && c.subscription == Subscription::Webhook
            {
                return Err(ConfigError::Invalid {
                    key: format!("channels[{i}]"),
                    message: format!(
                        "channel {:?} has neither encrypt_key nor verification_token, so anyone could post forged \
                         events to its Request URL: set encrypt_key (Lark console: Events & Callbacks > Encryption \
                         Strategy), or say allow_unverified = true to accept that",
                        c.id
                    ),
                });
            }
            match (uses_app_secret(service, c.subscription), &c.app_secret) {
                (true, None) => return Err(missing("app_secret")),
                (false, _) => c.app_secret = None,
                (true, Some(_)) => {}
            }
            match (uses_fastgpt_key(service), &c.fastgpt_api_key) {
                (true, None) => return Err(missing("fastgpt_api_key")),
                (false, _) => c.fastgpt_api_key = None,
                (true, Some(_)) => {}
            }
        }
        Ok(self)
    }

    /// Webhook channels that accept unverified events (for `--check` to warn
    /// about). A long-connection channel's events come over a connection Lark
    /// authenticated; its Request URL refuses callbacks when it has no secret.
    pub fn unverified_channels(&self) -> impl Iterator<Item = &str> {
        self.channels
            .iter()
            .filter(|c| c.subscription == Subscription::Webhook)
            .filter(|c| c.encrypt_key.is_none() && c.verification_token.is_none())
            .map(|c| c.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const FILE: &str = r#"
[nats]
namespace = "t1"

[[channels]]
id = "support"
app_id = "cli_a"
app_secret = "s3cret"
encrypt_key = "ek"
verification_token = "vt"
fastgpt_base_url = "https://cloud.fastgpt.io/api"
fastgpt_api_key = "fastgpt-key"
"#;

    fn settings(text: &str) -> Settings {
        Settings::from_toml_with_env(text, &BTreeMap::new()).expect("valid")
    }

    #[test]
    fn each_service_keeps_only_its_own_secrets() {
        let s = settings(FILE);
        let ingress = s.clone().for_service(Service::Ingress).expect("ingress");
        let c = &ingress.channels[0];
        assert!(c.encrypt_key.is_some() && c.verification_token.is_some());
        assert!(c.app_secret.is_none() && c.fastgpt_api_key.is_none(), "the ingress holds no Lark or FastGPT key");
        let relay = s.clone().for_service(Service::Relay).expect("relay");
        let c = &relay.channels[0];
        assert!(c.app_secret.is_some() && c.fastgpt_api_key.is_some());
        assert!(c.encrypt_key.is_none() && c.verification_token.is_none());
        let responder = s.for_service(Service::Responder).expect("responder");
        let c = &responder.channels[0];
        assert!(c.app_secret.is_some());
        assert!(c.fastgpt_api_key.is_none() && c.encrypt_key.is_none() && c.verification_token.is_none());
    }

    #[test]
    fn the_files_signing_key_stays_with_the_ingress_and_the_relay() {
        let with_key =
            FILE.replace("[nats]", "[ingress]\nfiles_signing_key = \"0123456789abcdef0123456789abcdef\"\n[nats]");
        let s = settings(&with_key);
        for service in [Service::Ingress, Service::Relay] {
            let kept = s.clone().for_service(service).expect("starts");
            assert!(kept.ingress.files_signing_key.is_some(), "{service:?} keeps the key");
        }
        let responder = s.for_service(Service::Responder).expect("responder");
        assert!(responder.ingress.files_signing_key.is_none(), "the responder drops it");
        settings(FILE).for_service(Service::Relay).expect("optional: files are off without it");
    }

    #[test]
    fn a_service_starts_without_the_secrets_it_does_not_use() {
        let ingress_only =
            FILE.replace("app_secret = \"s3cret\"\n", "").replace("fastgpt_api_key = \"fastgpt-key\"\n", "");
        settings(&ingress_only).for_service(Service::Ingress).expect("the ingress needs neither");
        let e = settings(&ingress_only).for_service(Service::Relay).expect_err("the relay needs both").to_string();
        assert!(
            e.contains("channels[0].app_secret") && e.contains("LARK_BRIDGE__CHANNELS__SUPPORT__APP_SECRET"),
            "{e}"
        );
        assert!(e.contains("channel \"support\""), "the channel by its id too: {e}");
        let e = settings(&FILE.replace("fastgpt_api_key = \"fastgpt-key\"\n", ""))
            .for_service(Service::Relay)
            .expect_err("no FastGPT key")
            .to_string();
        assert!(e.contains("channels[0].fastgpt_api_key"), "{e}");
        let no_callback = FILE.replace("encrypt_key = \"ek\"\n", "").replace("verification_token = \"vt\"\n", "");
        settings(&no_callback).for_service(Service::Responder).expect("the responder needs neither");
    }

    #[test]
    fn an_unverified_webhook_channel_needs_an_explicit_yes() {
        let open = FILE.replace("encrypt_key = \"ek\"\n", "").replace("verification_token = \"vt\"\n", "");
        let e = settings(&open).for_service(Service::Ingress).expect_err("refused").to_string();
        assert!(e.contains("channels[0]") && e.contains("allow_unverified"), "{e}");
        assert!(e.contains("channel \"support\""), "the channel by its id too: {e}");
        let allowed = open.replace("fastgpt_api_key", "allow_unverified = true\nfastgpt_api_key");
        let s = settings(&allowed);
        assert_eq!(s.unverified_channels().collect::<Vec<_>>(), ["support"]);
        s.for_service(Service::Ingress).expect("allowed when said so");
        let token_only = FILE.replace("encrypt_key = \"ek\"\n", "");
        settings(&token_only).for_service(Service::Ingress).expect("a verification token is enough");
    }

    #[test]
    fn a_long_connection_ingress_needs_the_app_secret_and_no_callback_secret() {
        let lc = FILE
            .replace("encrypt_key = \"ek\"\n", "")
            .replace("verification_token = \"vt\"\n", "")
            .replace("fastgpt_api_key", "subscription = \"long_connection\"\nfastgpt_api_key");
        let ingress = settings(&lc).for_service(Service::Ingress).expect("no callback secret needed");
        assert!(ingress.channels[0].app_secret.is_some(), "the ingress keeps the App Secret to connect");
        assert!(ingress.channels[0].fastgpt_api_key.is_none());
        assert_eq!(settings(&lc).unverified_channels().count(), 0);
        let e = settings(&lc.replace("app_secret = \"s3cret\"\n", ""))
            .for_service(Service::Ingress)
            .expect_err("no App Secret")
            .to_string();
        assert!(
            e.contains("channels[0].app_secret") && e.contains("LARK_BRIDGE__CHANNELS__SUPPORT__APP_SECRET"),
            "{e}"
        );
    }
}
