//! What FastGPT writes is shown as it is, except what would act in Lark.
//!
//! An answer can echo the user, or follow a prompt injection: it must not be
//! able to @-mention a whole company or put a `javascript:` link in a card.
//! Two rules, on the text before it is rendered:
//!
//! - **Mentions**: Lark turns `<at user_id="all">` (text messages) and
//!   `<at id=all></at>` (card markdown) into real mentions. Any `<at` tag
//!   gets a zero-width space after its `<`: it reads the same and pings no one.
//! - **Links**: only `http` and `https` targets stay links. Any other target
//!   of a Markdown link `[text](target)` (`javascript:`, `file:`, `lark:`
//!   applinks, relative paths) or of an autolink `<scheme:...>` gets the same
//!   zero-width space, so it shows as text and is not clickable.
//!
//! An allow-list, not a deny-list: what is not known to be harmless is shown
//! as text.

use std::borrow::Cow;

/// Breaks a tag or a link without changing how the text reads.
const BREAK: char = '\u{200B}';

/// The answer with mention markup and non-http(s) links made inert.
pub fn neutralize(text: &str) -> Cow<'_, str> {
    if !text.contains('<') && !text.contains("](") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(i) = rest.find(['<', ']']) {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        let after = &at[1..];
        if at.starts_with('<') {
            out.push('<');
            if is_mention_tag(after) || is_foreign_autolink(after) {
                out.push(BREAK);
            }
        } else {
            out.push(']');
            if let Some(target) = after.strip_prefix('(') {
                if !is_web_link(target) {
                    out.push(BREAK);
                }
            }
        }
        rest = after;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `at` then a space, `>` or `/` (case-insensitive): Lark's mention tag.
fn is_mention_tag(after_lt: &str) -> bool {
    let b = after_lt.as_bytes();
    b.len() >= 2
        && b[..2].eq_ignore_ascii_case(b"at")
        && b.get(2).is_none_or(|c| c.is_ascii_whitespace() || *c == b'>' || *c == b'/')
}

/// `<scheme:...>` where the scheme is not http(s).
fn is_foreign_autolink(after_lt: &str) -> bool {
    scheme(after_lt).is_some_and(|s| !is_web_scheme(s))
}

/// Whether a link target (what follows `](`) is an absolute http(s) URL.
fn is_web_link(target: &str) -> bool {
    scheme(target.trim_start()).is_some_and(is_web_scheme)
}

fn is_web_scheme(s: &str) -> bool {
    s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")
}

/// The URL scheme `s` starts with (RFC 3986: a letter, then letters, digits,
/// `+`, `-`, `.`, then `:`), if any.
/// Reads only the scheme's own characters, so the cost per `<` or `](` is
/// bounded by the scheme, not by the rest of the answer.
fn scheme(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let end = bytes.iter().position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))?;
    (bytes[end] == b':').then_some(&s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shown(s: &str) -> String {
        s.replace(BREAK, "")
    }

    #[test]
    fn mentions_are_made_inert_but_read_the_same() {
        for hostile in [
            r#"Hello <at user_id="all">everyone</at>"#,
            "<at id=all></at> ping",
            "<AT ID=all></AT>",
            "<at\tuser_id=\"ou_1\">x</at>",
            "<at>",
        ] {
            let out = neutralize(hostile);
            assert_ne!(out, hostile, "{hostile}");
            assert_eq!(shown(&out), hostile, "reads the same");
            assert!(!out.to_ascii_lowercase().contains("<at"), "{out}");
        }
        for harmless in ["a <b> c", "<attention please>", "x < y and y > z", "<atom>", "2<3"] {
            assert_eq!(neutralize(harmless), harmless);
        }
    }

    #[test]
    fn only_http_links_stay_links() {
        for ok in ["[docs](https://example.com/a?b=c#d)", "[x]( http://example.com)", "[x](HTTPS://E.COM)"] {
            assert_eq!(neutralize(ok), ok);
        }
        for bad in [
            "[click](javascript:alert(1))",
            "[x](JavaScript:alert(1))",
            "[x](data:text/html;base64,PHNjcmlwdD4=)",
            "[x](file:///etc/passwd)",
            "[open](lark://applink.feishu.cn/client/chat/open)",
            "[x](/relative/path)",
            "[x](vbscript:msgbox)",
            "<javascript:alert(1)>",
        ] {
            let out = neutralize(bad);
            assert_ne!(out, bad, "{bad}");
            assert_eq!(shown(&out), bad);
        }
        assert_eq!(neutralize("<https://example.com>"), "<https://example.com>");
    }

    #[test]
    fn text_without_markup_is_not_copied() {
        assert!(matches!(neutralize("plain **bold** text"), Cow::Borrowed(_)));
    }

    proptest! {
        /// Whatever FastGPT writes: no live mention tag and no `](` followed
        /// by anything but an http(s) URL survives; the visible text is kept.
        #[test]
        fn no_mention_or_foreign_link_survives(s in r"(\[x\]\(|<at |<AT>|<at>|javascript:|https?://|[a-z<>\]\( :/])*") {
            let out = neutralize(&s);
            prop_assert_eq!(shown(&out), s.replace(BREAK, ""));
            let lower = out.to_ascii_lowercase();
            for tag in ["<at ", "<at>", "<at/", "<at\t"] {
                prop_assert!(!lower.contains(tag), "{}", out);
            }
            for (i, _) in out.match_indices("](") {
                prop_assert!(is_web_link(&out[i + 2..]), "{}", out);
            }
        }
    }
}
