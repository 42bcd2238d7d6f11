//! The chat itself: reads a line, acts on it, prints the replies as they
//! arrive, and shows late replies while the person is idle.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use tokio::io::AsyncBufRead;

use super::{cards, LarkUser, LineSource, PipeInput, Prompt, Target, Timing};
use super::{DEFAULT_SPEAKER, GROUP_CHAT_ID, TOPIC_GROUP_CHAT_ID};
use crate::lark_events::ChatRef;

/// How the chat behaves in its terminal.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChatOptions {
    pub timing: Timing,
    /// Print each line read after its prompt (input from a pipe, not echoed by a terminal).
    pub echo_input: bool,
    /// ANSI bold and colours (a terminal); plain text otherwise.
    pub color: bool,
}

/// Where the person at the keyboard is talking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Place {
    P2p,
    Group,
    Topic { thread_id: String },
}

/// The chat's state: who speaks where, and what the bot asked.
pub(super) struct Session<'w, W: Write> {
    pub(super) user: LarkUser,
    pub(super) options: ChatOptions,
    pub(super) out: &'w mut W,
    pub(super) place: Place,
    pub(super) speaker: String,
    /// The topic `/topic` returns to, once one was started.
    pub(super) topic: Option<String>,
    /// The question each message asked, to label late replies.
    pub(super) asked: HashMap<String, String>,
    /// Show streaming cards growing (on a terminal).
    pub(super) live: bool,
    /// The bot's question cards: the one to answer, a form being filled in.
    pub(super) cards: cards::Cards,
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

    pub(super) fn chat(&self) -> ChatRef {
        match &self.place {
            Place::P2p => ChatRef::P2p { chat_id: format!("oc_sandbox_p2p_{}", self.speaker) },
            Place::Group => ChatRef::Group { chat_id: GROUP_CHAT_ID.to_owned() },
            Place::Topic { thread_id } => {
                ChatRef::Topic { chat_id: TOPIC_GROUP_CHAT_ID.to_owned(), thread_id: thread_id.clone() }
            }
        }
    }

    pub(super) fn note(&mut self, text: &str) -> anyhow::Result<()> {
        if self.options.color {
            writeln!(self.out, "\x1b[2m{text}\x1b[22m")?;
        } else {
            writeln!(self.out, "{text}")?;
        }
        Ok(())
    }

    /// Prints the replies to `message_id` as they arrive; says where to look when none came.
    pub(super) async fn await_replies(&mut self, message_id: &str) -> anyhow::Result<()> {
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
    pub(super) async fn show_replies(&mut self, message_id: &str) -> anyhow::Result<usize> {
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
}
