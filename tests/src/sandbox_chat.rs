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
//!
//! The parts: `user.rs` sends as the Lark user and `replies.rs` waits for
//! the bot's replies (together [`LarkUser`]); `session.rs` runs the chat,
//! `commands.rs` acts on each line typed, `input.rs` is where the lines come
//! from; `render.rs` and `markdown.rs` print what the bot sent.

pub mod attachments;
pub mod cards;
mod commands;
mod input;
mod line_editor;
mod markdown;
mod render;
mod replies;
mod session;
mod user;

pub use attachments::{Attachment, AttachmentKind};
pub use input::{LineSource, PipeInput, Prompt};
pub use line_editor::LineEditor;
pub use markdown::{display_width, render_markdown};
pub use replies::{Arrival, Replies, ReplyWait, Timing, TEXT_GRACE};
pub use session::{run, run_with, ChatOptions};
pub use user::{refusal, LarkUser};

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
/// The person at the keyboard.
const DEFAULT_SPEAKER: &str = "you";
const GROUP_CHAT_ID: &str = "oc_sandbox_group";
const TOPIC_GROUP_CHAT_ID: &str = "oc_sandbox_topics";

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
