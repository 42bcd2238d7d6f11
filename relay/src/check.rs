//! `relay --check`: each channel's FastGPT API root and key answer a real
//! question (chatId `lb-check-{channel}`, user `lark-bridge-check`, so the
//! record is easy to recognise in FastGPT's chat logs), and NATS works.

use std::time::{Duration, Instant};

use common::channel::Channels;
use common::check::Checklist;
use common::config::Settings;
use common::service::http_client;

use crate::fastgpt::{Ask, FastGpt};

pub async fn run(settings: &Settings) -> Checklist {
    let mut list = Checklist::new("relay --check");
    common::check::secrets(&mut list, settings, common::service_name::Service::Relay);
    let timeout = settings.relay.fastgpt_timeout().min(Duration::from_secs(60));
    let fastgpt = match http_client(timeout) {
        Ok(http) => FastGpt::new(http, timeout),
        Err(e) => {
            list.fail("HTTP client", e.to_string(), "report this as a bug");
            return list;
        }
    };
    let channels = Channels::new(&settings.channels);
    for (i, c) in settings.channels.iter().enumerate() {
        let Some(channel) = channels.get(&c.id) else { continue };
        let name = format!("FastGPT for channel {}", c.id);
        let chat_id = format!("lb-check-{}", c.id);
        let started = Instant::now();
        let ask = Ask {
            chat_id: &chat_id,
            custom_uid: "lark-bridge-check",
            text: "lark-bridge --check: please answer OK",
            attachments: &[],
            data_id: None,
        };
        let key = format!("channels[{i}]");
        match fastgpt.ask(channel, &ask).await {
            Ok(answer) => {
                let preview: String = answer.text.chars().take(60).collect();
                list.pass(
                    name,
                    format!("{} answered in {} ms: {preview:?}", c.fastgpt_base_url, started.elapsed().as_millis()),
                );
            }
            // Name the exact key: `channels[0].fastgpt_api_key`.
            Err(e) => list.fail(name, e.to_string(), e.fix().replace("fastgpt_", &format!("{key}.fastgpt_"))),
        }
    }
    common::check::files(&mut list, settings);
    common::check::nats(&mut list, settings).await;
    list
}
