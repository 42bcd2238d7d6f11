//! Who shares a FastGPT history, and how the chatId is derived.
//!
//! - a private chat (`chat_type` p2p): the chat;
//! - a topic (the message has a `thread_id`): the topic, shared by everyone in it;
//! - any other group message: the group and the sender, one history per member.
//!
//! The chatId is `lb-{channel}-{hash}-{generation}`: deterministic, short ASCII
//! (well under FastGPT's 250 characters), and different for two channels even
//! when their Lark ids collide. The generation grows on `Reset`.

use sha2::{Digest, Sha256};

use crate::lark::event::MessageEvent;

/// The conversation a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConversationKey {
    Chat { chat_id: String },
    Topic { chat_id: String, thread_id: String },
    Member { chat_id: String, open_id: String },
}

impl ConversationKey {
    pub fn of(ev: &MessageEvent) -> Self {
        let m = &ev.message;
        if m.is_p2p() {
            return Self::Chat { chat_id: m.chat_id.clone() };
        }
        match m.thread_id.as_deref().filter(|t| !t.is_empty()) {
            Some(thread) => Self::Topic { chat_id: m.chat_id.clone(), thread_id: thread.to_owned() },
            None => Self::Member {
                chat_id: m.chat_id.clone(),
                open_id: ev.sender.sender_id.open_id.clone().unwrap_or_default(),
            },
        }
    }

    /// A readable form, for logs and KV keys' inputs.
    pub fn describe(&self) -> String {
        match self {
            Self::Chat { chat_id } => format!("p2p:{chat_id}"),
            Self::Topic { thread_id, .. } => format!("topic:{thread_id}"),
            Self::Member { chat_id, open_id } => format!("member:{chat_id}:{open_id}"),
        }
    }

    /// 16 hex digits identifying the conversation within a channel: a NATS
    /// subject token and KV key, whatever characters Lark's ids contain.
    pub fn token(&self) -> String {
        short_hash(&[self.describe().as_bytes()])
    }

    /// The chatId sent to FastGPT for this conversation in `channel` at `generation`.
    pub fn chat_id(&self, channel: &str, generation: u64) -> String {
        format!("lb-{channel}-{}-{generation}", short_hash(&[channel.as_bytes(), b"\0", self.describe().as_bytes()]))
    }
}

/// 16 hex digits (64 bits) of SHA-256 over the parts.
pub fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lark::event::{Message, Sender, UserIds};

    fn ev(chat_type: &str, chat: &str, thread: Option<&str>, sender: &str) -> MessageEvent {
        MessageEvent {
            sender: Sender {
                sender_id: UserIds { open_id: Some(sender.into()), ..Default::default() },
                sender_type: "user".into(),
                tenant_key: None,
            },
            message: Message {
                message_id: "om_1".into(),
                root_id: None,
                parent_id: None,
                create_time: None,
                chat_id: chat.into(),
                thread_id: thread.map(Into::into),
                chat_type: chat_type.into(),
                message_type: "text".into(),
                content: "{}".into(),
                mentions: vec![],
            },
        }
    }

    #[test]
    fn who_shares_a_history() {
        let p2p_a = ConversationKey::of(&ev("p2p", "oc_1", None, "ou_a"));
        assert_eq!(p2p_a, ConversationKey::Chat { chat_id: "oc_1".into() });
        let topic_a = ConversationKey::of(&ev("group", "oc_2", Some("omt_1"), "ou_a"));
        let topic_b = ConversationKey::of(&ev("group", "oc_2", Some("omt_1"), "ou_b"));
        assert_eq!(topic_a, topic_b, "everyone in a topic shares it");
        let member_a = ConversationKey::of(&ev("group", "oc_2", None, "ou_a"));
        let member_b = ConversationKey::of(&ev("group", "oc_2", None, "ou_b"));
        assert_ne!(member_a, member_b, "each group member has their own");
        assert_ne!(member_a.chat_id("c", 0), member_b.chat_id("c", 0));
    }

    #[test]
    fn chat_id_is_deterministic_short_and_per_channel_and_generation() {
        let k = ConversationKey::Chat { chat_id: "oc_1".into() };
        assert_eq!(k.chat_id("support", 0), k.chat_id("support", 0));
        assert_ne!(k.chat_id("support", 0), k.chat_id("sales", 0));
        assert_ne!(k.chat_id("support", 0), k.chat_id("support", 1));
        let id = k.chat_id(&"x".repeat(64), u64::MAX);
        assert!(id.len() <= 250 && id.is_ascii(), "{id}");
        assert_eq!(k.token().len(), 16);
    }
}
