//! What each line typed does: a command (`/group`, `/as NAME`, `/image
//! PATH`, ...) or a message to the bot.

use std::io::Write;
use std::time::Duration;

use super::session::{Place, Session};
use super::{Attachment, AttachmentKind, GROUP_CHAT_ID, TOPIC_GROUP_CHAT_ID};
use crate::lark_events::random_hex;

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

impl<W: Write> Session<'_, W> {
    /// Handles one line; false when the chat ends.
    pub(super) async fn handle(&mut self, line: &str) -> anyhow::Result<bool> {
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

    /// Sends `text` and prints each reply the moment it arrives, until the
    /// reply is complete (see [`Timing`](super::Timing)).
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
}
