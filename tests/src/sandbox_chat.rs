//! The sandbox's terminal chat: a person talks to the bot as a Lark user.
//!
//! [`run`] reads lines (from a pipe or a test's buffer; [`run_with`] from any
//! [`LineSource`], such as the line editor `sandbox chat` uses on a terminal)
//! and plays a Lark user against a running bridge: each line becomes an
//! `im.message.receive_v1` event, encrypted and signed as Lark does, posted to
//! the ingress; the bot's replies are read back from the fake Lark
//! (`GET /_sandbox/messages`, held open until a message arrives) and printed
//! the moment each arrives, as a Lark user would see them: text as text, a
//! Markdown card rendered for a terminal ([`render_markdown`]), the parts of
//! a split answer in order (`(part 2)` on), and the chat or topic each one
//! landed in. Commands switch between a private chat, a group (messages
//! @mention the bot; `/as NAME` speaks as another member) and a topic of a
//! topic group (shared by everyone in it). The chat starts nothing and stops
//! nothing: it talks to what `deploy/run-local` (or a test's harness) runs.
//!
//! A streamed answer is a CardKit card that grows while FastGPT writes. On a
//! terminal (a line editor) the chat shows it growing: the card's header and
//! the text so far, then each newly added piece as it arrives, and `(card
//! complete)` when streaming closes (a text that is rewritten rather than
//! extended is printed again whole). Elsewhere (a pipe, a test, `sandbox
//! say`) a streaming card is printed once, complete, as any card.
//!
//! A question card (a FastGPT user-select or form node, as the bridge shows
//! it) is answered as in Lark: its choices are numbered under it, and typing
//! the number (or `/choose N`) clicks that button; a form is filled in field
//! by field, then submitted. The click goes to the bridge as Lark's
//! `card.action.trigger` callback, the way the chat's messages go (the
//! Request URL, or the long connection); the chat shows the toast the bridge
//! answered, the card as it is then, and the replies that follow: see [`cards`].
//!
//! `/image PATH` and `/file PATH` send an image or a file from the local
//! disk as a Lark user does: the bytes go to the fake Lark as the resource of
//! a new message, and the message to the bridge as any other (see
//! [`attachments`]); the fake FastGPT's echo then says what reached it.
//!
//! [`LarkUser`] is the part that sends one message and waits for its replies;
//! `sandbox say` uses it on its own.

pub mod attachments;
pub mod cards;
mod line_editor;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use common::lark::crypto::EncryptKey;
use secrecy::SecretString;
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

use crate::fake_lark::{content_text, SandboxMessage, SandboxPage, SandboxRegistration, Via};
use crate::lark_events::{message_id_of, new_message_id, random_hex, ChatRef, EventBuilder, Mention};
pub use attachments::{Attachment, AttachmentKind};
pub use line_editor::LineEditor;

/// The sandbox channel's Request URL on the ingress `deploy/run-local` starts.
pub const DEFAULT_INGRESS: &str = "http://127.0.0.1:8080/lark/sandbox/events";
/// The fake Lark `sandbox serve` runs.
pub const DEFAULT_LARK: &str = "http://127.0.0.1:18080";
/// The sandbox channel's Encrypt Key (`.sandbox/config.toml`).
pub const DEFAULT_ENCRYPT_KEY: &str = "sandbox-encrypt-key";
/// The sandbox channel's Verification Token.
pub const DEFAULT_VERIFICATION_TOKEN: &str = "sandbox-token";
pub const DEFAULT_APP_ID: &str = "cli_sandbox";
pub const DEFAULT_BOT_OPEN_ID: &str = "ou_sandbox_bot";
/// The bot's display name in mentions (the fake Lark's app name).
const BOT_NAME: &str = "FastGPT bot";
/// The person at the keyboard.
const DEFAULT_SPEAKER: &str = "you";
const GROUP_CHAT_ID: &str = "oc_sandbox_group";
const TOPIC_GROUP_CHAT_ID: &str = "oc_sandbox_topics";
/// The longest one look at the fake Lark waits for a message.
const LONG_POLL: Duration = Duration::from_secs(1);

/// Where the bridge runs and how its channel is set up.
#[derive(Clone, Debug)]
pub struct Target {
    /// The channel's Request URL (`http://HOST:PORT/lark/{channel}/events`).
    pub ingress: String,
    /// The fake Lark's base URL: the channel's `lark_base_url`.
    pub lark: String,
    /// The channel's Encrypt Key; `None` sends plain JSON.
    pub encrypt_key: Option<String>,
    /// The channel's Verification Token, put in `header.token`.
    pub verification_token: Option<String>,
    pub app_id: String,
    pub bot_open_id: String,
}

impl Default for Target {
    /// The sandbox `deploy/run-local` starts.
    fn default() -> Self {
        Self {
            ingress: DEFAULT_INGRESS.to_owned(),
            lark: DEFAULT_LARK.to_owned(),
            encrypt_key: Some(DEFAULT_ENCRYPT_KEY.to_owned()),
            verification_token: Some(DEFAULT_VERIFICATION_TOKEN.to_owned()),
            app_id: DEFAULT_APP_ID.to_owned(),
            bot_open_id: DEFAULT_BOT_OPEN_ID.to_owned(),
        }
    }
}

/// How long to wait for a reply.
///
/// A text reply is always whole (the bridge sends an answer as text only when
/// it fits in one message), so the wait ends soon after it arrives: only a
/// question card may follow it (an answer that ends with a FastGPT question
/// is its text, then the card), and the chat waits [`TEXT_GRACE`] (or
/// `quiet`, when shorter) for one. A card may be the first of several parts,
/// and nothing in it says how many: after a card, the chat waits `quiet` for
/// the next part (the bridge sends the parts of one answer about 200 ms
/// apart) before it takes the reply as complete. Every part is printed when
/// it arrives, not after that wait.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Give up when no reply came within this.
    pub timeout: Duration,
    /// After a card arrived, wait this long for another part of the same answer.
    pub quiet: Duration,
    /// The least time between two looks at a fake Lark that answers at once
    /// (one that holds the request until a message arrives is asked again at once).
    pub poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), quiet: Duration::from_secs(1), poll: Duration::from_millis(200) }
    }
}

/// How the chat behaves in its terminal.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChatOptions {
    pub timing: Timing,
    /// Print each line read after its prompt (input from a pipe, not echoed by a terminal).
    pub echo_input: bool,
    /// ANSI bold and colours (a terminal); plain text otherwise.
    pub color: bool,
}

/// One message of the bot, as it arrives.
#[derive(Clone, Debug)]
pub enum Arrival {
    /// Part `part` (from 1) of the reply to the message being waited for.
    Reply { message: SandboxMessage, part: usize },
    /// Part `part` of the reply to the earlier message `to`, which came after
    /// that message's wait ended.
    Late { message: SandboxMessage, part: usize, to: String },
    /// With live cards ([`LarkUser::set_live_cards`]): part `part`, a card
    /// already given as a `Reply` while it streamed, changed; `previous` is the
    /// text it had. `message.streaming` is false once it is complete.
    Update { message: SandboxMessage, part: usize, previous: String },
}

/// What the bot answered to one message.
#[derive(Clone, Debug, Default)]
pub struct Replies {
    /// The replies to the message, in the order Lark received them (the parts of a split answer).
    pub replies: Vec<SandboxMessage>,
    /// Replies to earlier messages that came in meanwhile (after their own wait ended).
    pub late: Vec<SandboxMessage>,
}

/// The wait for the replies to one message: see [`LarkUser::next_arrival`].
#[derive(Debug)]
pub struct ReplyWait {
    message_id: String,
    chat_id: String,
    deadline: Instant,
    /// The wait for a reply; a streaming card's every change gives it anew.
    timeout: Duration,
    quiet: Duration,
    poll: Duration,
    /// After a card: the reply is complete unless another part comes by then.
    more_until: Option<Instant>,
    done: bool,
    /// Replies to the message seen so far.
    pub parts: usize,
}

impl ReplyWait {
    /// True once the reply is complete (or the wait gave up).
    pub fn done(&self) -> bool {
        self.done
    }
}

struct SentInfo {
    chat_id: String,
    parts_seen: usize,
}

/// A card seen while it was still streaming.
struct OpenCard {
    /// As last seen.
    message: SandboxMessage,
    /// Its part number in the reply it belongs to.
    part: usize,
    /// Given to the caller already (live cards): its changes come as updates.
    shown: bool,
}

/// Is `m` a reply to the message `wait` waits for?
fn belongs(m: &SandboxMessage, wait: &ReplyWait) -> bool {
    match &m.via {
        Via::Reply { message_id } => *message_id == wait.message_id,
        Via::Chat { receive_id } => *receive_id == wait.chat_id,
    }
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

/// Does this message end its reply (but for a question card)? The bridge
/// sends an answer as text only when the whole answer fits in one message; a
/// card may have more parts.
fn ends_reply(m: &SandboxMessage) -> bool {
    m.msg_type == "text"
}

/// After a text reply, how long the chat waits for a question card that may
/// follow it (at most `quiet`).
pub const TEXT_GRACE: Duration = Duration::from_millis(800);

/// A Lark user's side of the sandbox: sends messages to the ingress as Lark
/// pushes them, and reads the bot's replies from the fake Lark.
pub struct LarkUser {
    http: reqwest::Client,
    target: Target,
    key: Option<EncryptKey>,
    /// Every message of the fake Lark before this index has been fetched.
    cursor: usize,
    /// Fetched, not looked at yet.
    pending: VecDeque<SandboxMessage>,
    /// Messages seen before that changed since (cards growing), not looked at yet.
    changes: VecDeque<SandboxMessage>,
    /// The change stamp of the last look.
    stamp: u64,
    /// Cards still streaming, by message index.
    open: BTreeMap<usize, OpenCard>,
    /// Give a streaming card at once and then its changes ([`Arrival::Update`]),
    /// rather than once complete.
    live_cards: bool,
    sent: HashMap<String, SentInfo>,
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

    /// Live cards: a streaming card is given at once ([`Arrival::Reply`] with
    /// `streaming` true) and then each change ([`Arrival::Update`]); without
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

    /// Starts waiting for the replies to `message_id`; [`LarkUser::next_arrival`] goes on.
    pub fn wait_for(&self, message_id: &str, timing: Timing) -> ReplyWait {
        ReplyWait {
            message_id: message_id.to_owned(),
            chat_id: self.sent.get(message_id).map(|s| s.chat_id.clone()).unwrap_or_default(),
            deadline: Instant::now() + timing.timeout,
            timeout: timing.timeout,
            quiet: timing.quiet,
            poll: timing.poll,
            more_until: None,
            done: false,
            parts: 0,
        }
    }

    /// The next message of the bot for this wait, as soon as the fake Lark
    /// has it: a part of the reply, or a late reply to an earlier message.
    /// `None` once the reply is complete: [`TEXT_GRACE`] (at most `quiet`)
    /// after a text, `quiet` after the last card; or at the timeout when none came. A card that is still
    /// streaming keeps the wait open (each change gives it the whole timeout
    /// again) and is given once complete, or at once and then as updates with
    /// live cards; a card still streaming at the timeout is given as it is.
    pub async fn next_arrival(&mut self, wait: &mut ReplyWait) -> anyhow::Result<Option<Arrival>> {
        loop {
            if wait.done {
                return Ok(None);
            }
            if let Some(arrival) = self.take_arrival(Some(wait)) {
                return Ok(Some(arrival));
            }
            let streaming = self.open.values().any(|o| belongs(&o.message, wait));
            let until = match wait.more_until {
                Some(more) if !streaming => more.min(wait.deadline),
                _ => wait.deadline,
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Cards still streaming at the timeout: shown as they are, followed no further.
                let open = self.open.iter().find(|(_, o)| belongs(&o.message, wait)).map(|(index, _)| *index);
                if let Some(open) = open.and_then(|index| self.open.remove(&index)) {
                    if !open.shown {
                        return Ok(Some(Arrival::Reply { message: open.message, part: open.part }));
                    }
                    continue;
                }
                wait.done = true;
                return Ok(None);
            }
            let asked = Instant::now();
            if self.page(left.min(LONG_POLL)).await? == 0 && asked.elapsed() < wait.poll {
                // A fake Lark that does not hold requests: do not ask in a tight loop.
                tokio::time::sleep(wait.poll.min(left)).await;
            }
        }
    }

    /// Waits for the replies to `message_id` and returns them all at once:
    /// see [`LarkUser::next_arrival`] for when the wait ends.
    pub async fn wait_for_replies(&mut self, message_id: &str, timing: Timing) -> anyhow::Result<Replies> {
        let mut wait = self.wait_for(message_id, timing);
        let mut replies = Replies::default();
        while let Some(arrival) = self.next_arrival(&mut wait).await? {
            match arrival {
                Arrival::Reply { message, .. } => replies.replies.push(message),
                Arrival::Late { message, .. } => replies.late.push(message),
                Arrival::Update { message, .. } => {
                    if let Some(reply) = replies.replies.iter_mut().rev().find(|r| r.index == message.index) {
                        *reply = message;
                    }
                }
            }
        }
        Ok(replies)
    }

    /// Replies to earlier messages that arrived since the last look (a card
    /// once it is complete).
    pub async fn late_replies(&mut self) -> anyhow::Result<Vec<Arrival>> {
        self.page(Duration::ZERO).await?;
        let mut arrivals = Vec::new();
        while let Some(arrival) = self.take_arrival(None) {
            arrivals.push(arrival);
        }
        Ok(arrivals)
    }

    /// The next arrival among what was fetched, for `wait` (or, without one,
    /// late replies only); `None` when what was fetched gives none.
    fn take_arrival(&mut self, mut wait: Option<&mut ReplyWait>) -> Option<Arrival> {
        while let Some(m) = self.changes.pop_front() {
            let Some(open) = self.open.get_mut(&m.index) else { continue };
            let previous = std::mem::replace(&mut open.message, m.clone());
            let (part, shown, complete) = (open.part, open.shown, !m.streaming);
            if complete {
                self.open.remove(&m.index);
            }
            if let Some(wait) = wait.as_deref_mut().filter(|w| belongs(&m, w)) {
                wait.deadline = wait.deadline.max(Instant::now() + wait.timeout);
                if complete && !self.open.values().any(|o| belongs(&o.message, wait)) {
                    wait.more_until = Some(Instant::now() + wait.quiet);
                }
                if complete && !shown {
                    return Some(Arrival::Reply { message: m, part });
                }
            } else if complete && !shown {
                if let Via::Reply { message_id } = &m.via {
                    let to = message_id.clone();
                    return Some(Arrival::Late { message: m, part, to });
                }
            }
            if shown && (complete || m.text != previous.text) {
                return Some(Arrival::Update { message: m, part, previous: previous.text });
            }
        }
        while let Some(m) = self.pending.pop_front() {
            if let Some(wait) = wait.as_deref_mut().filter(|w| belongs(&m, w)) {
                wait.parts += 1;
                let part = self.count_part(&wait.message_id);
                if m.streaming {
                    wait.more_until = None;
                    let shown = self.live_cards;
                    self.open.insert(m.index, OpenCard { message: m.clone(), part, shown });
                    if shown {
                        return Some(Arrival::Reply { message: m, part });
                    }
                    continue;
                }
                let more = if ends_reply(&m) { wait.quiet.min(TEXT_GRACE) } else { wait.quiet };
                if more.is_zero() {
                    wait.done = true;
                } else {
                    wait.more_until = Some(Instant::now() + more);
                }
                return Some(Arrival::Reply { message: m, part });
            }
            // A late reply, when it answers a message this user sent.
            let Via::Reply { message_id } = &m.via else { continue };
            if !self.sent.contains_key(message_id) {
                continue;
            }
            let to = message_id.clone();
            let part = self.count_part(&to);
            if m.streaming {
                self.open.insert(m.index, OpenCard { message: m, part, shown: false });
                continue;
            }
            return Some(Arrival::Late { message: m, part, to });
        }
        None
    }

    /// Counts one more part of the reply to `message_id`; its number.
    fn count_part(&mut self, message_id: &str) -> usize {
        self.sent.get_mut(message_id).map_or(1, |s| {
            s.parts_seen += 1;
            s.parts_seen
        })
    }

    /// Fetches what came since the last look into `pending`, waiting up to
    /// `wait` for something to come; how many came.
    async fn page(&mut self, wait: Duration) -> anyhow::Result<usize> {
        let page = self.fetch(self.cursor, wait).await.with_context(|| {
            format!("lost the fake Lark at {}: is deploy/run-local still running?", self.target.lark)
        })?;
        self.cursor = page.next;
        self.stamp = self.stamp.max(page.stamp);
        let count = page.messages.len() + page.changed.len();
        self.pending.extend(page.messages);
        self.changes.extend(page.changed);
        Ok(count)
    }

    async fn fetch(&self, after: usize, wait: Duration) -> reqwest::Result<SandboxPage> {
        let (lark, wait, stamp) = (&self.target.lark, wait.as_millis(), self.stamp);
        let url = format!("{lark}/_sandbox/messages?after={after}&wait_ms={wait}&changes_since={stamp}");
        self.http.get(url).send().await?.error_for_status()?.json().await
    }
}

/// Where the chat's lines come from: a pipe or a test's buffer
/// ([`PipeInput`]), or a line editor on a terminal ([`LineEditor`]).
pub trait LineSource {
    /// The next line (a paste into a line editor may hold several), or `None`
    /// at the end of the input. Must be cancel-safe: the chat drops it to
    /// show late replies and asks again.
    fn next_line(&mut self, prompt: &Prompt) -> impl Future<Output = anyhow::Result<Option<String>>>;

    /// True when the source shows the prompt and what is typed itself (a terminal).
    fn is_terminal(&self) -> bool;

    /// Prints `text` above the line being edited (late replies while the
    /// person types); false when the source cannot, and the chat prints it.
    fn print_above(&mut self, text: &str) -> bool {
        let _ = text;
        false
    }
}

/// The prompt, plain and with ANSI styles (the same width).
#[derive(Clone, Debug)]
pub struct Prompt {
    pub plain: String,
    pub styled: String,
}

/// Lines from a pipe or a buffer, whole however long.
pub struct PipeInput<R> {
    lines: tokio::io::Lines<R>,
}

impl<R: AsyncBufRead + Unpin> PipeInput<R> {
    pub fn new(input: R) -> Self {
        Self { lines: input.lines() }
    }
}

impl<R: AsyncBufRead + Unpin> LineSource for PipeInput<R> {
    async fn next_line(&mut self, _prompt: &Prompt) -> anyhow::Result<Option<String>> {
        self.lines.next_line().await.context("cannot read the input")
    }

    fn is_terminal(&self) -> bool {
        false
    }
}

/// Where the person at the keyboard is talking.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    P2p,
    Group,
    Topic { thread_id: String },
}

struct Session<'w, W: Write> {
    user: LarkUser,
    options: ChatOptions,
    out: &'w mut W,
    place: Place,
    speaker: String,
    /// The topic `/topic` returns to, once one was started.
    topic: Option<String>,
    /// The question each message asked, to label late replies.
    asked: HashMap<String, String>,
    /// Show streaming cards growing (on a terminal).
    live: bool,
    /// The bot's question cards: the one to answer, a form being filled in.
    cards: cards::Cards,
}

/// Runs the chat on lines from a pipe or a buffer until `/quit` or the end of
/// `input`, printing to `out`: [`run_with`] a [`PipeInput`].
pub async fn run<R, W>(target: Target, options: ChatOptions, input: R, out: &mut W) -> anyhow::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    run_with(target, options, PipeInput::new(input), out).await
}

/// Runs the chat until `/quit` or the end of the input, printing to `out`.
/// Fails only when the fake Lark cannot be reached at the start, or the input
/// or output fails; a message that cannot be delivered, or gets no reply, is
/// reported and the chat goes on.
pub async fn run_with<S, W>(target: Target, options: ChatOptions, mut input: S, out: &mut W) -> anyhow::Result<()>
where
    S: LineSource,
    W: Write,
{
    let user = LarkUser::connect(target).await?;
    let mut session = Session {
        user,
        options,
        out,
        place: Place::P2p,
        speaker: DEFAULT_SPEAKER.to_owned(),
        topic: None,
        asked: HashMap::new(),
        live: false,
        cards: cards::Cards::default(),
    };
    let terminal = input.is_terminal();
    session.live = terminal;
    session.user.set_live_cards(terminal);
    session.banner(terminal)?;
    let echo = session.options.echo_input && !terminal;
    loop {
        let prompt = session.prompt();
        if !echo && !terminal {
            write!(session.out, "{}", prompt.styled)?;
            session.out.flush()?;
        }
        let line = loop {
            tokio::select! {
                line = input.next_line(&prompt) => break line?,
                () = tokio::time::sleep(Duration::from_secs(1)) => session.show_late_replies(&mut input).await?,
            }
        };
        let Some(line) = line else {
            // A line editor has moved to a new line itself.
            if !echo && !terminal {
                writeln!(session.out)?;
            }
            break;
        };
        if echo {
            writeln!(session.out, "{}{line}", prompt.styled)?;
        }
        if !session.handle(line.trim()).await? {
            break;
        }
    }
    writeln!(session.out, "bye")?;
    session.out.flush()?;
    Ok(())
}

const HELP: &str = "\
Commands:
  /p2p          your private chat with the bot (where the chat starts)
  /group        an ordinary group: your messages @mention the bot; each member
                has their own conversation with it
  /topic        a topic of a topic group, one conversation shared by everyone in
                it; /topic new starts another topic
  /as NAME      speak as NAME: another member of the group or topic (or, in
                the private chat, NAME's own private chat with the bot)
  /choose N     click choice N of the bot's last question card (N alone does too)
  /form         fill in the bot's last form card again (/cancel leaves a form)
  /welcome      the bot joins this chat (private chat opened, or added to the
                group): the FastGPT app's welcome text, once per chat
  /rate good    click 👍 on the bot's last answer (/rate bad: 👎); the Sources
                panel under an answer lists what FastGPT quoted
  /image PATH   send the image at PATH (a local file) as an image message
  /file PATH    send the file at PATH (PDF, Word, text...) as a file message;
                both upload it to the fake Lark first (at most 100 MB, Lark's
                limit); in a group they carry no @mention, as in Lark
  /help         this list
  /quit         leave (end of input, Ctrl-D, too)
Anything else is sent as a message. Reset (or /reset) starts a new conversation.
A form card is filled in field by field: an empty line skips an optional field.
The sandbox's fake FastGPT answers hints in a question: select: (a choice of
products), form: (a form), select-nested: / form-loop: (the same node in a child
app or a loop), markdown, stream:40x100ms (40 deltas, 100 ms apart),
stream-long:20000 (a long answer), sources (an answer quoting a knowledge
base, with citations). To images and files it answers with what it
received: \"Received: image image/png, 48213 bytes\".";

/// How long `/welcome` waits for the welcome.
const WELCOME_WAIT: Duration = Duration::from_secs(5);

/// Said once on a terminal, under the banner.
const EDITING: &str = "Up and Down recall earlier lines; a paste is sent whole when you press Enter.";

impl<W: Write> Session<'_, W> {
    fn banner(&mut self, terminal: bool) -> anyhow::Result<()> {
        let t = self.user.target();
        writeln!(
            self.out,
            "Sandbox chat: you are a Lark user talking to the bot of app {} ({}).",
            t.app_id, t.ingress
        )?;
        writeln!(self.out, "Private chat with the bot. /help lists the commands; /quit or Ctrl-D leaves.")?;
        if terminal {
            self.note(EDITING)?;
        }
        self.out.flush()?;
        Ok(())
    }

    fn prompt(&self) -> Prompt {
        let who = self.cards.field_prompt().unwrap_or_else(|| self.speaker.clone());
        let plain = format!("[{}] {who}> ", self.place_label());
        let styled = if self.options.color { format!("\x1b[1m{plain}\x1b[22m") } else { plain.clone() };
        Prompt { plain, styled }
    }

    fn place_label(&self) -> String {
        match &self.place {
            Place::P2p => "private".to_owned(),
            Place::Group => "group".to_owned(),
            Place::Topic { thread_id } => format!("topic {thread_id}"),
        }
    }

    fn chat(&self) -> ChatRef {
        match &self.place {
            Place::P2p => ChatRef::P2p { chat_id: format!("oc_sandbox_p2p_{}", self.speaker) },
            Place::Group => ChatRef::Group { chat_id: GROUP_CHAT_ID.to_owned() },
            Place::Topic { thread_id } => {
                ChatRef::Topic { chat_id: TOPIC_GROUP_CHAT_ID.to_owned(), thread_id: thread_id.clone() }
            }
        }
    }

    fn note(&mut self, text: &str) -> anyhow::Result<()> {
        if self.options.color {
            writeln!(self.out, "\x1b[2m{text}\x1b[22m")?;
        } else {
            writeln!(self.out, "{text}")?;
        }
        Ok(())
    }

    /// Handles one line; false when the chat ends.
    async fn handle(&mut self, line: &str) -> anyhow::Result<bool> {
        let (command, arg) = line.split_once(char::is_whitespace).map_or((line, ""), |(c, a)| (c, a.trim()));
        if self.cards.filling() && !matches!(command, "/quit" | "/exit" | "/help") {
            self.fill(line).await?;
            self.out.flush()?;
            return Ok(true);
        }
        match command {
            "/choose" => self.choose(arg).await?,
            "/form" => self.fill_again()?,
            "/rate" => self.rate(arg).await?,
            "/welcome" => self.welcome().await?,
            _ if self.cards.is_choice(line) => self.choose(line).await?,
            "" => {}
            "/quit" | "/exit" => return Ok(false),
            "/help" => writeln!(self.out, "{HELP}")?,
            "/p2p" => {
                self.place = Place::P2p;
                self.note(&format!("Private chat between {} and the bot.", self.speaker))?;
            }
            "/group" => {
                self.place = Place::Group;
                self.note(&format!(
                    "Group {GROUP_CHAT_ID}: messages @mention the bot; you speak as {}, /as NAME changes that.",
                    self.speaker
                ))?;
            }
            "/topic" => {
                let thread_id = match (&self.topic, arg) {
                    (Some(current), "") => current.clone(),
                    (_, "" | "new") => format!("omt_{}", random_hex(8)),
                    _ => {
                        self.note("Usage: /topic (the current topic) or /topic new (another one).")?;
                        return Ok(true);
                    }
                };
                let fresh = self.topic.as_ref() != Some(&thread_id);
                self.topic = Some(thread_id.clone());
                self.place = Place::Topic { thread_id: thread_id.clone() };
                let what = if fresh { "New topic" } else { "Topic" };
                self.note(&format!(
                    "{what} {thread_id} in topic group {TOPIC_GROUP_CHAT_ID}, shared by everyone in it; \
                     /topic new starts another."
                ))?;
            }
            "/as" => {
                let name = arg.to_lowercase();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    self.note(&format!("Usage: /as NAME (letters, digits, - and _). You speak as {}.", self.speaker))?;
                } else {
                    self.speaker = name;
                    let who = match self.place {
                        Place::P2p => "in their own private chat with the bot",
                        Place::Group => "another member of the group",
                        Place::Topic { .. } => "another member of the topic group",
                    };
                    self.note(&format!("You now speak as {} ({who}).", self.speaker))?;
                }
            }
            "/image" => self.send_attachment(AttachmentKind::Image, arg).await?,
            "/file" => self.send_attachment(AttachmentKind::File, arg).await?,
            _ => self.say(line).await?,
        }
        self.out.flush()?;
        Ok(true)
    }

    /// Sends `text` and prints each reply the moment it arrives, until the
    /// reply is complete (see [`Timing`]).
    /// `/welcome`: the bot joins the current chat as Lark tells it (the
    /// private chat opened, or the bot added to the group); the FastGPT
    /// app's welcome text comes once per chat.
    async fn welcome(&mut self) -> anyhow::Result<()> {
        let chat = self.chat();
        let user = format!("ou_sandbox_{}", self.speaker);
        let key = match self.user.enter(&chat, &user).await {
            Ok(key) => key,
            Err(e) => return self.note(&format!("not sent: {e:#}")),
        };
        let timing = self.options.timing;
        self.options.timing.timeout = WELCOME_WAIT.min(timing.timeout);
        let parts = self.show_replies(&key).await;
        self.options.timing = timing;
        if parts? == 0 {
            self.note("No welcome: this chat was welcomed before, or the FastGPT app has no welcome text.")?;
        }
        Ok(())
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        let chat = self.chat();
        let sender = format!("ou_sandbox_{}", self.speaker);
        let message_id = match self.user.send(&chat, &sender, text).await {
            Ok(id) => id,
            Err(e) => return self.note(&format!("not sent: {e:#}")),
        };
        self.asked.insert(message_id.clone(), text.to_owned());
        self.await_replies(&message_id).await
    }

    /// `/image PATH` or `/file PATH`: reads the file (refused, with the
    /// reason, before anything is uploaded when Lark would not send it),
    /// uploads it to the fake Lark and sends its message; then the replies,
    /// as for text.
    async fn send_attachment(&mut self, kind: AttachmentKind, path: &str) -> anyhow::Result<()> {
        let what = kind.as_str();
        if path.is_empty() {
            let usage = match kind {
                AttachmentKind::Image => {
                    "Usage: /image PATH: sends the image at PATH (PNG, JPEG...) as an image message."
                }
                AttachmentKind::File => {
                    "Usage: /file PATH: sends the file at PATH (PDF, Word, text...) as a file message."
                }
            };
            return self.note(usage);
        }
        let attachment = match Attachment::read(kind, path).await {
            Ok(a) => a,
            Err(e) => return self.note(&format!("not sent: {e:#}")),
        };
        let chat = self.chat();
        let sender = format!("ou_sandbox_{}", self.speaker);
        let (message_id, key) = match self.user.send_attachment(&chat, &sender, &attachment).await {
            Ok(sent) => sent,
            Err(e) => return self.note(&format!("not sent: {e:#}")),
        };
        let key_name = if kind == AttachmentKind::Image { "image_key" } else { "file_key" };
        self.note(&format!("({}, sent with {key_name} {key})", attachment.describe()))?;
        self.out.flush()?;
        self.asked.insert(message_id.clone(), format!("[{what} {}]", attachment.name));
        self.await_replies(&message_id).await
    }

    /// Prints the replies to `message_id` as they arrive; says where to look when none came.
    async fn await_replies(&mut self, message_id: &str) -> anyhow::Result<()> {
        let parts = self.show_replies(message_id).await?;
        if parts == 0 {
            let secs = self.options.timing.timeout.as_secs_f64();
            return self.note(&format!(
                "no reply within {secs} s: check .sandbox/logs/*.log (ingress, relay, responder); \
                 is deploy/run-local running?"
            ));
        }
        Ok(())
    }

    /// Prints each reply to `message_id` the moment it arrives, until the
    /// reply is complete (see [`Timing`]), then offers the question card it
    /// ended with, if any; how many replies came.
    async fn show_replies(&mut self, message_id: &str) -> anyhow::Result<usize> {
        let mut wait = self.user.wait_for(message_id, self.options.timing);
        // A growing card leaves its last line open for what comes next.
        let mut mid_line = false;
        loop {
            let arrival = match self.user.next_arrival(&mut wait).await {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(e) => {
                    if mid_line {
                        writeln!(self.out)?;
                    }
                    self.note(&format!("{e:#}"))?;
                    return Ok(wait.parts.max(1));
                }
            };
            self.cards.seen(&arrival);
            let shown = self.show(&arrival);
            self.out.write_all(shown.as_bytes())?;
            self.out.flush()?;
            if !shown.is_empty() {
                mid_line = !shown.ends_with('\n');
            }
        }
        if mid_line {
            writeln!(self.out)?;
        }
        let offer = self.offer();
        self.out.write_all(offer.as_bytes())?;
        Ok(wait.parts)
    }

    /// Late replies that came while the person is idle: above the line being
    /// edited on a terminal, else on their own lines and the prompt again.
    async fn show_late_replies<S: LineSource>(&mut self, input: &mut S) -> anyhow::Result<()> {
        let Ok(late) = self.user.late_replies().await else { return Ok(()) };
        if late.is_empty() {
            return Ok(());
        }
        late.iter().for_each(|a| self.cards.seen(a));
        let mut shown: String = late.iter().map(|a| self.show(a)).collect();
        shown.push_str(&self.offer());
        if input.print_above(&shown) {
            return Ok(());
        }
        let echo = self.options.echo_input;
        if !echo {
            writeln!(self.out)?;
        }
        self.out.write_all(shown.as_bytes())?;
        if !echo {
            write!(self.out, "{}", self.prompt().styled)?;
        }
        self.out.flush()?;
        Ok(())
    }

    /// One message of the bot, labelled: a part of the reply from the second
    /// on (the first may turn out to be the whole reply), or a late reply.
    fn show(&self, arrival: &Arrival) -> String {
        match arrival {
            Arrival::Reply { message, part } => {
                let label = (*part > 1).then(|| format!("part {part}"));
                if message.streaming && self.live {
                    return self.render_live_start(message, label);
                }
                self.render_reply(message, label)
            }
            Arrival::Late { message, part, to } => {
                let question = self.asked.get(to).map(String::as_str).unwrap_or_default();
                let label = format!("late reply to \"{}\", part {part}", shorten(question, 40));
                self.render_reply(message, Some(label))
            }
            Arrival::Update { message, previous, .. } => self.render_growth(message, previous),
        }
    }

    /// A card that is still streaming, on a terminal: its header and its text
    /// so far (as written, Markdown marks and all), the line left open.
    fn render_live_start(&self, m: &SandboxMessage, part: Option<String>) -> String {
        let tags: Vec<String> = part.into_iter().chain(["card".to_owned(), "streaming".to_owned()]).collect();
        format!("{}\n  {}", self.header(m, &tags), indent_lines(&m.text))
    }

    /// What a growing card added since `previous` (all of it again when it was
    /// rewritten rather than extended), and a last line once it is complete.
    fn render_growth(&self, m: &SandboxMessage, previous: &str) -> String {
        let mut out = match m.text.strip_prefix(previous) {
            Some(added) => indent_lines(added),
            None => format!("\n  {}\n  {}", self.dim("(rewritten)"), indent_lines(&m.text)),
        };
        if !m.streaming {
            out.push_str(&format!("\n  {}\n", self.dim("(card complete)")));
        }
        out
    }

    fn dim(&self, text: &str) -> String {
        if self.options.color {
            format!("\x1b[2m{text}\x1b[22m")
        } else {
            text.to_owned()
        }
    }

    /// `[place] bot (tags)>`, bold green on a terminal.
    fn header(&self, m: &SandboxMessage, tags: &[String]) -> String {
        let tags = if tags.is_empty() { String::new() } else { format!(" ({})", tags.join(", ")) };
        let header = format!("[{}] bot{tags}>", landed_in(m));
        if self.options.color {
            format!("\x1b[1;32m{header}\x1b[22;39m")
        } else {
            header
        }
    }

    /// One reply as Lark shows it: where it landed, then its text or rendered card.
    fn render_reply(&self, m: &SandboxMessage, part: Option<String>) -> String {
        let mut tags: Vec<String> = part.into_iter().collect();
        let body = match m.msg_type.as_str() {
            "text" => m.content.get("text").and_then(|t| t.as_str()).unwrap_or_default().to_owned(),
            "interactive" => {
                tags.push("card".to_owned());
                // A card sent by reference: the fake Lark gives its text as it is now.
                let text = if m.card_id.is_some() { m.text.clone() } else { content_text(&m.msg_type, &m.content) };
                render_markdown(&text, self.options.color)
            }
            "post" => {
                tags.push("rich text".to_owned());
                render_markdown(&content_text(&m.msg_type, &m.content), self.options.color)
            }
            other => {
                tags.push(other.to_owned());
                m.content.to_string()
            }
        };
        if m.updates > 0 {
            tags.push(format!("edited {}x", m.updates));
        }
        let header = self.header(m, &tags);
        if m.msg_type == "text" && !body.contains('\n') {
            return format!("{header} {body}\n");
        }
        let mut out = format!("{header}\n");
        for line in body.lines() {
            if !line.is_empty() {
                out.push_str("  ");
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }
}

/// Text continued on the chat's indented lines: each newline starts another one.
fn indent_lines(text: &str) -> String {
    text.replace('\n', "\n  ")
}

/// Where a reply landed, as the chat's labels name it: the kind of chat, and its topic.
fn landed_in(m: &SandboxMessage) -> String {
    let chat = m.chat_id.as_deref().unwrap_or_default();
    match (&m.thread_id, chat) {
        (Some(thread), TOPIC_GROUP_CHAT_ID) => format!("topic {thread}"),
        (Some(thread), GROUP_CHAT_ID) => format!("group, thread {thread}"),
        (Some(thread), _) => format!("thread {thread}"),
        (None, GROUP_CHAT_ID) => "group".to_owned(),
        (None, TOPIC_GROUP_CHAT_ID) => "topic group".to_owned(),
        (None, c) if c.starts_with("oc_sandbox_p2p_") => "private".to_owned(),
        (None, "") => "?".to_owned(),
        (None, c) => c.to_owned(),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

const BOLD: &str = "\x1b[1m";
const NO_BOLD: &str = "\x1b[22m";
const CODE: &str = "\x1b[36m";
const NO_CODE: &str = "\x1b[39m";

/// Markdown as a terminal can show it: headings underlined, list bullets,
/// code blocks framed, tables drawn with aligned columns, links as
/// `text (url)`. Emphasis and inline code keep their Markdown marks in plain
/// mode; with `color` they become ANSI bold and colour instead.
pub fn render_markdown(markdown: &str, color: bool) -> String {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let trimmed = line.trim_start();
        if let Some(fence) = fence_of(trimmed) {
            let lang = trimmed[fence.len()..].trim();
            out.push(if lang.is_empty() { "┌──".to_owned() } else { format!("┌── {lang}") });
            i += 1;
            while i < lines.len() && !lines[i].trim().starts_with(fence) {
                let code = lines[i].trim_end();
                out.push(if color { format!("│ {CODE}{code}{NO_CODE}") } else { format!("│ {code}") });
                i += 1;
            }
            out.push("└──".to_owned());
            i += 1;
            continue;
        }
        if trimmed.starts_with('|') && lines.get(i + 1).is_some_and(|l| is_table_separator(l)) {
            let start = i;
            i += 2;
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                i += 1;
            }
            out.extend(render_table(&lines[start..i], color));
            continue;
        }
        i += 1;
        if trimmed.is_empty() {
            if out.last().is_some_and(|l| !l.is_empty()) {
                out.push(String::new());
            }
            continue;
        }
        if let Some((level, text)) = heading_of(trimmed) {
            let text = inline(text, color);
            let width = display_width(&text);
            out.push(if color { format!("{BOLD}{text}{NO_BOLD}") } else { text });
            out.push((if level == 1 { "═" } else { "─" }).repeat(width.max(3)));
            continue;
        }
        if is_rule(trimmed) {
            out.push("─".repeat(40));
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix("> ").or_else(|| trimmed.strip_prefix('>')) {
            out.push(format!("{}▎ {}", " ".repeat(indent), inline(rest, color)));
            continue;
        }
        if let Some(rest) = ["- ", "* ", "+ "].iter().find_map(|p| trimmed.strip_prefix(p)) {
            let level = indent / 2;
            let bullet = match level {
                0 => "•",
                1 => "◦",
                _ => "▪",
            };
            let rest = match rest
                .strip_prefix("[ ] ")
                .map(|r| ("☐", r))
                .or_else(|| rest.strip_prefix("[x] ").or_else(|| rest.strip_prefix("[X] ")).map(|r| ("☑", r)))
            {
                Some((check, r)) => format!("{check} {}", inline(r, color)),
                None => inline(rest, color),
            };
            out.push(format!("{}{bullet} {rest}", "  ".repeat(level + 1)));
            continue;
        }
        out.push(format!("{}{}", " ".repeat(indent), inline(trimmed, color)));
    }
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out.join("\n")
}

fn fence_of(line: &str) -> Option<&'static str> {
    ["```", "~~~"].into_iter().find(|f| line.starts_with(f))
}

fn heading_of(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let rest = &line[level..];
    ((1..=6).contains(&level) && (rest.is_empty() || rest.starts_with(' ')))
        .then(|| (level, rest.trim().trim_end_matches('#').trim_end()))
}

fn is_rule(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3 && ['-', '*', '_'].iter().any(|&m| compact.chars().all(|c| c == m))
}

fn is_table_separator(line: &str) -> bool {
    let cells = table_cells(line);
    line.trim_start().starts_with('|')
        && !cells.is_empty()
        && cells.iter().all(|c| {
            let c = c.trim();
            c.contains('-') && c.chars().all(|ch| matches!(ch, '-' | ':' | ' '))
        })
}

fn table_cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix('|').unwrap_or(line);
    let line = line.strip_suffix('|').unwrap_or(line);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            c => cell.push(c),
        }
    }
    cells.push(cell.trim().to_owned());
    cells
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Center,
    Right,
}

fn render_table(lines: &[&str], color: bool) -> Vec<String> {
    let aligns: Vec<Align> = table_cells(lines[1])
        .iter()
        .map(|c| match (c.starts_with(':'), c.ends_with(':')) {
            (true, true) => Align::Center,
            (false, true) => Align::Right,
            _ => Align::Left,
        })
        .collect();
    let rows: Vec<Vec<String>> = std::iter::once(lines[0])
        .chain(lines[2..].iter().copied())
        .map(|l| table_cells(l).iter().map(|c| inline(c, color)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| display_width(s)).max().unwrap_or(0).max(1))
        .collect();
    let rule = |left: &str, mid: &str, right: &str| {
        let segments: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{left}{}{right}", segments.join(mid))
    };
    let row = |cells: &Vec<String>, bold: bool| {
        let mut s = String::from("│");
        for (c, width) in widths.iter().enumerate() {
            let text = cells.get(c).map(String::as_str).unwrap_or_default();
            let pad = width - display_width(text);
            let (before, after) = match aligns.get(c).copied().unwrap_or(Align::Left) {
                Align::Left => (0, pad),
                Align::Right => (pad, 0),
                Align::Center => (pad / 2, pad - pad / 2),
            };
            let text = if bold && color { format!("{BOLD}{text}{NO_BOLD}") } else { text.to_owned() };
            s.push_str(&format!(" {}{text}{} │", " ".repeat(before), " ".repeat(after)));
        }
        s
    };
    let mut out = vec![rule("┌", "┬", "┐"), row(&rows[0], true), rule("├", "┼", "┤")];
    out.extend(rows[1..].iter().map(|r| row(r, false)));
    out.push(rule("└", "┴", "┘"));
    out
}

/// Inline Markdown: `**bold**` and `` `code` `` (ANSI with `color`, kept as is
/// without), links as `text (url)`, images as `[image: alt]`.
fn inline(text: &str, color: bool) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after.find('`') {
                let code = &after[..end];
                if color {
                    out.push_str(&format!("{CODE}{code}{NO_CODE}"));
                } else {
                    out.push_str(&format!("`{code}`"));
                }
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**").or_else(|| rest.strip_prefix("__")) {
            let mark = &rest[..2];
            if let Some(end) = after.find(mark).filter(|&e| e > 0) {
                let inner = inline(&after[..end], color);
                if color {
                    out.push_str(&format!("{BOLD}{inner}{NO_BOLD}"));
                } else {
                    out.push_str(&format!("{mark}{inner}{mark}"));
                }
                rest = &after[end + 2..];
                continue;
            }
        }
        let image = rest.starts_with("![");
        if image || rest.starts_with('[') {
            let open = if image { 2 } else { 1 };
            if let Some((label, url, len)) = link_at(&rest[open..]) {
                if image {
                    out.push_str(&format!("[image: {label}]"));
                } else if label == url {
                    out.push_str(url);
                } else {
                    out.push_str(&format!("{} ({url})", inline(label, color)));
                }
                rest = &rest[open + len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `label](url)` at the start of `s`: the label, the url and the length consumed.
fn link_at(s: &str) -> Option<(&str, &str, usize)> {
    let close = s.find("](")?;
    let label = &s[..close];
    if label.contains('[') {
        return None;
    }
    let after = &s[close + 2..];
    let end = after.find(')')?;
    Some((label, after[..end].trim(), close + 2 + end + 1))
}

/// Columns a string takes in a terminal: ANSI escapes take none, East Asian
/// wide characters (CJK, Hangul, full-width forms, most emoji) take two.
pub fn display_width(s: &str) -> usize {
    let mut width = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        width += char_width(c);
    }
    width
}

fn char_width(c: char) -> usize {
    let cp = c as u32;
    if c.is_control() || matches!(cp, 0x300..=0x36F | 0x200B..=0x200F | 0xFE00..=0xFE0F) {
        return 0;
    }
    let wide = matches!(
        cp,
        0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x3FFFD
    );
    if wide {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_legible_in_plain_text() {
        let md = "## Markdown\n\n**Bold answer** for turn 2.\n\n- first item\n- second item\n  - nested item\n\n\
                  ```rust\nfn main() {}\n```\n\n| key | value |\n| --- | ---: |\n| turn | 2 |\n| fake | yes |\n\n\
                  See [the docs](https://example.com) and `code`.\n> quoted\n\n---\n";
        let shown = render_markdown(md, false);
        let expected = "\
Markdown
────────

**Bold answer** for turn 2.

  • first item
  • second item
    ◦ nested item

┌── rust
│ fn main() {}
└──

┌──────┬───────┐
│ key  │ value │
├──────┼───────┤
│ turn │     2 │
│ fake │   yes │
└──────┴───────┘

See the docs (https://example.com) and `code`.
▎ quoted

────────────────────────────────────────";
        assert_eq!(shown, expected);
    }

    #[test]
    fn color_replaces_marks_and_keeps_columns_aligned() {
        let shown = render_markdown("# T\n\n| a | b |\n|---|---|\n| **x** | `y` |\n", true);
        assert!(shown.contains(&format!("{BOLD}x{NO_BOLD}")), "{shown}");
        assert!(!shown.contains("**"), "{shown}");
        let widths: Vec<usize> = shown.lines().filter(|l| l.starts_with('│')).map(display_width).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{shown}");
        assert!(shown.lines().nth(1).is_some_and(|l| l.starts_with('═')), "{shown}");
    }

    #[test]
    fn wide_characters_and_unclosed_marks() {
        assert_eq!(display_width("中文ab"), 6);
        let shown = render_markdown("| 名称 | v |\n| - | - |\n| 值 | 1 |", false);
        let widths: Vec<usize> = shown.lines().map(display_width).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{shown}");
        assert_eq!(render_markdown("a ** b ` c [d", false), "a ** b ` c [d");
        assert_eq!(render_markdown("| not a table", false), "| not a table");
        assert_eq!(render_markdown("```\nunclosed", false), "┌──\n│ unclosed\n└──");
    }

    #[test]
    fn replies_are_placed_where_they_landed() {
        let mut m = SandboxMessage {
            index: 0,
            app_id: "a".into(),
            via: Via::Reply { message_id: "om_1".into() },
            message_id: "om_2".into(),
            chat_id: Some(TOPIC_GROUP_CHAT_ID.into()),
            thread_id: Some("omt_1".into()),
            msg_type: "text".into(),
            content: json!({ "text": "x" }),
            text: "x".into(),
            uuid: None,
            reply_in_thread: true,
            updates: 0,
            card_id: None,
            version: 0,
            streaming: false,
            card: None,
        };
        assert_eq!(landed_in(&m), "topic omt_1");
        m.chat_id = Some(GROUP_CHAT_ID.into());
        assert_eq!(landed_in(&m), "group, thread omt_1");
        m.thread_id = None;
        assert_eq!(landed_in(&m), "group");
        m.chat_id = Some("oc_sandbox_p2p_you".into());
        assert_eq!(landed_in(&m), "private");
    }

    /// The bot's side of a streamed answer: a card created, sent as the reply
    /// to `question`, grown twice, then closed.
    async fn bot_streams(lark: String, question: String) {
        let client = reqwest::Client::new();
        let token: serde_json::Value = client
            .post(format!("{lark}/open-apis/auth/v3/tenant_access_token/internal"))
            .json(&json!({ "app_id": "cli_s", "app_secret": "secret" }))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("JSON");
        let token = token["tenant_access_token"].as_str().expect("token").to_owned();
        let call = |method: reqwest::Method, path: String, body: serde_json::Value| {
            let request = client.request(method, format!("{lark}{path}")).bearer_auth(&token).json(&body);
            async move {
                let body: serde_json::Value = request.send().await.expect("call").json().await.expect("JSON");
                assert_eq!(body["code"], 0, "{body}");
                body
            }
        };
        let card = json!({ "schema": "2.0", "config": { "streaming_mode": true },
            "body": { "elements": [{ "tag": "markdown", "content": "", "element_id": "md" }] } });
        let created = call(
            reqwest::Method::POST,
            "/open-apis/cardkit/v1/cards".into(),
            json!({ "type": "card_json", "data": card.to_string() }),
        )
        .await;
        let card_id = created["data"]["card_id"].as_str().expect("card_id").to_owned();
        let content = json!({ "type": "card", "data": { "card_id": card_id } }).to_string();
        let reply = json!({ "msg_type": "interactive", "content": content, "uuid": format!("u-{question}") });
        call(reqwest::Method::POST, format!("/open-apis/im/v1/messages/{question}/reply"), reply).await;
        for (seq, text) in [(1, "Hello"), (2, "Hello, world")] {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let path = format!("/open-apis/cardkit/v1/cards/{card_id}/elements/md/content");
            call(reqwest::Method::PUT, path, json!({ "content": text, "sequence": seq })).await;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let settings = json!({ "config": { "streaming_mode": false } }).to_string();
        let path = format!("/open-apis/cardkit/v1/cards/{card_id}/settings");
        call(reqwest::Method::PATCH, path, json!({ "settings": settings, "sequence": 3 })).await;
    }

    #[tokio::test]
    async fn a_streaming_card_grows_live_or_is_shown_once_complete() {
        let lark =
            crate::fake_lark::FakeLark::start(vec![crate::fake_lark::FakeApp::new("cli_s", "secret", "ou_b")]).await;
        let target = Target { lark: lark.base_url(), ..Target::default() };
        let timing = Timing {
            timeout: Duration::from_secs(5),
            quiet: Duration::from_millis(100),
            poll: Duration::from_millis(10),
        };
        for live in [false, true] {
            let mut user = LarkUser::connect(target.clone()).await.expect("the fake Lark answers");
            user.set_live_cards(live);
            let question = format!("om_question_{live}");
            let chat = "oc_sandbox_p2p_you";
            lark.register_message(&question, chat, None);
            user.sent.insert(question.clone(), SentInfo { chat_id: chat.to_owned(), parts_seen: 0 });
            let bot = tokio::spawn(bot_streams(lark.base_url(), question.clone()));
            let mut wait = user.wait_for(&question, timing);
            let mut arrivals = Vec::new();
            while let Some(arrival) = user.next_arrival(&mut wait).await.expect("arrivals") {
                arrivals.push(arrival);
            }
            bot.await.expect("the bot streamed");

            let mut printed = Vec::new();
            let session = Session {
                user,
                options: ChatOptions::default(),
                out: &mut printed,
                place: Place::P2p,
                speaker: DEFAULT_SPEAKER.to_owned(),
                topic: None,
                asked: HashMap::new(),
                live,
                cards: cards::Cards::default(),
            };
            let shown: String = arrivals.iter().map(|a| session.show(a)).collect();
            if !live {
                assert_eq!(arrivals.len(), 1, "{arrivals:?}");
                let Arrival::Reply { message, part: 1 } = &arrivals[0] else { panic!("{arrivals:?}") };
                assert!(!message.streaming && message.text == "Hello, world", "{message:?}");
                assert_eq!(shown, "[private] bot (card)>\n  Hello, world\n");
                continue;
            }
            let Some(Arrival::Reply { message: first, part: 1 }) = arrivals.first() else { panic!("{arrivals:?}") };
            assert!(first.streaming, "{first:?}");
            let Some(Arrival::Update { message: last, .. }) = arrivals.last() else { panic!("{arrivals:?}") };
            assert!(!last.streaming && last.text == "Hello, world", "{last:?}");
            for arrival in &arrivals[1..] {
                let Arrival::Update { message, previous, .. } = arrival else { panic!("{arrivals:?}") };
                assert!(message.text.starts_with(previous.as_str()), "{arrivals:?}");
            }
            assert!(shown.starts_with("[private] bot (card, streaming)>\n  "), "{shown}");
            assert!(shown.ends_with("Hello, world\n  (card complete)\n"), "{shown}");
            assert_eq!(shown.matches("Hello").count(), 1, "each piece printed once: {shown}");
        }
    }

    #[test]
    fn growing_text_keeps_the_indentation() {
        assert_eq!(indent_lines("a\nb"), "a\n  b");
    }
}
