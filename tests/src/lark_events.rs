//! Builders for exactly what Lark pushes to a Request URL.
//!
//! End-to-end tests, the sandbox and the load generator must send the ingress
//! what Lark sends, not what the bridge happens to parse: schema 2.0
//! `im.message.receive_v1` events shaped like Lark's published sample
//! (`testdata/lark-samples/group_mention.json`), the URL-verification challenge,
//! and the encrypted, signed HTTP request around them ([`SignedRequest`]).
//! `message.content` is a JSON *string* inside the event, as on the wire.

use common::lark::crypto::EncryptKey;
use common::lark::signature::{sign, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The event type of a received message.
pub const MESSAGE_RECEIVE_V1: &str = "im.message.receive_v1";

/// `n` random bytes as lowercase hex: Lark's ids are opaque hex strings.
pub fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex::encode(bytes)
}

/// A fresh message id in Lark's style (`om_` + 32 hex digits).
pub fn new_message_id() -> String {
    format!("om_{}", random_hex(16))
}

/// Now, in Unix seconds (the unit of `X-Lark-Request-Timestamp`).
pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Now, in Unix milliseconds (the unit of `create_time` in message events).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Where a message was posted: the three kinds of conversation the bridge tells apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatRef {
    /// A private chat with the bot (`chat_type` `p2p`).
    P2p { chat_id: String },
    /// An ordinary group (`chat_type` `group`, no `thread_id`).
    Group { chat_id: String },
    /// A topic of a topic group: a group message carrying a `thread_id`.
    Topic { chat_id: String, thread_id: String },
}

impl ChatRef {
    pub fn chat_id(&self) -> &str {
        match self {
            ChatRef::P2p { chat_id } | ChatRef::Group { chat_id } | ChatRef::Topic { chat_id, .. } => chat_id,
        }
    }

    pub fn thread_id(&self) -> Option<&str> {
        match self {
            ChatRef::Topic { thread_id, .. } => Some(thread_id),
            _ => None,
        }
    }

    fn chat_type(&self) -> &'static str {
        match self {
            ChatRef::P2p { .. } => "p2p",
            _ => "group",
        }
    }
}

/// One entry of `message.mentions`: the placeholder `key` (`@_user_1`) that
/// stands in the text for this person or bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mention {
    pub key: String,
    pub open_id: String,
    pub name: String,
    /// Users have a `user_id`; bots do not.
    pub user_id: Option<String>,
}

impl Mention {
    /// The bot mentioned as the first mention (`@_user_1`), as when a user
    /// types "@bot question" in a group.
    pub fn bot(open_id: impl Into<String>) -> Self {
        Self::bot_at(1, open_id, "Bot")
    }

    /// The bot as the `index`-th mention (`@_user_{index}`), with its display name.
    pub fn bot_at(index: usize, open_id: impl Into<String>, name: impl Into<String>) -> Self {
        Self { key: format!("@_user_{index}"), open_id: open_id.into(), name: name.into(), user_id: None }
    }

    /// Another person, mentioned as `@_user_{index}`.
    pub fn user(index: usize, open_id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            key: format!("@_user_{index}"),
            open_id: open_id.into(),
            name: name.into(),
            user_id: Some(random_hex(4)),
        }
    }

    fn to_json(&self, tenant_key: &str) -> Value {
        let mut id = json!({
            "union_id": format!("on_{}", hash_hex(&self.open_id)),
            "open_id": self.open_id,
        });
        if let Some(user_id) = &self.user_id {
            id["user_id"] = json!(user_id);
        }
        json!({ "key": self.key, "id": id, "name": self.name, "tenant_key": tenant_key })
    }
}

/// Builds `im.message.receive_v1` events. Defaults: a user sender, fresh random
/// `event_id` and `message_id`, `create_time` now, no verification token.
#[derive(Clone, Debug)]
pub struct EventBuilder {
    app_id: String,
    tenant_key: String,
    token: Option<String>,
    sender_type: String,
    event_id: Option<String>,
    message_id: Option<String>,
    create_time_ms: Option<i64>,
    parent_id: Option<String>,
}

impl EventBuilder {
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            tenant_key: "736588c9260f175e".to_owned(),
            token: None,
            sender_type: "user".to_owned(),
            event_id: None,
            message_id: None,
            create_time_ms: None,
            parent_id: None,
        }
    }

    /// `header.token`: the channel's Verification Token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The message was sent by an app (a bot), which the bridge must ignore.
    pub fn from_app(mut self) -> Self {
        self.sender_type = "app".to_owned();
        self
    }

    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    pub fn message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }

    pub fn create_time_ms(mut self, ms: i64) -> Self {
        self.create_time_ms = Some(ms);
        self
    }

    pub fn tenant_key(mut self, tenant_key: impl Into<String>) -> Self {
        self.tenant_key = tenant_key.into();
        self
    }

    /// The message answers another one (`root_id` / `parent_id`).
    pub fn in_reply_to(mut self, parent_message_id: impl Into<String>) -> Self {
        self.parent_id = Some(parent_message_id.into());
        self
    }

    /// A text message in a private chat.
    pub fn p2p_text(&self, chat_id: &str, sender_open_id: &str, text: &str) -> Value {
        let chat = ChatRef::P2p { chat_id: chat_id.to_owned() };
        self.message(&chat, sender_open_id, "text", &json!({ "text": text }), &[])
    }

    /// A text message in a group; `text` carries the placeholders of `mentions`
    /// (`"@_user_1 hello"` with `[Mention::bot(bot_open_id)]`).
    pub fn group_text(&self, chat_id: &str, sender_open_id: &str, text: &str, mentions: &[Mention]) -> Value {
        let chat = ChatRef::Group { chat_id: chat_id.to_owned() };
        self.message(&chat, sender_open_id, "text", &json!({ "text": text }), mentions)
    }

    /// A text message inside a topic (`thread_id`) of a topic group.
    pub fn topic_text(
        &self,
        chat_id: &str,
        thread_id: &str,
        sender_open_id: &str,
        text: &str,
        mentions: &[Mention],
    ) -> Value {
        let chat = ChatRef::Topic { chat_id: chat_id.to_owned(), thread_id: thread_id.to_owned() };
        self.message(&chat, sender_open_id, "text", &json!({ "text": text }), mentions)
    }

    /// A rich-text message. A *received* post has no locale wrapper:
    /// `{"title", "content": [[runs]]}`; see [`text_run`] and [`at_run`].
    pub fn post(
        &self,
        chat: &ChatRef,
        sender_open_id: &str,
        title: &str,
        paragraphs: Vec<Vec<Value>>,
        mentions: &[Mention],
    ) -> Value {
        let content = json!({ "title": title, "content": paragraphs });
        self.message(chat, sender_open_id, "post", &content, mentions)
    }

    /// An image message (`{"image_key": ...}`), which the bot does not read.
    pub fn image(&self, chat: &ChatRef, sender_open_id: &str, image_key: &str) -> Value {
        self.message(chat, sender_open_id, "image", &json!({ "image_key": image_key }), &[])
    }

    /// Any message type with its decoded `content`; the JSON string is made here.
    pub fn message(
        &self,
        chat: &ChatRef,
        sender_open_id: &str,
        message_type: &str,
        content: &Value,
        mentions: &[Mention],
    ) -> Value {
        let now = self.create_time_ms.unwrap_or_else(now_ms);
        let message_id = self.message_id.clone().unwrap_or_else(new_message_id);
        let mut message = json!({
            "message_id": message_id,
            "create_time": now.to_string(),
            "update_time": now.to_string(),
            "chat_id": chat.chat_id(),
            "chat_type": chat.chat_type(),
            "message_type": message_type,
            "content": content.to_string(),
        });
        if let Some(parent) = &self.parent_id {
            message["root_id"] = json!(parent);
            message["parent_id"] = json!(parent);
        }
        if let Some(thread_id) = chat.thread_id() {
            message["thread_id"] = json!(thread_id);
        }
        if !mentions.is_empty() {
            let list: Vec<Value> = mentions.iter().map(|m| m.to_json(&self.tenant_key)).collect();
            message["mentions"] = Value::Array(list);
        }
        let mut header = json!({
            "event_id": self.event_id.clone().unwrap_or_else(|| random_hex(16)),
            "event_type": MESSAGE_RECEIVE_V1,
            "create_time": now.to_string(),
            "app_id": self.app_id,
            "tenant_key": self.tenant_key,
        });
        if let Some(token) = &self.token {
            header["token"] = json!(token);
        }
        json!({
            "schema": "2.0",
            "header": header,
            "event": {
                "sender": {
                    "sender_id": {
                        "union_id": format!("on_{}", hash_hex(sender_open_id)),
                        "user_id": &hash_hex(sender_open_id)[..8],
                        "open_id": sender_open_id,
                    },
                    "sender_type": self.sender_type,
                    "tenant_key": self.tenant_key,
                },
                "message": message,
            }
        })
    }
}

/// A private-chat text event with default options.
pub fn p2p_text(app_id: &str, chat_id: &str, sender_open_id: &str, text: &str) -> Value {
    EventBuilder::new(app_id).p2p_text(chat_id, sender_open_id, text)
}

/// A group text event with default options.
pub fn group_text(app_id: &str, chat_id: &str, sender_open_id: &str, text: &str, mentions: &[Mention]) -> Value {
    EventBuilder::new(app_id).group_text(chat_id, sender_open_id, text, mentions)
}

/// A topic text event with default options.
pub fn topic_text(
    app_id: &str,
    chat_id: &str,
    thread_id: &str,
    sender_open_id: &str,
    text: &str,
    mentions: &[Mention],
) -> Value {
    EventBuilder::new(app_id).topic_text(chat_id, thread_id, sender_open_id, text, mentions)
}

/// A `text` run of a post paragraph.
pub fn text_run(text: &str) -> Value {
    json!({ "tag": "text", "text": text, "style": [] })
}

/// An `at` run of a received post: `user_id` holds the mention placeholder.
pub fn at_run(key: &str, user_name: &str) -> Value {
    json!({ "tag": "at", "user_id": key, "user_name": user_name, "style": [] })
}

/// The challenge Lark sends when the Request URL is saved in the console.
pub fn url_verification(challenge: &str, token: &str) -> Value {
    json!({ "challenge": challenge, "token": token, "type": "url_verification" })
}

/// `event.message.message_id` of a message event.
pub fn message_id_of(event: &Value) -> Option<&str> {
    event.pointer("/event/message/message_id").and_then(Value::as_str)
}

/// `header.event_id` of a schema 2.0 event.
pub fn event_id_of(event: &Value) -> Option<&str> {
    event.pointer("/header/event_id").and_then(Value::as_str)
}

/// A callback as Lark puts it on the wire: the body (wrapped as
/// `{"encrypt": ...}` when the app has an Encrypt Key) and the signature headers
/// (only with a key: the signature is computed over it).
#[derive(Clone, Debug)]
pub struct SignedRequest {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl SignedRequest {
    pub fn new(json_body: &Value, encrypt_key: Option<&EncryptKey>, now_secs: i64) -> Self {
        let plain = json_body.to_string().into_bytes();
        let Some(key) = encrypt_key else {
            return Self { body: plain, headers: Vec::new() };
        };
        let body = json!({ "encrypt": key.encrypt(&plain) }).to_string().into_bytes();
        let timestamp = now_secs.to_string();
        let nonce = random_hex(8);
        let signature = sign(&timestamp, &nonce, key, &body);
        let headers = vec![
            (TIMESTAMP_HEADER.to_owned(), timestamp),
            (NONCE_HEADER.to_owned(), nonce),
            (SIGNATURE_HEADER.to_owned(), signature),
        ];
        Self { body, headers }
    }

    /// Signed with the current time.
    pub fn now(json_body: &Value, encrypt_key: Option<&EncryptKey>) -> Self {
        Self::new(json_body, encrypt_key, now_secs())
    }

    /// POSTs it as Lark does (`Content-Type: application/json; charset=utf-8`).
    pub async fn post_to(&self, client: &reqwest::Client, url: &str) -> reqwest::Result<reqwest::Response> {
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header(reqwest::header::USER_AGENT, "Go-http-client/1.1")
            .body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request.send().await
    }
}

/// A stable pseudo-id derived from another id, so one user always has the same
/// `union_id` across events (and card callbacks).
pub(crate) fn hash_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::lark::signature::{verify, SignedHeaders};
    use secrecy::SecretString;

    fn header<'a>(req: &'a SignedRequest, name: &str) -> &'a str {
        req.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).expect("header present")
    }

    #[test]
    fn group_mention_has_larks_shape() {
        let ev = EventBuilder::new("cli_test").token("tok").group_text(
            "oc_1",
            "ou_user",
            "@_user_1 hello",
            &[Mention::bot("ou_bot")],
        );
        assert_eq!(ev["schema"], "2.0");
        assert_eq!(ev["header"]["event_type"], MESSAGE_RECEIVE_V1);
        assert_eq!(ev["header"]["app_id"], "cli_test");
        assert_eq!(ev["header"]["token"], "tok");
        let msg = &ev["event"]["message"];
        assert_eq!(msg["chat_type"], "group");
        assert!(msg.get("thread_id").is_none());
        assert_eq!(msg["content"], r#"{"text":"@_user_1 hello"}"#);
        assert_eq!(msg["mentions"][0]["key"], "@_user_1");
        assert_eq!(msg["mentions"][0]["id"]["open_id"], "ou_bot");
        assert_eq!(ev["event"]["sender"]["sender_type"], "user");
        assert!(message_id_of(&ev).is_some_and(|id| id.starts_with("om_") && id.len() == 35));
        let other = group_text("cli_test", "oc_1", "ou_user", "x", &[]);
        assert_ne!(message_id_of(&ev), message_id_of(&other));
        assert_ne!(event_id_of(&ev), event_id_of(&other));
    }

    #[test]
    fn topic_post_and_image() {
        let ev = topic_text("cli", "oc_1", "omt_1", "ou_u", "hi", &[]);
        assert_eq!(ev["event"]["message"]["thread_id"], "omt_1");
        let chat = ChatRef::P2p { chat_id: "oc_2".into() };
        let post = EventBuilder::new("cli").post(&chat, "ou_u", "T", vec![vec![text_run("a"), text_run("b")]], &[]);
        let content: Value = serde_json::from_str(post["event"]["message"]["content"].as_str().expect("string"))
            .expect("content is JSON");
        assert_eq!(content["content"][0][1]["text"], "b");
        let img = EventBuilder::new("cli").from_app().image(&chat, "ou_u", "img_1");
        assert_eq!(img["event"]["message"]["message_type"], "image");
        assert_eq!(img["event"]["sender"]["sender_type"], "app");
    }

    #[test]
    fn signed_request_decrypts_and_verifies_with_commons_functions() {
        let key = EncryptKey::new(SecretString::from("sandbox key".to_owned()));
        let ev = p2p_text("cli", "oc_1", "ou_1", "hello");
        let req = SignedRequest::new(&ev, Some(&key), 1_700_000_000);
        let headers = SignedHeaders {
            timestamp: header(&req, TIMESTAMP_HEADER),
            nonce: header(&req, NONCE_HEADER),
            signature: header(&req, SIGNATURE_HEADER),
        };
        assert_eq!(headers.timestamp, "1700000000");
        assert_eq!(verify(headers, &key, &req.body), Ok(()));
        let wrapper: Value = serde_json::from_slice(&req.body).expect("wrapper is JSON");
        let plain = key.decrypt(wrapper["encrypt"].as_str().expect("encrypt field")).expect("decrypts");
        let back: Value = serde_json::from_slice(&plain).expect("event JSON");
        assert_eq!(back, ev);
    }

    #[test]
    fn plain_request_has_no_signature() {
        let req = SignedRequest::new(&url_verification("c", "t"), None, 1);
        assert!(req.headers.is_empty());
        let back: Value = serde_json::from_slice(&req.body).expect("JSON");
        assert_eq!(back["type"], "url_verification");
    }
}
