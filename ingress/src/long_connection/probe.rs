//! `ingress --check` for a long-connection channel: ask the endpoint, open
//! one WebSocket with the channel's credentials, and close it at once. A
//! refusal is reported with its fix; the URL's secrets are never printed.

use common::channel::Channel;
use common::lark::long_connection::endpoint::ClientConfig;

use super::connection::dial;

/// What the probe found: the redacted URL it reached, or what to fix.
pub async fn probe(channel: &Channel, http: &reqwest::Client) -> Result<String, (String, &'static str)> {
    let Some(secret) = channel.app_secret.as_ref() else {
        return Err((
            "no app_secret".into(),
            "set the channel's app_secret (the long connection opens with the App ID and App Secret)",
        ));
    };
    match dial(channel, secret, http, 1024 * 1024, &mut ClientConfig::default()).await {
        Ok((mut ws, ep)) => {
            let _ = ws.close(None).await;
            Ok(format!("opened and closed a long connection to {} (ping every {} s)", ep.url, ep.config.ping_interval))
        }
        Err(e) => Err((e.to_string(), e.fix())),
    }
}
