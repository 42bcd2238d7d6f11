//! Asking FastGPT with a streamed answer (channel `streaming = true`).
//!
//! The answer is read as FastGPT writes it. At its first words the relay
//! publishes a card start (durable, on the replies queue: the responder that
//! owns the chat creates the card and shows it, in the chat's order); then,
//! every [`draft_gap`] (often while young, seldom when old), a draft with the whole text so far (core
//! NATS, on a subject of the chat's replies partition, so it reaches the
//! same responder: a lost one costs nothing). The text is appended to as it arrives and
//! each draft copies at most `DRAFT_MAX_TEXT` bytes of it, so the cost stays
//! linear in the answer's length, and at most `MAX_ANSWER_BYTES` of it are
//! kept: past that the answer is cut. The final answer is published by the
//! handler as for any answer; it is what ends up in the card.

use std::time::Duration;

use common::channel::Channel;
use common::envelope::{truncate_at_char, unix_ms, ReplyBody, ReplyCommand, DRAFT_MAX_TEXT};
use common::question::Interaction;
use tokio::time::MissedTickBehavior;

use crate::fastgpt::{Ask, FastGpt, FastGptError, Piece, MAX_ANSWER_BYTES};
use crate::replies::Replies;
use crate::typing::Typing;

/// How often the text so far goes to the responder while the answer is
/// young. The responder decides when the card shows it (at least
/// `responder.stream_update_ms` apart, then about every three quarters of
/// the answer's age, up to a few seconds); drafts need only be a little
/// fresher than that, so they too thin out as the answer ages
/// ([`draft_gap`]): each copies the whole text so far, and most of a
/// streamed answer's cost over a whole one is drafts.
pub const DRAFT_EVERY: Duration = Duration::from_millis(250);
/// The longest gap between two drafts of an old answer.
pub const DRAFT_EVERY_MAX: Duration = Duration::from_secs(2);

/// The gap between two drafts of an answer `age` old (since its first
/// words): an eighth of its age, within [`DRAFT_EVERY`] and
/// [`DRAFT_EVERY_MAX`]. A card shown at an age `a` is then at most `a / 8`
/// behind FastGPT, and a 30-second answer costs about 30 drafts, not 120.
pub fn draft_gap(age: Duration) -> Duration {
    (age / 8).clamp(DRAFT_EVERY, DRAFT_EVERY_MAX)
}

/// What a streamed ask ended with.
pub struct Streamed {
    /// The whole answer, or why it stopped.
    pub result: Result<String, FastGptError>,
    /// The text received before it failed (empty on success: the answer is
    /// in `result`).
    pub partial: String,
    /// FastGPT stopped at a node that asks the user (buttons or a form).
    pub interaction: Option<Interaction>,
    /// The nodes' responses, with the quotes (`crate::sources`).
    pub responses: Option<serde_json::Value>,
}

/// Asks FastGPT for a streamed answer on behalf of `target` (the reply
/// command the answer will end in; its body is ignored).
pub async fn ask(
    fastgpt: &FastGpt,
    replies: &Replies,
    channel: &Channel,
    ask: &Ask<'_>,
    target: &ReplyCommand,
    mut typing: Option<Typing>,
) -> Streamed {
    let mut stream = match fastgpt.ask_streaming(channel, ask).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(t) = typing.take() {
                t.finish().await;
            }
            return Streamed { result: Err(e), partial: String::new(), interaction: None, responses: None };
        }
    };
    let mut drafts = Drafts::new(replies, target);
    let mut text = String::new();
    let mut interaction = None;
    let mut responses = None;
    let mut tick = tokio::time::interval(DRAFT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            piece = stream.next() => match piece {
                None => break Ok(()),
                Some(Err(e)) => break Err(e),
                Some(Ok(Piece::Text(delta))) if delta.is_empty() => {}
                Some(Ok(Piece::Text(delta))) => {
                    // A runaway workflow may write without end: keep what
                    // fits, stop reading (the connection closes, FastGPT
                    // stops writing) and answer with that, not asking again.
                    // The reply says it was cut (`cut::fit_reply`).
                    let room = MAX_ANSWER_BYTES - text.len();
                    let full = delta.len() >= room;
                    text.push_str(truncate_at_char(&delta, room));
                    // Lark refuses a card without text: start at the first visible words.
                    if !drafts.started() && !text.trim().is_empty() {
                        // The card replaces the Typing reaction.
                        if let Some(t) = typing.take() {
                            tokio::spawn(t.finish());
                        }
                        drafts.start(&text).await;
                    }
                    if full {
                        tracing::warn!(kept = text.len(), "the streamed answer reached the relay's limit; cut there");
                        break Ok(());
                    }
                }
                Some(Ok(Piece::Responses(r))) => responses = Some(r),
                Some(Ok(Piece::Interactive(node))) => {
                    interaction = crate::interactive::read(&node);
                    match &interaction {
                        Some(_) => tracing::info!("FastGPT stopped at a node that asks the user"),
                        None => tracing::warn!("FastGPT sent an interactive node of a kind the bridge does not show"),
                    }
                }
            },
            _ = tick.tick(), if drafts.behind(&text) => if drafts.due() { drafts.send(&text).await },
        }
    };
    if let Some(t) = typing.take() {
        t.finish().await;
    }
    // Moved, not copied: the text may be up to `MAX_ANSWER_BYTES`.
    match end {
        Ok(()) => Streamed { result: Ok(text), partial: String::new(), interaction, responses },
        Err(e) => Streamed { result: Err(e), partial: text, interaction, responses },
    }
}

/// The drafts of one answer.
struct Drafts<'a> {
    replies: &'a Replies,
    target: &'a ReplyCommand,
    /// This attempt's start (Unix ms): orders its drafts after an earlier attempt's.
    run: u64,
    n: u64,
    /// When the first words came (Unix ms), 0 before.
    first_text_at: u64,
    /// When the last draft (or the card start) went.
    last_sent: tokio::time::Instant,
    /// Bytes of the text the last draft carried.
    sent_len: usize,
}

impl<'a> Drafts<'a> {
    fn new(replies: &'a Replies, target: &'a ReplyCommand) -> Self {
        let last_sent = tokio::time::Instant::now();
        Self { replies, target, run: unix_ms(), n: 0, first_text_at: 0, last_sent, sent_len: 0 }
    }

    fn started(&self) -> bool {
        self.first_text_at != 0
    }

    /// Text the responder has not seen, within what a card shows.
    fn behind(&self, text: &str) -> bool {
        self.started() && text.len().min(DRAFT_MAX_TEXT) > self.sent_len
    }

    /// Is it time for the next draft ([`draft_gap`])?
    fn due(&self) -> bool {
        let age = Duration::from_millis(unix_ms().saturating_sub(self.first_text_at));
        self.last_sent.elapsed() >= draft_gap(age)
    }

    /// The card start: durable, so the card appears even if no draft arrives.
    async fn start(&mut self, text: &str) {
        self.first_text_at = unix_ms();
        self.last_sent = tokio::time::Instant::now();
        // Citation marks are never shown raw (the final answer numbers them).
        let draft = self.target.draft((self.run, 0), self.first_text_at, &crate::sources::without_marks(text));
        self.sent_len = text.len().min(DRAFT_MAX_TEXT);
        let command = ReplyCommand {
            body: ReplyBody::CardStart { text: draft.text, run: self.run, first_text_at: self.first_text_at },
            ..self.target.clone()
        };
        match self.replies.publish(&command).await {
            Ok(()) => tracing::info!("streaming card requested"),
            Err(e) => tracing::warn!(error = %e, "cannot publish the card start; the answer will come whole"),
        }
    }

    async fn send(&mut self, text: &str) {
        self.n += 1;
        self.last_sent = tokio::time::Instant::now();
        let draft = self.target.draft((self.run, self.n), self.first_text_at, &crate::sources::without_marks(text));
        // Compared with the same measure in `behind` (the draft itself may be
        // a few bytes shorter, cut on a character boundary).
        self.sent_len = text.len().min(DRAFT_MAX_TEXT);
        self.replies.publish_draft(&draft).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_thin_out_as_the_answer_ages() {
        assert_eq!(draft_gap(Duration::ZERO), DRAFT_EVERY);
        assert_eq!(draft_gap(Duration::from_secs(1)), DRAFT_EVERY);
        assert_eq!(draft_gap(Duration::from_secs(8)), Duration::from_secs(1));
        assert_eq!(draft_gap(Duration::from_secs(60)), DRAFT_EVERY_MAX);
        // A 30-second answer: drafts every gap from its first words on.
        let (mut at, mut drafts) = (Duration::ZERO, 0);
        while at < Duration::from_secs(30) {
            at += draft_gap(at);
            drafts += 1;
        }
        assert!((25..=40).contains(&drafts), "{drafts} drafts");
    }
}
