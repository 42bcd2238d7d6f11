//! `responder --check`: each channel's Lark credentials yield a tenant token
//! and the bot info endpoint answers (Lark names a missing permission when it
//! says so); a streaming channel may create cards (scope
//! `cardkit:card:write`: a card nobody is sent is created to find out); NATS
//! works; dead letters waiting are counted.

use std::sync::Arc;

use common::channel::Channels;
use common::check::Checklist;
use common::config::Settings;
use common::lark::api::{LarkClient, LarkError};
use common::lark::cardkit::CardFailure;
use common::lark::errors::ErrorClass;
use common::service::http_client;
use common::topology::Topology;

fn fix(e: &LarkError) -> String {
    match e.class() {
        ErrorClass::Permanent { fix } => fix.to_owned(),
        ErrorClass::TokenInvalid => "Lark refused a fresh token: check app_id and app_secret".to_owned(),
        ErrorClass::Transient { .. } => {
            "Lark is not reachable or busy: check lark_base_url (https://open.feishu.cn or https://open.larksuite.com) and the network".to_owned()
        }
    }
}

/// The bot's `activate_status` from `GET /open-apis/bot/v3/info`, in words.
/// Lark's values: 0 initialising (waiting for the tenant to install the
/// app), 1 disabled by the tenant, 2 enabled, 3 installed but not enabled
/// yet, 4 upgraded but not enabled yet, 5 disabled (licence expired), 6
/// disabled (Lark plan expired or downgraded).
fn activation(status: Option<i64>) -> String {
    const SEE: &str = "the bot may not receive or send messages: see the app's availability in the Lark admin console";
    let words = match status {
        Some(2) => return "activated".to_owned(),
        None => return "activation status not reported".to_owned(),
        Some(0) => "initialising: the tenant has not installed the app yet",
        Some(1) => "disabled by the tenant",
        Some(3) => "installed but not enabled yet",
        Some(4) => "upgraded but not enabled yet",
        Some(5) => "disabled: the licence expired",
        Some(6) => "disabled: the Lark plan expired or was downgraded",
        Some(n) => return format!("activation status {n} (unknown to this version; 2 is activated)"),
    };
    format!("{words} ({SEE})")
}

pub async fn run(settings: &Settings) -> Checklist {
    let mut list = Checklist::new("responder --check");
    common::check::secrets(&mut list, settings, common::service_name::Service::Responder);
    let http = match http_client(settings.responder.lark_timeout()) {
        Ok(h) => h,
        Err(e) => {
            list.fail("HTTP client", e.to_string(), "report this as a bug");
            return list;
        }
    };
    let channels = Channels::new(&settings.channels);
    for c in &settings.channels {
        let Some(channel) = channels.get(&c.id) else { continue };
        let lark = LarkClient::new(http.clone(), Arc::clone(channel));
        match lark.tenant_token().await {
            Ok(_) => list.pass(
                format!("Lark credentials of {}", c.id),
                format!("tenant token obtained from {}", c.lark_base_url),
            ),
            Err(e) => {
                list.fail(format!("Lark credentials of {}", c.id), e.to_string(), fix(&e));
                continue;
            }
        }
        match lark.bot_info().await {
            Ok(bot) => list.pass(
                format!("bot of {}", c.id),
                format!("{:?} (open_id {}), {}", bot.app_name, bot.open_id, activation(bot.activate_status)),
            ),
            Err(e) => list.fail(format!("bot of {}", c.id), e.to_string(), fix(&e)),
        }
        if c.streaming {
            streaming_cards(&mut list, &lark, &c.id).await;
        }
    }
    if let Some(js) = common::check::nats(&mut list, settings).await {
        let topology = Topology::new(&settings.nats);
        match common::dead_letter::list(&js, &topology, None).await {
            Ok(l) if l.is_empty() => list.pass("dead letters", "none waiting"),
            Ok(l) => list.pass(
                "dead letters",
                format!(
                    "{} waiting: see them with `responder --dead-letters`, fix the cause, then `--redrive`",
                    l.len()
                ),
            ),
            Err(e) => list.fail("dead letters", e.to_string(), "check NATS"),
        }
    }
    list
}

/// Can the app create CardKit cards? Without the scope, answers still go
/// out, whole: a warning, not a failure.
async fn streaming_cards(list: &mut Checklist, lark: &LarkClient, channel: &str) {
    let name = format!("streaming cards of {channel}");
    let probe = crate::render::streaming_card("lark-bridge --check", false);
    match lark.create_card(&probe).await {
        Ok(_) => list.pass(name, "CardKit creates cards (scope cardkit:card:write): answers stream"),
        Err(e) => match CardFailure::of(&e) {
            CardFailure::Refused => list.warn(
                name,
                format!("{e}: answers go out whole, without streaming"),
                common::lark::cardkit::CARDKIT_FIX,
            ),
            _ => list.warn(name, format!("cannot tell: {e}"), fix(&e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::activation;

    #[test]
    fn activation_is_said_in_words() {
        assert_eq!(activation(Some(2)), "activated");
        assert!(activation(Some(1)).starts_with("disabled by the tenant ("), "{}", activation(Some(1)));
        assert!(activation(Some(42)).contains("42"));
        assert!(!activation(None).contains("None"));
    }
}
