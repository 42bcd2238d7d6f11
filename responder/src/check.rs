//! `responder --check`: each channel's Lark credentials yield a tenant token
//! and the bot info endpoint answers (Lark names a missing permission when it
//! says so); NATS works; dead letters waiting are counted.

use std::sync::Arc;

use common::channel::Channels;
use common::check::Checklist;
use common::config::Settings;
use common::lark::api::{LarkClient, LarkError};
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

pub async fn run(settings: &Settings) -> Checklist {
    let mut list = Checklist::new("responder --check");
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
                format!("{:?} (open_id {}), activate_status {:?}", bot.app_name, bot.open_id, bot.activate_status),
            ),
            Err(e) => list.fail(format!("bot of {}", c.id), e.to_string(), fix(&e)),
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
