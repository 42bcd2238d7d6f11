//! `ingress --check` for a long-connection channel: ask the endpoint, open
//! one WebSocket with the channel's credentials, and close it at once. A
//! refusal is reported with its fix; the URL's secrets are never printed.

use common::channel::Channel;

use super::connection::{dial, DialError};

/// What the probe found: the redacted URL it reached, or what to fix.
pub async fn probe(channel: &Channel, http: &reqwest::Client) -> Result<String, (String, &'static str)> {
    let Some(secret) = channel.app_secret.as_ref() else {
        return Err((
            "no app_secret".into(),
            "set the channel's app_secret (the long connection opens with the App ID and App Secret)",
        ));
    };
    match dial(channel, secret, http, 1024 * 1024).await {
        Ok((mut ws, ep)) => {
            let _ = ws.close(None).await;
            Ok(format!("opened and closed a long connection to {} (ping every {} s)", ep.url, ep.config.ping_interval))
        }
        Err(DialError::Endpoint(e)) => Err((e.to_string(), e.fix())),
        Err(DialError::Refused(r)) => Err((r.to_string(), r.fix())),
        Err(e @ DialError::Handshake { .. }) => Err((
            e.to_string(),
            "check that this host reaches Lark (outbound HTTPS and WebSocket, no proxy in the way)",
        )),
    }
}
