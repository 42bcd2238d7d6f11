//! Cutting an answer to what a chat can show: at most `MAX_REPLY_TEXT`
//! bytes, within one NATS message, at a line end, with a code block left
//! open closed and a line saying the answer was cut.

use common::envelope::{truncate_at_char, ReplyBody, ReplyCommand, MAX_REPLY_TEXT};

use crate::says;

// A runaway streamed answer, cut at `MAX_ANSWER_BYTES`, is always cut again
// for the chat, with the line that says so.
const _: () = assert!(MAX_REPLY_TEXT < crate::fastgpt::MAX_ANSWER_BYTES);

/// Room kept in a NATS message beside the reply's JSON: headers (message
/// id, channel, trace context).
const HEADERS_ROOM: usize = 4 * 1024;

/// Bytes a cut takes at most beyond what it keeps: the closing of a code
/// block and the line saying the answer was cut.
const CUT_ROOM: usize = 256;

/// Cuts the reply's text, with a line saying so, to at most
/// [`MAX_REPLY_TEXT`] bytes and so that the command fits one NATS message
/// of `max_payload` bytes. An answer of any size thus reaches the user, its
/// start at least, as one reply command: one Lark `uuid` sequence, in
/// order, ending a streaming card like any answer. Returns the text's
/// length before the cut, when it was cut.
pub(crate) fn fit_reply(command: &mut ReplyCommand, max_payload: usize) -> Option<usize> {
    let ReplyBody::Markdown { text, .. } = &mut command.body else { return None };
    let length = text.len();
    let mut cut = false;
    if text.len() > MAX_REPLY_TEXT {
        cut_text(text, MAX_REPLY_TEXT - CUT_ROOM);
        cut = true;
    }
    let budget = max_payload.saturating_sub(HEADERS_ROOM);
    let size_of = |command: &ReplyCommand| serde_json::to_vec(command).map_or(usize::MAX, |json| json.len());
    let mut empty = command.clone();
    if let ReplyBody::Markdown { text, .. } = &mut empty.body {
        text.clear();
    }
    let overhead = size_of(&empty);
    // JSON escapes some characters to 2 or 6 bytes: keep the share of the
    // text that fits; the last round removes at least the excess (an
    // escaped byte is at least one byte of text), so the command then fits
    // unless the question card alone is too large.
    for round in 0..4 {
        let size = size_of(command);
        let ReplyBody::Markdown { text, .. } = &mut command.body else { break };
        if size <= budget || text.is_empty() {
            break;
        }
        let keep = match round {
            3 => text.len().saturating_sub(size - budget),
            _ => text.len().saturating_mul(budget.saturating_sub(overhead)) / size.saturating_sub(overhead).max(1),
        };
        cut_text(text, keep.saturating_sub(CUT_ROOM));
        cut = true;
    }
    cut.then_some(length)
}

/// Cuts `text` to at most `keep` bytes (at a line end when one is near, on a
/// character boundary), closes a code block left open, and says it was cut.
fn cut_text(text: &mut String, keep: usize) {
    let mut end = truncate_at_char(text, keep).len();
    if let Some(line_end) = text[..end].rfind('\n').filter(|&i| end - i < 4096) {
        end = line_end;
    }
    text.truncate(end);
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
    let fences = text.lines().filter(|l| l.trim_start().starts_with("```")).count();
    if fences % 2 == 1 {
        text.push_str("\n```");
    }
    text.push_str("\n\n---\n");
    text.push_str(says::CUT);
}

/// A streamed answer that stopped midway: what was written, then why it
/// stopped (the reason kept whatever the length of what was written).
pub fn interrupted(partial: &str, apology: &str) -> String {
    let room = MAX_REPLY_TEXT - CUT_ROOM - says::INTERRUPTED.len() - apology.len() - 16;
    let mut partial = partial.trim_end().to_owned();
    if partial.len() > room {
        cut_text(&mut partial, room.saturating_sub(CUT_ROOM));
    }
    format!("{partial}\n\n---\n{} {apology}", says::INTERRUPTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::envelope::ReplyKind;

    fn reply(text: String) -> ReplyCommand {
        ReplyCommand {
            channel: "support".into(),
            source: "support:msg:om_1".into(),
            reply_to: "om_1".into(),
            chat_id: "oc_1".into(),
            in_thread: false,
            kind: ReplyKind::Answer,
            body: ReplyBody::markdown(text),
        }
    }

    fn text_of(command: &ReplyCommand) -> &str {
        match &command.body {
            ReplyBody::Markdown { text, .. } => text,
            ReplyBody::CardStart { text, .. } => text,
        }
    }

    #[test]
    fn a_reply_that_fits_is_left_alone() {
        let mut command = reply("short **answer**\n".repeat(1000));
        let before = command.clone();
        assert_eq!(fit_reply(&mut command, 1 << 20), None);
        assert_eq!(command, before);
    }

    #[test]
    fn a_long_answer_is_cut_at_a_line_with_a_line_saying_so() {
        let line = "a line of the answer, 32 bytes.\n";
        let text = line.repeat(1_500_000 / line.len());
        let mut command = reply(text.clone());
        assert_eq!(fit_reply(&mut command, 1 << 20), Some(text.len()));
        let cut = text_of(&command);
        assert!(cut.len() <= MAX_REPLY_TEXT, "{}", cut.len());
        assert!(cut.len() > MAX_REPLY_TEXT - 8192, "most of the room is used: {}", cut.len());
        assert!(cut.ends_with(says::CUT));
        let kept = &cut[..cut.len() - says::CUT.len() - "\n\n---\n".len()];
        assert!(
            text.starts_with(kept) && kept.ends_with("32 bytes."),
            "cut after a whole line: {:?}",
            &kept[kept.len() - 40..]
        );
        assert!(serde_json::to_vec(&command).expect("JSON").len() < 1 << 20);
    }

    #[test]
    fn a_code_block_left_open_by_the_cut_is_closed_before_the_line() {
        let text = format!("Intro\n\n```rust\n{}```\n", "let x = 1;\n".repeat(100_000));
        let mut command = reply(text);
        assert!(fit_reply(&mut command, 1 << 20).is_some());
        let cut = text_of(&command);
        let fences = cut.lines().filter(|l| l.trim_start().starts_with("```")).count();
        assert_eq!(fences, 2, "opened and closed");
        assert!(cut.ends_with(&format!("```\n\n---\n{}", says::CUT)));
    }

    /// Quotes and control characters take two to six bytes in JSON: the
    /// command still fits the server's limit, whatever it is.
    #[test]
    fn the_command_fits_max_payload_whatever_the_escaping() {
        for max_payload in [1 << 20, 256 << 10, 64 << 10] {
            let mut command = reply("\u{1}\"\\\n".repeat(200_000));
            assert!(fit_reply(&mut command, max_payload).is_some());
            let json = serde_json::to_vec(&command).expect("JSON");
            assert!(json.len() <= max_payload - HEADERS_ROOM, "{} > {max_payload}", json.len());
            assert!(text_of(&command).ends_with(says::CUT));
            assert!(text_of(&command).len() > (max_payload - HEADERS_ROOM) / 8, "not cut more than needed");
        }
    }

    #[test]
    fn an_interrupted_answer_keeps_its_reason_whatever_its_length() {
        let partial = "word ".repeat(4 << 20);
        let text = interrupted(&partial, "Sorry, the workflow failed.");
        assert!(text.len() <= MAX_REPLY_TEXT, "{}", text.len());
        assert!(text.ends_with("Sorry, the workflow failed."));
        assert!(text.contains(says::CUT));
        let mut command = reply(text.clone());
        assert_eq!(fit_reply(&mut command, 1 << 20), None, "the reason is not cut away again");
    }
}
