//! What each section accepts, checked once at load: a bad value stops the
//! start naming its key, rather than failing later in a way that hides it.

use std::collections::HashSet;

use secrecy::ExposeSecret;

use super::{
    invalid, ChannelSettings, ConfigError, IngressSettings, NatsSettings, RelaySettings, ResponderSettings, Settings,
};

/// Lark serves no message resource larger than 100 MB (its code 234037).
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// The longest a stored file may live: 30 days.
pub const MAX_FILES_AGE_SECS: u64 = 30 * 24 * 3600;
/// The shortest `ingress.files_signing_key` accepted: 32 characters.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        nats(&self.nats)?;
        relay(&self.relay)?;
        if self.relay.max_file_bytes > self.nats.files_max_bytes {
            return Err(invalid(
                "relay.max_file_bytes",
                "must not exceed nats.files_max_bytes: a file that size could never be stored",
            ));
        }
        ingress(&self.ingress)?;
        responder(&self.responder)?;
        channels(&self.channels)
    }
}

fn nats(nats: &NatsSettings) -> Result<(), ConfigError> {
    if !is_token(&nats.namespace) {
        return Err(invalid("nats.namespace", "use letters, digits, `-` and `_` only (it prefixes NATS names)"));
    }
    if nats.replicas == 0 || nats.replicas > 5 {
        return Err(invalid("nats.replicas", "must be between 1 and 5"));
    }
    crate::nats_url::server_addrs(&nats.url).map_err(|e| invalid("nats.url", e.to_string()))?;
    for (key, v) in [
        ("nats.events_max_bytes", nats.events_max_bytes),
        ("nats.replies_max_bytes", nats.replies_max_bytes),
        ("nats.dead_max_bytes", nats.dead_max_bytes),
        ("nats.bucket_max_bytes", nats.bucket_max_bytes),
        ("nats.files_max_bytes", nats.files_max_bytes),
    ] {
        if !(1024..=i64::MAX as u64).contains(&v) {
            return Err(invalid(key, "must be at least 1024 (bytes; every stream has a size limit)"));
        }
    }
    if nats.dead_max_age_days == 0 || nats.dead_max_age_days > 3650 {
        return Err(invalid("nats.dead_max_age_days", "must be between 1 and 3650"));
    }
    if !(1..=MAX_FILES_AGE_SECS).contains(&nats.files_max_age_secs) {
        return Err(invalid(
            "nats.files_max_age_secs",
            format!("must be between 1 and {MAX_FILES_AGE_SECS} (30 days)"),
        ));
    }
    Ok(())
}

fn relay(relay: &RelaySettings) -> Result<(), ConfigError> {
    if !(1024..=MAX_FILE_BYTES).contains(&relay.max_file_bytes) {
        return Err(invalid(
            "relay.max_file_bytes",
            format!("must be between 1024 and {MAX_FILE_BYTES} (Lark serves no resource larger than 100 MB)"),
        ));
    }
    // A partition's new owner waits only so long for its previous owner's
    // messages: a FastGPT call must end before (`crate::handover`).
    let max = crate::handover::MAX_FASTGPT_TIMEOUT_SECS;
    if relay.fastgpt_timeout_secs > max {
        return Err(invalid(
            "relay.fastgpt_timeout_secs",
            format!(
                "must be at most {max}: a question still in work at a replica that lost its partition must end \
                 before the new owner goes on with that conversation ({} s)",
                crate::handover::MAX_WAIT.as_secs()
            ),
        ));
    }
    at_least_one([
        ("relay.max_in_flight", relay.max_in_flight as u64),
        ("relay.max_attempts", relay.max_attempts.into()),
        ("relay.fastgpt_timeout_secs", relay.fastgpt_timeout_secs),
    ])
}

fn ingress(ingress: &IngressSettings) -> Result<(), ConfigError> {
    if let Some(url) = &ingress.public_url {
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "ingress.public_url",
                "must be an http:// or https:// address without a query, e.g. https://bot.example.com",
            ));
        }
    }
    if let Some(key) = &ingress.files_signing_key {
        if key.expose_secret().len() < MIN_SIGNING_KEY_LEN {
            return Err(invalid(
                "ingress.files_signing_key",
                format!(
                    "must be at least {MIN_SIGNING_KEY_LEN} characters (a random secret, e.g. `openssl rand -hex 32`)"
                ),
            ));
        }
    }
    if ingress.body_limit_bytes < 1024 {
        return Err(invalid("ingress.body_limit_bytes", "must be at least 1024"));
    }
    if !(100..=2_900).contains(&ingress.publish_timeout_ms) {
        return Err(invalid("ingress.publish_timeout_ms", "must be 100..=2900: Lark waits 3 s for the answer"));
    }
    if !(1..=300).contains(&ingress.header_timeout_secs) {
        return Err(invalid("ingress.header_timeout_secs", "must be 1..=300"));
    }
    if !(3..=300).contains(&ingress.request_timeout_secs) {
        return Err(invalid("ingress.request_timeout_secs", "must be 3..=300: Lark waits 3 s for the answer"));
    }
    if !(16..=1_000_000).contains(&ingress.max_connections) {
        return Err(invalid("ingress.max_connections", "must be 16..=1000000"));
    }
    if !(1..=50).contains(&ingress.long_connections_per_channel) {
        return Err(invalid(
            "ingress.long_connections_per_channel",
            "must be 1..=50: Lark allows 50 long connections per app, across every replica",
        ));
    }
    Ok(())
}

fn responder(responder: &ResponderSettings) -> Result<(), ConfigError> {
    if !(200..=5_000).contains(&responder.stream_update_ms) {
        return Err(invalid(
            "responder.stream_update_ms",
            "must be 200..=5000: Lark allows 10 operations per second on one card, and the final answer adds two",
        ));
    }
    at_least_one([
        ("responder.max_in_flight", responder.max_in_flight as u64),
        ("responder.max_attempts", responder.max_attempts.into()),
        ("responder.lark_timeout_secs", responder.lark_timeout_secs),
        ("responder.per_chat_per_second", responder.per_chat_per_second.into()),
        ("responder.app_per_second", responder.app_per_second.into()),
        ("responder.app_per_minute", responder.app_per_minute.into()),
    ])
}

fn channels(channels: &[ChannelSettings]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, c) in channels.iter().enumerate() {
        let key = |k: &str| format!("channels[{i}].{k}");
        if !is_token(&c.id) || c.id.len() > 64 {
            return Err(invalid(
                key("id"),
                "use 1 to 64 letters, digits, `-` and `_` (it is part of the Request URL and of NATS subjects)",
            ));
        }
        if c.lark_calls_per_month == Some(0) {
            return Err(invalid(
                key("lark_calls_per_month"),
                "must be at least 1 (Lark API calls a month; leave it out for no budget)",
            ));
        }
        if !seen.insert(c.id.as_str()) {
            return Err(invalid(key("id"), format!("channel id {:?} is used twice", c.id)));
        }
        if c.app_id.trim().is_empty() {
            return Err(invalid(
                key("app_id"),
                format!("must not be empty for channel {:?} (the App ID from the Lark console, cli_...)", c.id),
            ));
        }
        for (k, url) in [("lark_base_url", &c.lark_base_url), ("fastgpt_base_url", &c.fastgpt_base_url)] {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(key(k), format!("must be an http:// or https:// URL (channel {:?})", c.id)));
            }
        }
    }
    Ok(())
}

/// Counts, timeouts and rates where 0 would mean nothing ever happens.
fn at_least_one<const N: usize>(values: [(&str, u64); N]) -> Result<(), ConfigError> {
    match values.into_iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(invalid(key, "must be at least 1")),
        None => Ok(()),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && crate::lark::ids::token_chars(s)
}
