//! FastGPT answers in Markdown; Lark shows Markdown in a card's markdown
//! element (card JSON 2.0). Plain short answers stay plain text messages.
//!
//! A card is at most 30 KB, so a longer answer is split into consecutive
//! parts: between paragraphs when possible, else between lines, never inside
//! a UTF-8 character, and never inside a code block (a code block too long for
//! one card is closed at the end of a part and reopened, with its language,
//! at the start of the next, so every part renders as code).

use serde_json::json;

/// Lark's limit for a card's content is 30 KB; keep room for the card's own JSON.
pub const CARD_CONTENT_BUDGET: usize = 28 * 1024;

/// One Lark message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub msg_type: &'static str,
    /// The `content` field: a JSON string, as Lark wants it.
    pub content: String,
}

/// Renders an answer as one or more Lark messages, in order.
pub fn render(markdown: &str) -> Vec<Part> {
    render_with_budget(markdown, CARD_CONTENT_BUDGET)
}

pub fn render_with_budget(markdown: &str, budget: usize) -> Vec<Part> {
    let text = crate::neutralize::neutralize(markdown.trim());
    let text = text.as_ref();
    if !looks_like_markdown(text) && escaped_len(text) + 16 <= budget {
        return vec![Part { msg_type: "text", content: json!({ "text": text }).to_string() }];
    }
    split(text, budget.saturating_sub(CARD_OVERHEAD).max(64))
        .into_iter()
        .map(|chunk| Part { msg_type: "interactive", content: card(&chunk) })
        .collect()
}

/// A card JSON 2.0 with one markdown element.
pub fn card(markdown: &str) -> String {
    json!({
        "schema": "2.0",
        "config": { "update_multi": true },
        "body": { "elements": [ { "tag": "markdown", "content": markdown } ] },
    })
    .to_string()
}

/// `parts` with the answer's extras (sources, feedback buttons) in its last
/// card: a plain text part becomes a card to hold them.
pub fn with_extras(mut parts: Vec<Part>, extras: &common::answer::Extras) -> Vec<Part> {
    if extras.is_empty() {
        return parts;
    }
    let elements = common::answer::elements(extras, |s| crate::neutralize::neutralize(s).into_owned());
    let Some(last) = parts.last_mut() else {
        return parts;
    };
    let mut card: serde_json::Value = match last.msg_type {
        "text" => {
            let text = serde_json::from_str::<serde_json::Value>(&last.content)
                .ok()
                .and_then(|v| v.get("text").and_then(serde_json::Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            serde_json::from_str(&card(&text)).unwrap_or_default()
        }
        _ => serde_json::from_str(&last.content).unwrap_or_default(),
    };
    if let Some(body) = card.pointer_mut("/body/elements").and_then(serde_json::Value::as_array_mut) {
        body.extend(elements);
        *last = Part { msg_type: "interactive", content: card.to_string() };
    }
    parts
}

/// The card of a question FastGPT asks the user: its description, then one
/// button per option or a form (`common::question`).
pub fn question_card(question: &common::question::Question) -> Part {
    let card = common::question::card(question, &common::question::CardState::Open, |s| {
        crate::neutralize::neutralize(s).into_owned()
    });
    Part { msg_type: "interactive", content: card.to_string() }
}

/// The `element_id` of a streaming card's markdown element.
pub const ANSWER_ELEMENT: &str = "answer";

/// An answer as card-sized markdown chunks, for a streamed answer: the first
/// goes into the streaming card, the rest follow as further cards.
pub fn card_chunks(markdown: &str) -> Vec<String> {
    let text = crate::neutralize::neutralize(markdown.trim());
    let mut chunks = split(text.as_ref(), CARD_CONTENT_BUDGET - CARD_OVERHEAD);
    if chunks.is_empty() {
        chunks.push(String::new());
    }
    chunks
}

/// A card JSON 2.0 whose markdown element (`ANSWER_ELEMENT`) CardKit can
/// stream into; `streaming` false is the finished card.
pub fn streaming_card(markdown: &str, streaming: bool) -> String {
    let mut config = json!({ "update_multi": true, "streaming_mode": streaming });
    if streaming {
        // The chat list shows this instead of the partial text; Lark types
        // out each update quickly.
        config["summary"] = json!({ "content": "Answering..." });
        config["streaming_config"] = json!({ "print_frequency_ms": { "default": 30 }, "print_step": { "default": 2 }, "print_strategy": "fast" });
    }
    json!({
        "schema": "2.0",
        "config": config,
        "body": { "elements": [ { "tag": "markdown", "element_id": ANSWER_ELEMENT, "content": markdown } ] },
    })
    .to_string()
}

/// A streamed answer's card once finished: its text, the answer's extras
/// (sources, feedback buttons) below it, streaming off, and what the chat
/// list shows for it (`summary`). One full update carries all of it.
pub fn final_card(markdown: &str, summary: &str, extras: &common::answer::Extras) -> String {
    let mut card: serde_json::Value = json!({
        "schema": "2.0",
        "config": { "update_multi": true, "streaming_mode": false, "summary": { "content": summary } },
        "body": { "elements": [ { "tag": "markdown", "element_id": ANSWER_ELEMENT, "content": markdown } ] },
    });
    if let Some(elements) = card.pointer_mut("/body/elements").and_then(serde_json::Value::as_array_mut) {
        elements.extend(common::answer::elements(extras, |s| crate::neutralize::neutralize(s).into_owned()));
    }
    card.to_string()
}

/// Bytes the card adds around the markdown (measured on an empty card).
const CARD_OVERHEAD: usize = 128;

/// Does the text use Markdown that Lark would otherwise show as raw characters?
pub fn looks_like_markdown(text: &str) -> bool {
    text.contains("**")
        || text.contains("```")
        || text.contains('`')
        || text.contains("](")
        || text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with('#')
                || l.starts_with("- ")
                || l.starts_with("* ")
                || l.starts_with("> ")
                || l.starts_with('|')
                || l.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
}

/// Size of the text once escaped inside a JSON string (what counts against Lark's limit).
fn escaped_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// A unit that is kept whole when it fits: a paragraph or a fenced code block.
#[derive(Debug)]
struct Block {
    lines: Vec<String>,
    /// The opening fence (```lang) when this is a code block.
    fence: Option<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut fence: Option<String> = None;
    for line in text.lines() {
        let is_fence = line.trim_start().starts_with("```");
        match &fence {
            Some(_) => {
                cur.push(line.to_owned());
                if is_fence {
                    out.push(Block { lines: std::mem::take(&mut cur), fence: fence.take() });
                }
            }
            None if is_fence => {
                if !cur.is_empty() {
                    out.push(Block { lines: std::mem::take(&mut cur), fence: None });
                }
                cur.push(line.to_owned());
                fence = Some(line.trim_start().to_owned());
            }
            None if line.trim().is_empty() => {
                if !cur.is_empty() {
                    out.push(Block { lines: std::mem::take(&mut cur), fence: None });
                }
            }
            None => cur.push(line.to_owned()),
        }
    }
    if !cur.is_empty() {
        // An unclosed fence stays a code block to the end.
        out.push(Block { lines: cur, fence });
    }
    out
}

/// Splits into chunks whose escaped size is at most `budget`.
pub fn split(text: &str, budget: usize) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let push = |parts: &mut Vec<String>, cur: &mut String| {
        if !cur.trim().is_empty() {
            parts.push(std::mem::take(cur).trim_end().to_owned());
        }
        cur.clear();
    };
    // Sizes are kept as the text grows, not measured again: measuring the
    // part so far at each block made a long answer quadratic.
    let mut cur_len = 0;
    for block in blocks(text) {
        let joined = block.lines.join("\n");
        let joined_len = escaped_len(&joined);
        let sep = if cur.is_empty() { 0 } else { 4 }; // "\n\n" escaped
        if cur_len + sep + joined_len <= budget {
            if !cur.is_empty() {
                cur.push_str("\n\n");
            }
            cur.push_str(&joined);
            cur_len += sep + joined_len;
            continue;
        }
        push(&mut parts, &mut cur);
        (cur_len, cur) = (0, String::new());
        if joined_len <= budget {
            (cur_len, cur) = (joined_len, joined);
            continue;
        }
        // The block alone is too big: split it by lines, re-fencing code.
        let (open, close) = match &block.fence {
            Some(f) => (format!("{f}\n"), "\n```".to_owned()),
            None => (String::new(), String::new()),
        };
        let body: Vec<&str> = match &block.fence {
            Some(_) => {
                let inner = &block.lines[1..];
                let inner = if inner.last().is_some_and(|l| l.trim_start().starts_with("```")) {
                    &inner[..inner.len() - 1]
                } else {
                    inner
                };
                inner.iter().map(String::as_str).collect()
            }
            None => block.lines.iter().map(String::as_str).collect(),
        };
        let room = budget.saturating_sub(escaped_len(&open) + escaped_len(&close)).max(16);
        let mut piece = String::new();
        let mut piece_len = 0;
        let flush = |parts: &mut Vec<String>, piece: &mut String| {
            if !piece.is_empty() {
                parts.push(format!("{open}{}{close}", piece.trim_end_matches('\n')));
                piece.clear();
            }
        };
        for line in body {
            for segment in split_line(line, room.saturating_sub(2)) {
                let segment_len = escaped_len(segment) + 2; // and its "\n"
                if piece_len + segment_len > room {
                    flush(&mut parts, &mut piece);
                    piece_len = 0;
                }
                piece.push_str(segment);
                piece.push('\n');
                piece_len += segment_len;
            }
        }
        flush(&mut parts, &mut piece);
    }
    push(&mut parts, &mut cur);
    parts
}

/// Splits one line into pieces of at most `room` escaped bytes, on character
/// boundaries (preferring a space near the end).
fn split_line(line: &str, room: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while escaped_len(rest) > room {
        let mut used = 0;
        let mut cut = 0;
        for (i, c) in rest.char_indices() {
            let w = escaped_len(c.encode_utf8(&mut [0; 4]));
            if used + w > room {
                break;
            }
            used += w;
            cut = i + c.len_utf8();
        }
        if cut == 0 {
            break;
        }
        let at = rest[..cut].rfind(' ').filter(|&i| i > cut / 2).map(|i| i + 1).unwrap_or(cut);
        out.push(&rest[..at]);
        rest = &rest[at..];
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_card_carries_the_answer_its_extras_and_streaming_closed() {
        let extras = common::answer::Extras {
            sources: vec![common::answer::Source { name: "Leave <at id=all></at> policy".into(), url: None }],
            feedback: Some(Box::new(common::answer::FeedbackTarget {
                chat_id: "lb-abc".into(),
                data_id: "lb-01".into(),
                asked_by: None,
                lark_chat_id: "oc_1".into(),
            })),
        };
        let card: serde_json::Value =
            serde_json::from_str(&final_card("the answer", "the answer", &extras)).expect("json");
        assert_eq!(card.pointer("/config/streaming_mode"), Some(&serde_json::json!(false)));
        assert_eq!(card.pointer("/config/summary/content").and_then(|v| v.as_str()), Some("the answer"));
        let elements = card.pointer("/body/elements").and_then(|v| v.as_array()).expect("elements");
        assert_eq!(elements[0]["element_id"], ANSWER_ELEMENT, "the answer first, where drafts wrote");
        assert_eq!(elements[0]["content"], "the answer");
        assert_eq!(elements[1]["tag"], "collapsible_panel", "then the sources");
        assert_eq!(elements[2]["element_id"], "feedback", "then the buttons");
        assert!(!card.to_string().contains("<at id=all>"), "a source name mentions nobody: {card}");
        let plain: serde_json::Value =
            serde_json::from_str(&final_card("x", "x", &common::answer::Extras::default())).expect("json");
        assert_eq!(plain.pointer("/body/elements").and_then(|v| v.as_array()).map(Vec::len), Some(1));
    }

    fn markdown_of(part: &Part) -> String {
        let v: serde_json::Value = serde_json::from_str(&part.content).expect("json");
        v.pointer("/body/elements/0/content").and_then(|c| c.as_str()).expect("markdown element").to_owned()
    }

    #[test]
    fn plain_short_text_stays_text() {
        let parts = render("Hello there.");
        assert_eq!(parts, vec![Part { msg_type: "text", content: r#"{"text":"Hello there."}"#.into() }]);
    }

    #[test]
    fn markdown_becomes_a_card() {
        let md = "**Bold** and a list:\n\n- one\n- two\n\n```rust\nfn main() {}\n```";
        let parts = render(md);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].msg_type, "interactive");
        let v: serde_json::Value = serde_json::from_str(&parts[0].content).expect("json");
        assert_eq!(v["schema"], "2.0");
        assert_eq!(markdown_of(&parts[0]), md);
    }

    #[test]
    fn long_answers_split_on_paragraphs_in_order_within_budget() {
        let paragraphs: Vec<String> =
            (0..400).map(|i| format!("**Paragraph {i}**: {}", "lorem ipsum ".repeat(25).trim_end())).collect();
        let md = paragraphs.join("\n\n");
        assert!(md.len() > 120 * 1024);
        let parts = render(&md);
        assert!(parts.len() >= 5, "{}", parts.len());
        let mut joined = Vec::new();
        for p in &parts {
            assert!(p.content.len() <= 30 * 1024, "part of {} bytes", p.content.len());
            joined.push(markdown_of(p));
        }
        assert!(joined.join("\n\n") == md, "nothing lost, nothing reordered");
    }

    #[test]
    fn never_splits_inside_a_utf8_character_or_a_code_block() {
        let code = format!("```python\n{}```", "print('数据')\n".repeat(4000));
        let md = format!("Intro **text**\n\n{code}\n\nOutro");
        let parts = render_with_budget(&md, 8 * 1024);
        assert!(parts.len() > 3);
        for p in &parts {
            assert!(p.content.len() <= 8 * 1024, "{}", p.content.len());
            let m = markdown_of(p);
            assert_eq!(m.matches("```").count() % 2, 0, "every part has balanced fences: {m}");
        }
        let all: String = parts.iter().map(markdown_of).collect::<Vec<_>>().join("\n");
        assert_eq!(all.matches("print('数据')").count(), 4000);
    }

    #[test]
    fn a_single_huge_line_splits_on_char_boundaries() {
        let md = format!("**x** {}", "字".repeat(20_000));
        let parts = render_with_budget(&md, 4096);
        let total: usize = parts.iter().map(|p| markdown_of(p).matches('字').count()).sum();
        assert_eq!(total, 20_000);
        for p in &parts {
            assert!(p.content.len() <= 4096);
        }
    }

    proptest::proptest! {
        #[test]
        fn split_keeps_every_character_and_the_budget(s in "(\\PC{0,40}\n{0,2}){0,60}") {
            let budget = 300;
            for chunk in split(&s, budget) {
                proptest::prop_assert!(escaped_len(&chunk) <= budget + 16, "{}", escaped_len(&chunk));
            }
            let kept: usize = split(&s, budget).iter().map(|c| c.chars().filter(|c| !c.is_whitespace() && *c != '`').count()).sum();
            let want = s.chars().filter(|c| !c.is_whitespace() && *c != '`').count();
            proptest::prop_assert!(kept >= want);
        }
    }
}
