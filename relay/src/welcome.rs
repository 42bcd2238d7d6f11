//! The FastGPT app's welcome text, sent once to a chat the bot joins: a group
//! it was added to (`im.chat.member.bot.added_v1`) or a private chat a user
//! opened (`im.chat.access_event.bot_p2p_chat_entered_v1`, sent each time the
//! chat is opened). The text is the app's `chatConfig.welcomeText`
//! (`GET core/chat/init`); empty, nothing is sent.
//!
//! Once per chat, durably: the chat is claimed in the sessions bucket
//! (`keys::welcomed`, no age limit) with an atomic create before the welcome
//! is published, so a second event, a redelivery or another replica finds
//! the claim and sends nothing. A claim whose publish failed is released
//! for the retry; a relay killed between claim and publish loses that one
//! welcome rather than sending it twice.

use std::time::Duration;

use common::channel::Channel;
use common::envelope::{dedup_key, ReplyBody, ReplyCommand, ReplyKind};
use common::lark::event::EventEnvelope;
use common::topology::keys;
use common::worker::{backoff, Outcome};
use serde_json::Value;

use crate::fastgpt::FastGptError;
use crate::handler::Relay;

/// The bot was added to a group.
pub const BOT_ADDED: &str = "im.chat.member.bot.added_v1";
/// A user opened the private chat with the bot.
pub const P2P_ENTERED: &str = "im.chat.access_event.bot_p2p_chat_entered_v1";

/// The longest welcome sent, in characters (FastGPT's field is free text).
pub const MAX_WELCOME_CHARS: usize = 4_000;

/// Whether `event_type` asks for the welcome.
pub fn is_welcome_event(event_type: &str) -> bool {
    event_type == BOT_ADDED || event_type == P2P_ENTERED
}

/// The Lark chat of a welcome event: `event.chat_id`, of Lark's shape only.
pub fn chat_of(envelope: &EventEnvelope) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Chat {
        chat_id: String,
    }
    let chat = serde_json::from_str::<Chat>(envelope.event.as_ref()?.get()).ok()?.chat_id;
    let ok = chat.starts_with("oc_")
        && chat.len() <= 64
        && chat.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(chat)
}

/// The welcome text of `init`'s `data`: trimmed, bounded; `None` when empty.
pub fn welcome_text(init: &Value) -> Option<String> {
    let text = init.pointer("/app/chatConfig/welcomeText").and_then(Value::as_str)?.trim();
    (!text.is_empty()).then(|| common::question::clip(text, MAX_WELCOME_CHARS - 1))
}

impl Relay {
    pub(crate) async fn handle_welcome(&self, channel: &Channel, envelope: &EventEnvelope, attempt: u32) -> Outcome {
        let Some(chat) = chat_of(envelope) else {
            tracing::warn!(event_type = %envelope.header.event_type, "a welcome event without a usable chat_id; dropped");
            return Outcome::Done;
        };
        let store = self.sessions.store();
        let key = keys::welcomed(&channel.id, &chat);
        // The mark names the event that claimed the welcome: that event
        // delivered again (its relay killed between the mark and the
        // publish) publishes again, which the reply's `Nats-Msg-Id` and
        // Lark `uuid` make harmless; any other event finds the chat welcomed.
        let source = dedup_key(&channel.id, envelope, None);
        let claimed = match store.get(&key).await {
            Ok(Some(by)) if by.as_ref() == source.as_bytes() => true,
            Ok(Some(_)) => {
                tracing::debug!("this chat was welcomed already");
                return Outcome::Done;
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the chat's welcome mark; retrying");
                return Outcome::Retry(Duration::from_secs(1));
            }
        };
        let init_chat = format!("lb-welcome-{}", common::conversation::short_hash(&[chat.as_bytes()]));
        let text = match self.fastgpt.init(channel, &init_chat).await {
            Ok(data) => welcome_text(&data),
            Err(FastGptError::Transient(detail)) if attempt < self.settings.max_attempts => {
                tracing::warn!(%detail, attempt, "cannot read the app's welcome text; will retry");
                return Outcome::Retry(backoff(attempt, Duration::from_secs(60)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the app's welcome text; no welcome sent");
                self.status.error(&channel.id, format!("cannot read the app's welcome text: {e}"), e.fix());
                return Outcome::Done;
            }
        };
        let Some(text) = text else {
            tracing::info!("the app has no welcome text; nothing sent");
            return Outcome::Done;
        };
        // Claimed by this very event already: nothing more to mark.
        if !claimed {
            match store.create(&key, source.clone().into()).await {
                Ok(_) => {}
                Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                    tracing::debug!("another delivery welcomed this chat");
                    return Outcome::Done;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot mark the chat as welcomed; retrying");
                    return Outcome::Retry(Duration::from_secs(1));
                }
            }
        }
        let command = ReplyCommand {
            channel: channel.id.clone(),
            source,
            reply_to: String::new(),
            chat_id: chat.clone(),
            in_thread: false,
            kind: ReplyKind::Notice,
            body: ReplyBody::markdown(text),
        };
        if let Err(e) = self.publish_reply(&command).await {
            tracing::warn!(error = %e, "cannot publish the welcome; retrying");
            if let Err(e) = store.delete(&key).await {
                tracing::warn!(error = %e, "cannot release the welcome mark; this chat gets no welcome");
            }
            return Outcome::Retry(Duration::from_secs(1));
        }
        metrics::counter!(common::metric_names::RELAY_WELCOMES_TOTAL, "channel" => channel.id.clone()).increment(1);
        tracing::info!(event_type = %envelope.header.event_type, "welcome sent");
        Outcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_welcome_text_is_trimmed_and_bounded() {
        let init = |t: &str| json!({ "app": { "chatConfig": { "welcomeText": t } } });
        assert_eq!(welcome_text(&init("  Hello!  ")), Some("Hello!".into()));
        assert_eq!(welcome_text(&init("   ")), None);
        assert_eq!(welcome_text(&json!({})), None);
        let long = "x".repeat(MAX_WELCOME_CHARS * 2);
        assert!(welcome_text(&init(&long)).is_some_and(|t| t.chars().count() <= MAX_WELCOME_CHARS));
    }
}
