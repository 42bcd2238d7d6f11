//! Where the chat's lines come from, so that the same chat runs on a
//! terminal, on a pipe, and in a test.

use std::future::Future;

use anyhow::Context as _;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

/// Where the chat's lines come from: a pipe or a test's buffer
/// ([`PipeInput`]), or a line editor on a terminal ([`LineEditor`](super::LineEditor)).
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
