//! The Lark user of the sandbox: what a person does in Lark's client
//! (writes in a chat, sends an image or a file, opens a chat with the bot)
//! turned into the events Lark pushes to the bridge.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use anyhow::{bail, Context as _};
use common::lark::crypto::EncryptKey;
use secrecy::SecretString;
use serde_json::json;

use super::replies::OpenCard;
use super::{Attachment, Target};
use crate::fake_lark::{SandboxMessage, SandboxRegistration};
use crate::lark_events::{message_id_of, new_message_id, random_hex, ChatRef, EventBuilder, Mention};

/// The bot's display name in mentions (the fake Lark's app name).
const BOT_NAME: &str = "FastGPT bot";

/// A message the user sent: its chat, and how many parts of its reply came.
pub(super) struct SentInfo {
    pub(super) chat_id: String,
    pub(super) parts_seen: usize,
}

/// Why a message cannot be sent as it is, or `None`. Lark sends no empty
/// message in a private chat (a group's bare @mention of the bot is a message,
/// and gets the bot's hint about writing the question with the mention).
pub fn refusal(chat: &ChatRef, text: &str) -> Option<String> {
    (matches!(chat, ChatRef::P2p { .. }) && text.trim().is_empty()).then(|| {
        "nothing to send: Lark sends no empty message in a private chat; write a question \
         (sandbox say \"hello\"), or try a bare @mention of the bot in a group (sandbox say --chat group \"\")"
            .to_owned()
    })
}

/// A Lark user's side of the sandbox: sends messages to the ingress as Lark
/// pushes them, and reads the bot's replies from the fake Lark.
pub struct LarkUser {
    pub(super) http: reqwest::Client,
    pub(super) target: Target,
    key: Option<EncryptKey>,
    /// Every message of the fake Lark before this index has been fetched.
    pub(super) cursor: usize,
    /// Fetched, not looked at yet.
    pub(super) pending: VecDeque<SandboxMessage>,
    /// Messages seen before that changed since (cards growing), not looked at yet.
    pub(super) changes: VecDeque<SandboxMessage>,
    /// The change stamp of the last look.
    pub(super) stamp: u64,
    /// Cards still streaming, by message index.
    pub(super) open: BTreeMap<usize, OpenCard>,
    /// Give a streaming card at once and then its changes ([`Arrival::Update`](super::Arrival::Update)),
    /// rather than once complete.
    pub(super) live_cards: bool,
    pub(super) sent: HashMap<String, SentInfo>,
}

impl LarkUser {
    /// Checks that the fake Lark answers and starts reading its messages from now on.
    pub async fn connect(target: Target) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let key = target.encrypt_key.clone().map(|k| EncryptKey::new(SecretString::from(k)));
        let mut user = Self {
            http,
            target,
            key,
            cursor: 0,
            pending: VecDeque::new(),
            changes: VecDeque::new(),
            stamp: 0,
            open: BTreeMap::new(),
            live_cards: false,
            sent: HashMap::new(),
        };
        user.target.lark = user.target.lark.trim_end_matches('/').to_owned();
        let page = user.fetch(usize::MAX / 2, Duration::ZERO).await.with_context(|| {
            format!("cannot reach the fake Lark at {}: is deploy/run-local (sandbox mode) running?", user.target.lark)
        })?;
        (user.cursor, user.stamp) = (page.next, page.stamp);
        Ok(user)
    }

    /// Live cards: a streaming card is given at once ([`Arrival::Reply`](super::Arrival::Reply) with
    /// `streaming` true) and then each change ([`Arrival::Update`](super::Arrival::Update)); without
    /// (the default), it is given once, when it is complete.
    pub fn set_live_cards(&mut self, live: bool) {
        self.live_cards = live;
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends a text message as `sender_open_id` into `chat` (registered with the
    /// fake Lark first, so replies carry its chat and topic); returns its message_id.
    pub async fn send(&mut self, chat: &ChatRef, sender_open_id: &str, text: &str) -> anyhow::Result<String> {
        if let Some(why) = refusal(chat, text) {
            bail!(why);
        }
        let (text, mentions) = match chat {
            ChatRef::P2p { .. } => (text.to_owned(), vec![]),
            ChatRef::Group { .. } | ChatRef::Topic { .. } => {
                (format!("@_user_1 {text}"), vec![Mention::bot_at(1, &self.target.bot_open_id, BOT_NAME)])
            }
        };
        let content = json!({ "text": text });
        self.send_message(chat, sender_open_id, new_message_id(), "text", &content, &mentions).await
    }

    /// Sends an image or a file as `sender_open_id` into `chat`: uploads its
    /// bytes to the fake Lark under a fresh key of a fresh message, then sends
    /// that `image` or `file` message as [`LarkUser::send`] sends text (an
    /// image or file message carries no @mention, in a group too). Returns
    /// the message_id and the key.
    pub async fn send_attachment(
        &mut self,
        chat: &ChatRef,
        sender_open_id: &str,
        attachment: &Attachment,
    ) -> anyhow::Result<(String, String)> {
        let message_id = new_message_id();
        let key = attachment.new_key();
        let lark = &self.target.lark;
        let kind = attachment.kind.as_str();
        let url = format!("{lark}/_sandbox/resources/{message_id}/{key}?type={kind}");
        let response = self
            .http
            .post(url)
            .timeout(Duration::from_secs(120))
            .body(attachment.bytes.clone())
            .send()
            .await
            .with_context(|| format!("cannot reach the fake Lark at {lark}: is deploy/run-local still running?"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("the fake Lark at {lark} did not take the {kind} ({status}): {}", body.trim());
        }
        let content = attachment.content(&key);
        let message_id = self.send_message(chat, sender_open_id, message_id, kind, &content, &[]).await?;
        Ok((message_id, key))
    }

    /// Sends one message event (`message_id`, `message_type`, decoded
    /// `content`) as Lark pushes it: registered with the fake Lark first, then
    /// to the Request URL, encrypted and signed, or over the long connection
    /// when the channel uses it.
    async fn send_message(
        &mut self,
        chat: &ChatRef,
        sender_open_id: &str,
        message_id: String,
        message_type: &str,
        content: &serde_json::Value,
        mentions: &[Mention],
    ) -> anyhow::Result<String> {
        let mut builder = EventBuilder::new(&self.target.app_id).message_id(message_id);
        if let Some(token) = &self.target.verification_token {
            builder = builder.token(token);
        }
        let event = builder.message(chat, sender_open_id, message_type, content, mentions);
        let message_id = message_id_of(&event).context("the built event has a message_id")?.to_owned();

        let registration = SandboxRegistration {
            message_id: message_id.clone(),
            chat_id: chat.chat_id().to_owned(),
            thread_id: chat.thread_id().map(str::to_owned),
        };
        let lark = &self.target.lark;
        self.http
            .post(format!("{lark}/_sandbox/register"))
            .json(&registration)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot reach the fake Lark at {lark}: is deploy/run-local still running?"))?;

        self.post_event(&event).await?;
        self.sent.insert(message_id.clone(), SentInfo { chat_id: chat.chat_id().to_owned(), parts_seen: 0 });
        Ok(message_id)
    }

    /// The bot joins `chat` as Lark says it: a user (`user_open_id`) opens
    /// the private chat (`im.chat.access_event.bot_p2p_chat_entered_v1`), or
    /// adds the bot to the group (`im.chat.member.bot.added_v1`). Returns a
    /// key to wait on for what the bot says in the chat ([`LarkUser::wait_for`]).
    pub async fn enter(&mut self, chat: &ChatRef, user_open_id: &str) -> anyhow::Result<String> {
        let operator = json!({ "union_id": "on_sandbox", "user_id": "sandbox", "open_id": user_open_id });
        let (event_type, body) = match chat {
            ChatRef::P2p { chat_id } => (
                "im.chat.access_event.bot_p2p_chat_entered_v1",
                json!({ "chat_id": chat_id, "operator_id": operator, "last_message_id": "", "last_message_create_time": "0" }),
            ),
            ChatRef::Group { chat_id } | ChatRef::Topic { chat_id, .. } => (
                "im.chat.member.bot.added_v1",
                json!({ "chat_id": chat_id, "operator_id": operator, "external": false, "operator_tenant_key": "sandbox", "name": "Sandbox group" }),
            ),
        };
        let event_id = random_hex(16);
        let event = json!({
            "schema": "2.0",
            "header": {
                "event_id": event_id,
                "event_type": event_type,
                "create_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()).to_string(),
                "token": self.target.verification_token.clone().unwrap_or_default(),
                "app_id": self.target.app_id,
                "tenant_key": "sandbox"
            },
            "event": body
        });
        self.post_event(&event).await?;
        self.sent.insert(event_id.clone(), SentInfo { chat_id: chat.chat_id().to_owned(), parts_seen: 0 });
        Ok(event_id)
    }

    /// Posts `event` to the Request URL, encrypted and signed, or has the
    /// fake Lark push it over the long connection when the channel uses it.
    async fn post_event(&self, event: &serde_json::Value) -> anyhow::Result<()> {
        let ingress = &self.target.ingress;
        let response = crate::lark_events::SignedRequest::now(event, self.key.as_ref())
            .post_to(&self.http, ingress)
            .await
            .with_context(|| format!("cannot reach the ingress at {ingress}: is deploy/run-local running?"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            if !(status == 403 && body.contains("long_connection_only")) {
                bail!("the ingress at {ingress} answered {status}: {}", body.trim());
            }
            // The channel receives its events over the long connection: the
            // fake Lark pushes the event there, as Lark would.
            self.push_over_long_connection(event).await?;
        }
        Ok(())
    }

    /// Has the fake Lark push `event` over the channel's long connection.
    async fn push_over_long_connection(&self, event: &serde_json::Value) -> anyhow::Result<()> {
        let lark = &self.target.lark;
        let path = crate::fake_lark::long_connection::SANDBOX_PUSH_PATH;
        let response = self
            .http
            .post(format!("{lark}{path}"))
            .json(event)
            .send()
            .await
            .with_context(|| format!("cannot reach the fake Lark at {lark}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() || body["code"] != 200 {
            bail!("the long connection did not take the message ({status}): {body}");
        }
        Ok(())
    }
}
