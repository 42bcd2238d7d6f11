//! The chat's input on a terminal: a line editor (rustyline) instead of the
//! terminal's own line discipline, which sends arrow keys as escape codes and
//! cuts a typed line at 4,095 bytes. Here the arrows move and recall history
//! (kept in memory for the session), and a paste (bracketed paste) goes into
//! the line whole, newlines and all, to be sent with Enter.
//!
//! rustyline blocks, so it runs on a thread of its own: the chat asks for a
//! line with the prompt, the thread answers on a channel. Replies that arrive
//! while the person types are printed above the line being edited.

use std::sync::mpsc as std_mpsc;
use std::thread;

use anyhow::Context as _;
use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};
use tokio::sync::mpsc;

use super::{LineSource, Prompt};

/// Lines kept for Up and Down.
const HISTORY: usize = 1000;

type Printer = Box<dyn rustyline::ExternalPrinter + Send>;

/// A line editor on the terminal, on its own thread.
pub struct LineEditor {
    requests: std_mpsc::Sender<Prompt>,
    lines: mpsc::Receiver<anyhow::Result<Option<String>>>,
    printer: Option<Printer>,
    /// A line was asked for and has not come back yet (the chat may drop
    /// `next_line` to show late replies, and ask again).
    asked: bool,
}

impl LineEditor {
    /// Starts the editor on stdin and stdout (a terminal).
    pub fn start() -> anyhow::Result<Self> {
        let (requests, prompts) = std_mpsc::channel::<Prompt>();
        let (answers, lines) = mpsc::channel(1);
        let (ready, started) = std_mpsc::channel::<anyhow::Result<Option<Printer>>>();
        thread::Builder::new()
            .name("line-editor".to_owned())
            .spawn(move || {
                let config = Config::builder()
                    .auto_add_history(true)
                    .bracketed_paste(true)
                    .max_history_size(HISTORY)
                    .map(rustyline::config::Builder::build);
                let editor = config.and_then(DefaultEditor::with_config).context("cannot start the line editor");
                let mut editor = match editor {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let printer = editor.create_external_printer().ok().map(|p| Box::new(p) as Printer);
                if ready.send(Ok(printer)).is_err() {
                    return;
                }
                while let Ok(prompt) = prompts.recv() {
                    let line = match editor.readline(&(prompt.plain.as_str(), prompt.styled.as_str())) {
                        Ok(line) => Ok(Some(line)),
                        // Ctrl-D leaves, and so does Ctrl-C (as it always did).
                        Err(ReadlineError::Eof | ReadlineError::Interrupted) => Ok(None),
                        Err(e) => Err(anyhow::Error::new(e).context("cannot read the terminal")),
                    };
                    let end = !matches!(line, Ok(Some(_)));
                    if answers.blocking_send(line).is_err() || end {
                        return;
                    }
                }
            })
            .context("cannot start the line editor's thread")?;
        let printer = started.recv().context("the line editor's thread ended at start")??;
        Ok(Self { requests, lines, printer, asked: false })
    }
}

impl LineSource for LineEditor {
    async fn next_line(&mut self, prompt: &Prompt) -> anyhow::Result<Option<String>> {
        if !self.asked {
            if self.requests.send(prompt.clone()).is_err() {
                return Ok(None);
            }
            self.asked = true;
        }
        let line = self.lines.recv().await;
        self.asked = false;
        line.unwrap_or(Ok(None))
    }

    fn is_terminal(&self) -> bool {
        true
    }

    fn print_above(&mut self, text: &str) -> bool {
        match &mut self.printer {
            Some(p) => p.print(text.to_owned()).is_ok(),
            None => false,
        }
    }
}
