//! What a final answer's card shows below the answer: the sources FastGPT
//! quoted (a collapsible panel) and the 👍 / 👎 buttons that rate the answer
//! in FastGPT's chat log (`updateUserFeedback`).
//!
//! A feedback button's callback value names the FastGPT turn it rates (chat
//! and dataId) and who may rate it: the asker in a group, and the card's
//! chat. Lark returns the value as the bridge wrote it, inside a callback the
//! ingress has verified; it is read back with every field's shape checked.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The marker in a feedback button's callback value.
pub const FEEDBACK_MARKER: &str = "lark_bridge_feedback";
/// The most sources a card lists.
pub const MAX_SOURCES: usize = 5;
/// The longest source name shown, in characters.
pub const MAX_SOURCE_NAME_CHARS: usize = 120;
/// The longest source link kept, in bytes.
pub const MAX_SOURCE_URL_BYTES: usize = 1_000;

/// The extras of an answer (empty for notices, apologies and old commands).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extras {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Box<FeedbackTarget>>,
}

impl Extras {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.feedback.is_none()
    }
}

/// One quoted source: its name, and a link when the name or id is http(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The FastGPT turn an answer is, and who may rate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackTarget {
    /// FastGPT's chatId.
    pub chat_id: String,
    /// The AI item's dataId (a resumed turn's is its question's).
    pub data_id: String,
    /// In a group, only the member who asked rates the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_by: Option<String>,
    /// The Lark chat of the card: a forwarded copy rates nothing.
    pub lark_chat_id: String,
}

/// 👍 or 👎.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Bad,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Bad => "bad",
        }
    }

    /// The toast of the asker's click.
    pub fn toast(self) -> &'static str {
        match self {
            Self::Good => "Thanks! Marked as helpful 👍",
            Self::Bad => "Thanks! Marked as not helpful 👎",
        }
    }

    /// What FastGPT's feedback field holds (`userGoodFeedback` / `userBadFeedback`).
    pub fn fastgpt_text(self) -> &'static str {
        match self {
            Self::Good => "yes",
            Self::Bad => "The Lark user marked this answer as not helpful",
        }
    }
}

/// A click on a feedback button, read back from its callback value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackClick {
    pub verdict: Verdict,
    pub target: FeedbackTarget,
}

/// The toast for a click by anyone but the asker (or on a forwarded copy).
pub const NOT_YOURS: &str = "Only the person who asked can rate this answer.";

/// A token of ours or Lark's: ids, never free text.
fn token(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| {
            (1..=96).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        })
        .map(str::to_owned)
}

impl FeedbackClick {
    /// Reads a callback value; `None` when it is not a feedback button of ours.
    pub fn read(value: &Value) -> Option<Self> {
        value.get(FEEDBACK_MARKER)?;
        let verdict = match value.get("v").and_then(Value::as_str)? {
            "good" => Verdict::Good,
            "bad" => Verdict::Bad,
            _ => return None,
        };
        let asked_by = match value.get("a") {
            None | Some(Value::Null) => None,
            Some(_) => Some(token(value, "a")?),
        };
        let target = FeedbackTarget {
            chat_id: token(value, "chat")?,
            data_id: token(value, "d")?,
            asked_by,
            lark_chat_id: token(value, "lc")?,
        };
        Some(Self { verdict, target })
    }

    /// Whether `operator`, in `chat` (the card's chat, as Lark says), may rate it.
    pub fn allowed(&self, operator: Option<&str>, chat: Option<&str>) -> bool {
        if chat.is_some_and(|c| c != self.target.lark_chat_id) {
            return false;
        }
        match &self.target.asked_by {
            Some(asker) => operator == Some(asker.as_str()),
            None => true,
        }
    }
}

/// The card elements of `extras`, after the answer's markdown. `escape`
/// makes a source name's markup inert.
pub fn elements(extras: &Extras, escape: impl Fn(&str) -> String) -> Vec<Value> {
    let mut out = Vec::new();
    if !extras.sources.is_empty() {
        let lines: Vec<String> = extras
            .sources
            .iter()
            .take(MAX_SOURCES)
            .enumerate()
            .map(|(i, s)| {
                let name = escape(&crate::question::clip(&s.name, MAX_SOURCE_NAME_CHARS)).replace(['[', ']'], "");
                match &s.url {
                    Some(url) => format!("{}. [{name}]({})", i + 1, url.replace(['(', ')', ' '], "")),
                    None => format!("{}. {name}", i + 1),
                }
            })
            .collect();
        out.push(json!({
            "tag": "collapsible_panel",
            "element_id": "sources",
            "expanded": false,
            "header": { "title": { "tag": "plain_text", "content": format!("Sources ({})", lines.len()) } },
            "elements": [ { "tag": "markdown", "content": lines.join("\n") } ],
        }));
    }
    if let Some(target) = &extras.feedback {
        let button = |verdict: Verdict, label: &str| {
            let mut value = json!({
                FEEDBACK_MARKER: 1,
                "v": verdict.as_str(),
                "chat": target.chat_id,
                "d": target.data_id,
                "lc": target.lark_chat_id,
            });
            if let Some(a) = &target.asked_by {
                value["a"] = json!(a);
            }
            json!({
                "tag": "button",
                "name": format!("lb_feedback_{}", verdict.as_str()),
                "text": { "tag": "plain_text", "content": label },
                "type": "default",
                "size": "small",
                "behaviors": [{ "type": "callback", "value": value }],
            })
        };
        out.push(json!({
            "tag": "column_set",
            "element_id": "feedback",
            "columns": [
                { "tag": "column", "width": "auto", "elements": [button(Verdict::Good, "👍")] },
                { "tag": "column", "width": "auto", "elements": [button(Verdict::Bad, "👎")] },
            ],
        }));
    }
    out
}

/// A source's link: its name or id when either is an http(s) URL of sane size.
pub fn link_of(name: &str, id: &str) -> Option<String> {
    [name, id]
        .into_iter()
        .map(str::trim)
        .find(|s| {
            (s.starts_with("https://") || s.starts_with("http://"))
                && s.len() <= MAX_SOURCE_URL_BYTES
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(asked_by: Option<&str>) -> FeedbackTarget {
        FeedbackTarget {
            chat_id: "lb-abc".into(),
            data_id: "lb-0123456789abcdef".into(),
            asked_by: asked_by.map(str::to_owned),
            lark_chat_id: "oc_1".into(),
        }
    }

    #[test]
    fn a_button_value_reads_back_and_checks_who_clicks() {
        let extras = Extras { sources: Vec::new(), feedback: Some(Box::new(target(Some("ou_ann")))) };
        let els = elements(&extras, str::to_owned);
        let value = &els[0]["columns"][1]["elements"][0]["behaviors"][0]["value"];
        let click = FeedbackClick::read(value).expect("ours");
        assert_eq!(click.verdict, Verdict::Bad);
        assert_eq!(click.target, target(Some("ou_ann")));
        assert!(click.allowed(Some("ou_ann"), Some("oc_1")));
        assert!(!click.allowed(Some("ou_ben"), Some("oc_1")), "another member");
        assert!(!click.allowed(Some("ou_ann"), Some("oc_2")), "a forwarded copy");
        let p2p = FeedbackClick { verdict: Verdict::Good, target: target(None) };
        assert!(p2p.allowed(Some("ou_any"), None));
    }

    #[test]
    fn hostile_values_are_not_ours() {
        for v in [
            json!({ FEEDBACK_MARKER: 1, "v": "meh", "chat": "c", "d": "d", "lc": "oc" }),
            json!({ FEEDBACK_MARKER: 1, "v": "good", "chat": "c d", "d": "d", "lc": "oc" }),
            json!({ FEEDBACK_MARKER: 1, "v": "good", "chat": "c", "d": "x".repeat(200), "lc": "oc" }),
            json!({ FEEDBACK_MARKER: 1, "v": "good", "chat": "c", "d": "d", "lc": "oc", "a": 5 }),
            json!({ "v": "good", "chat": "c", "d": "d", "lc": "oc" }),
        ] {
            assert_eq!(FeedbackClick::read(&v), None, "{v}");
        }
    }

    #[test]
    fn sources_are_listed_with_links() {
        let extras = Extras {
            sources: vec![
                Source { name: "Leave policy.pdf".into(), url: None },
                Source { name: "https://hr.example.com/faq".into(), url: link_of("https://hr.example.com/faq", "x") },
            ],
            feedback: None,
        };
        let els = elements(&extras, str::to_owned);
        let text = els[0]["elements"][0]["content"].as_str().unwrap_or_default();
        assert_eq!(text, "1. Leave policy.pdf\n2. [https://hr.example.com/faq](https://hr.example.com/faq)");
        assert_eq!(els[0]["tag"], "collapsible_panel");
        assert_eq!(link_of("javascript:alert(1)", "ftp://x"), None);
    }
}
