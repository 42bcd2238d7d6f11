//! The hints the echo takes from a question (see the module documentation
//! of [`super`]), and how an answer is cut into deltas and paced.

use std::time::Duration;

use super::{interactive, ArrayStyle, NodeKind, Wrapper};

/// How the fake paces the deltas of an answer without a `stream:NxD` hint.
const DEFAULT_EVERY: Duration = Duration::from_millis(15);
/// Words per delta without a hint.
const DEFAULT_WORDS: usize = 3;
/// At most this many deltas without a hint.
const DEFAULT_MAX_DELTAS: usize = 50;

/// The hints the echo takes from the question: see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Hints {
    /// `stream:NxD`: `N` deltas, `D` apart.
    pace: Option<(usize, Duration)>,
    /// `stream-long:BYTES`.
    pub(super) long_bytes: Option<usize>,
    /// `runaway:BYTES`.
    pub(super) runaway_bytes: Option<usize>,
    /// `select:`, `form:` and their wrapped variants: an interactive app.
    pub(super) app: Option<(NodeKind, Wrapper)>,
    /// `array:STYLE`.
    pub(super) array_style: Option<ArrayStyle>,
    /// `sources`: the answer quotes a knowledge base (see [`with_sources`]).
    pub(super) sources: bool,
}

impl Hints {
    pub(super) fn of(question: &str) -> Self {
        let mut hints = Hints::default();
        for raw in question.split_whitespace() {
            let word = raw.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            if let Some(app) = interactive::app_of_hint(raw) {
                hints.app = Some(app);
            }
            if let Some(style) = interactive::array_style_of_hint(word) {
                hints.array_style = Some(style);
            }
            if let Some(bytes) = word.strip_prefix("runaway:").and_then(|b| b.parse().ok()) {
                hints.runaway_bytes = Some(bytes);
            }
            if word == "sources" {
                hints.sources = true;
            }
            if let Some(bytes) = word.strip_prefix("stream-long:").and_then(|b| b.parse().ok()) {
                hints.long_bytes = Some(bytes);
            } else if let Some((n, every)) = word.strip_prefix("stream:").and_then(|p| p.split_once('x')) {
                let every = match every.strip_suffix("ms") {
                    Some(ms) => ms.parse().ok().map(Duration::from_millis),
                    None => every.strip_suffix('s').and_then(|s| s.parse().ok()).map(Duration::from_secs),
                };
                if let (Ok(n), Some(every)) = (n.parse::<usize>(), every) {
                    hints.pace = Some((n.max(1), every));
                }
            }
        }
        hints
    }
}

/// Deltas of [`DEFAULT_WORDS`] words (each with the whitespace after it), or
/// [`DEFAULT_MAX_DELTAS`] even parts when that would be more.
fn split_default(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            words.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        words.push(&text[start..]);
    }
    if words.len().div_ceil(DEFAULT_WORDS) > DEFAULT_MAX_DELTAS {
        return split_even(text, DEFAULT_MAX_DELTAS);
    }
    words.chunks(DEFAULT_WORDS).map(|w| w.concat()).collect()
}

/// `text` in `n` parts of about the same number of characters (fewer parts
/// when it has fewer characters); none for an empty text.
fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.min(chars.len());
    (0..n).map(|i| chars[i * chars.len() / n..(i + 1) * chars.len() / n].iter().collect()).collect()
}

/// The deltas of `content` and their pace: the `stream:NxD` hint, or the default.
pub(super) fn paced(hints: &Hints, content: &str) -> (Vec<String>, Duration) {
    match hints.pace {
        Some((n, every)) => (split_even(content, n), every),
        None => (split_default(content), DEFAULT_EVERY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_and_splits() {
        let hints = Hints::of("a stream:40x100ms, b stream-long:20000.");
        assert_eq!(hints.pace, Some((40, Duration::from_millis(100))));
        assert_eq!(hints.long_bytes, Some(20000));
        assert_eq!(Hints::of("stream:3x2s").pace, Some((3, Duration::from_secs(2))));
        assert_eq!(Hints::of("stream:x stream:3 streaming stream-long:"), Hints::default());
        assert_eq!(split_even("中文ab", 3), ["中", "文", "ab"]);
        assert_eq!(split_even("ab", 5), ["a", "b"]);
        assert!(split_even("", 3).is_empty());
        assert_eq!(split_default("  a b\n\nc d "), ["  a b\n\n", "c d "]);
        let long = "word ".repeat(1000);
        let parts = split_default(&long);
        assert_eq!(parts.len(), DEFAULT_MAX_DELTAS);
        assert_eq!(parts.concat(), long);
    }
}
