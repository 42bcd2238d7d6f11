//! `ingress --check`: the configuration, each channel's Request URL to paste
//! into the Lark console, and NATS with its streams.

use common::check::Checklist;
use common::config::Settings;

pub async fn run(settings: &Settings) -> Checklist {
    let mut list = Checklist::new("ingress --check");
    list.pass("config", format!("{} channel(s); callbacks on {}", settings.channels.len(), settings.ingress.listen));
    if settings.channels.is_empty() {
        list.fail(
            "channels",
            "no [[channels]] configured",
            "add a [[channels]] table per Lark app (deploy/config.example.toml)",
        );
    }
    let base = settings.ingress.public_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_owned());
    for c in &settings.channels {
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
    if base.is_none() {
        list.pass(
            "public URL",
            "ingress.public_url is not set: replace <public host> above with the HTTPS address Lark reaches",
        );
    }
    common::check::nats(&mut list, settings).await;
    list
}
