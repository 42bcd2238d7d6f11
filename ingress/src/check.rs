//! `ingress --check`: the configuration, each channel's Request URL to paste
//! into the Lark console (or, for a long-connection channel, one connection
//! opened with its credentials and closed), and NATS with its streams.

use common::channel::Channel;
use common::check::Checklist;
use common::config::{Settings, Subscription};

pub async fn run(settings: &Settings) -> Checklist {
    let mut list = Checklist::new("ingress --check");
    list.pass("config", format!("{} channel(s); callbacks on {}", settings.channels.len(), settings.ingress.listen));
    common::check::secrets(&mut list, settings, common::service_name::Service::Ingress);
    for id in settings.unverified_channels() {
        list.warn(
            format!("channel {id} unverified"),
            "no encrypt_key and no verification_token: anyone who knows the Request URL can post forged events",
            "set the Encrypt Key (Lark console: Events & Callbacks > Encryption Strategy) as encrypt_key",
        );
    }
    if settings.channels.is_empty() {
        list.fail(
            "channels",
            "no [[channels]] configured",
            "add a [[channels]] table per Lark app (deploy/config.example.toml)",
        );
    }
    let base = settings.ingress.public_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_owned());
    let http = common::service::http_client(settings.responder.lark_timeout()).ok();
    for c in &settings.channels {
        if c.subscription == Subscription::LongConnection {
            let name = format!("channel {} long connection", c.id);
            let Some(http) = &http else {
                list.fail(name, "cannot build an HTTP client", "see the log");
                continue;
            };
            match crate::long_connection::probe::probe(&Channel::new(c), http).await {
                Ok(what) => list.pass(name, format!("app {}: {what}; no Request URL needed", c.app_id)),
                Err((what, fix)) => list.fail(name, format!("app {}: {what}", c.app_id), fix),
            }
            continue;
        }
        let url = format!("{}/lark/{}/events", base.as_deref().unwrap_or("https://<public host>"), c.id);
        let security = match (&c.encrypt_key, &c.verification_token) {
            (Some(_), Some(_)) => "encrypted and signed, verification token checked",
            (Some(_), None) => "encrypted and signed",
            (None, Some(_)) => {
                "NOT encrypted or signed (set an Encrypt Key in the console and encrypt_key here); token checked"
            }
            (None, None) => "NOT encrypted or signed, no verification token (set both in the console and here)",
        };
        list.pass(
            format!("channel {}", c.id),
            format!("app {}; paste this Request URL in the Lark console: {url}; callbacks {security}", c.app_id),
        );
    }
    let webhooks = settings.channels.iter().any(|c| c.subscription == Subscription::Webhook);
    if base.is_none() && webhooks {
        list.pass(
            "public URL",
            "ingress.public_url is not set: replace <public host> above with the HTTPS address Lark reaches",
        );
    }
    common::check::files(&mut list, settings);
    common::check::nats(&mut list, settings).await;
    list
}
