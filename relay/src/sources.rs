//! The sources an answer quotes, and its inline citation marks.
//!
//! With `detail: true` FastGPT reports each workflow node's response: after
//! `data: [DONE]` as `event: flowResponses` when streamed, as `responseData`
//! in a whole answer (`projects/app/src/pages/api/v1/chat/completions.ts`).
//! A dataset search node's response holds `quoteList[]`, each quote
//! `{id, q, a, sourceName, sourceId, collectionId, datasetId, score}`
//! (`packages/global/core/dataset/type.d.ts`, `SearchDataResponseItemType`).
//! The answer's text may cite a quote inline as `[<quote id>](CITE)` (the
//! 24 hex digits of a Mongo ObjectId), which FastGPT's own chat UI turns into
//! a reference; FastGPT's publishing channels strip them. The card lists the
//! distinct source names (at most [`MAX_SOURCES`], http(s) ones as links)
//! and each mark becomes `[n]`, the number of its source, or goes.

use std::borrow::Cow;
use std::collections::HashMap;

use common::answer::{link_of, Source, MAX_SOURCES, MAX_SOURCE_NAME_CHARS};
use serde_json::Value;

/// The most quotes read from one answer's responses.
const MAX_QUOTES: usize = 500;
/// How deep the node responses are walked (child apps and loops nest them).
const MAX_DEPTH: usize = 8;

/// An answer's sources, and the source number of each quote id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sources {
    pub list: Vec<Source>,
    pub numbers: HashMap<String, usize>,
}

/// The sources quoted in `responses` (the nodes' responses: an array, or
/// anything holding `quoteList` arrays at any depth).
pub fn of(responses: Option<&Value>) -> Sources {
    let mut quotes = Vec::new();
    if let Some(r) = responses {
        collect(r, 0, &mut quotes);
    }
    let mut out = Sources::default();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for quote in quotes {
        let name = quote.get("sourceName").and_then(Value::as_str).map(str::trim).unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let name = common::question::clip(name, MAX_SOURCE_NAME_CHARS);
        let number = match by_name.get(&name) {
            Some(n) => Some(*n),
            None if out.list.len() < MAX_SOURCES => {
                let id = quote.get("sourceId").and_then(Value::as_str).unwrap_or_default();
                out.list.push(Source { url: link_of(&name, id), name: name.clone() });
                by_name.insert(name, out.list.len());
                Some(out.list.len())
            }
            None => None,
        };
        if let (Some(n), Some(id)) = (number, quote.get("id").and_then(Value::as_str)) {
            out.numbers.insert(id.to_owned(), n);
        }
    }
    out
}

fn collect<'a>(v: &'a Value, depth: usize, out: &mut Vec<&'a Value>) {
    if depth > MAX_DEPTH || out.len() >= MAX_QUOTES {
        return;
    }
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect(i, depth + 1, out)),
        Value::Object(map) => {
            for (key, value) in map {
                if key == "quoteList" {
                    if let Value::Array(quotes) = value {
                        out.extend(quotes.iter().take(MAX_QUOTES.saturating_sub(out.len())));
                    }
                } else if matches!(value, Value::Array(_) | Value::Object(_)) {
                    collect(value, depth + 1, out);
                }
            }
        }
        _ => {}
    }
}

const MARK_END: &str = "](CITE)";
const ID_LEN: usize = 24;

/// `text` with every `[<24 hex>](CITE)` mark replaced by `[n]` when its
/// quote has source `n` in `numbers`, removed otherwise.
pub fn cite<'a>(text: &'a str, numbers: &HashMap<String, usize>) -> Cow<'a, str> {
    if !text.contains(MARK_END) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK_END) {
        let before = &rest[..at];
        let id_start = before.len().checked_sub(ID_LEN + 1);
        let mark = id_start
            .filter(|&s| before.as_bytes()[s] == b'[')
            .map(|s| &before[s + 1..])
            .filter(|id| id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()));
        match (mark, id_start) {
            (Some(id), Some(s)) => {
                out.push_str(&before[..s]);
                if let Some(n) = numbers.get(id) {
                    out.push_str(&format!("[{n}]"));
                }
            }
            _ => {
                out.push_str(before);
                out.push_str(MARK_END);
            }
        }
        rest = &rest[at + MARK_END.len()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `text` without citation marks (what a draft shows before the sources are known).
pub fn without_marks(text: &str) -> Cow<'_, str> {
    cite(text, &HashMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "65f0c0ffee0000000000aa01";
    const B: &str = "65f0c0ffee0000000000bb02";

    fn responses() -> Value {
        json!([
            { "moduleName": "Dataset search", "moduleType": "datasetSearchNode", "quoteList": [
                { "id": A, "q": "How many days?", "a": "", "sourceName": "Leave policy.pdf", "sourceId": "f1", "collectionId": "c1", "datasetId": "d1", "score": [] },
                { "id": B, "q": "FAQ", "a": "", "sourceName": "https://hr.example.com/faq", "sourceId": "https://hr.example.com/faq", "collectionId": "c2", "datasetId": "d1", "score": [] },
                { "id": "65f0c0ffee0000000000cc03", "q": "more", "a": "", "sourceName": "Leave policy.pdf", "sourceId": "f1", "collectionId": "c1", "datasetId": "d1", "score": [] }
            ]},
            { "moduleName": "AI 对话", "moduleType": "chatNode", "runningTime": 1.2 }
        ])
    }

    #[test]
    fn distinct_sources_with_links() {
        let s = of(Some(&responses()));
        assert_eq!(s.list.len(), 2);
        assert_eq!(s.list[0], Source { name: "Leave policy.pdf".into(), url: None });
        assert_eq!(s.list[1].url.as_deref(), Some("https://hr.example.com/faq"));
        assert_eq!(s.numbers[A], 1);
        assert_eq!(s.numbers["65f0c0ffee0000000000cc03"], 1);
        assert_eq!(of(None), Sources::default());
    }

    #[test]
    fn at_most_five_sources() {
        let quotes: Vec<Value> = (0..9)
            .map(|i| json!({ "id": format!("65f0c0ffee00000000000{i:03}"), "sourceName": format!("doc {i}") }))
            .collect();
        let s = of(Some(&json!([{ "quoteList": quotes }])));
        assert_eq!(s.list.len(), MAX_SOURCES);
    }

    #[test]
    fn marks_become_numbers_or_go() {
        let s = of(Some(&responses()));
        let text = format!("Ten days[{A}](CITE), see the FAQ[{B}](CITE)[65f0c0ffee0000000000dd04](CITE). [link](CITE)");
        assert_eq!(cite(&text, &s.numbers), "Ten days[1], see the FAQ[2]. [link](CITE)");
        assert_eq!(without_marks(&format!("a[{A}](CITE)b")), "ab");
        assert!(matches!(without_marks("plain"), Cow::Borrowed("plain")));
        assert_eq!(without_marks("中文[](CITE)"), "中文[](CITE)", "not a mark");
    }
}
