//! Markdown for a terminal: the bot's cards and rich text are Markdown,
//! which a terminal shows as marks unless drawn (headings, lists, code,
//! tables with aligned columns, even with wide characters).

const BOLD: &str = "\x1b[1m";
const NO_BOLD: &str = "\x1b[22m";
const CODE: &str = "\x1b[36m";
const NO_CODE: &str = "\x1b[39m";

/// Markdown as a terminal can show it: headings underlined, list bullets,
/// code blocks framed, tables drawn with aligned columns, links as
/// `text (url)`. Emphasis and inline code keep their Markdown marks in plain
/// mode; with `color` they become ANSI bold and colour instead.
pub fn render_markdown(markdown: &str, color: bool) -> String {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let trimmed = line.trim_start();
        if let Some(fence) = fence_of(trimmed) {
            let lang = trimmed[fence.len()..].trim();
            out.push(if lang.is_empty() { "┌──".to_owned() } else { format!("┌── {lang}") });
            i += 1;
            while i < lines.len() && !lines[i].trim().starts_with(fence) {
                let code = lines[i].trim_end();
                out.push(if color { format!("│ {CODE}{code}{NO_CODE}") } else { format!("│ {code}") });
                i += 1;
            }
            out.push("└──".to_owned());
            i += 1;
            continue;
        }
        if trimmed.starts_with('|') && lines.get(i + 1).is_some_and(|l| is_table_separator(l)) {
            let start = i;
            i += 2;
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                i += 1;
            }
            out.extend(render_table(&lines[start..i], color));
            continue;
        }
        i += 1;
        if trimmed.is_empty() {
            if out.last().is_some_and(|l| !l.is_empty()) {
                out.push(String::new());
            }
            continue;
        }
        if let Some((level, text)) = heading_of(trimmed) {
            let text = inline(text, color);
            let width = display_width(&text);
            out.push(if color { format!("{BOLD}{text}{NO_BOLD}") } else { text });
            out.push((if level == 1 { "═" } else { "─" }).repeat(width.max(3)));
            continue;
        }
        if is_rule(trimmed) {
            out.push("─".repeat(40));
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix("> ").or_else(|| trimmed.strip_prefix('>')) {
            out.push(format!("{}▎ {}", " ".repeat(indent), inline(rest, color)));
            continue;
        }
        if let Some(rest) = ["- ", "* ", "+ "].iter().find_map(|p| trimmed.strip_prefix(p)) {
            let level = indent / 2;
            let bullet = match level {
                0 => "•",
                1 => "◦",
                _ => "▪",
            };
            let rest = match rest
                .strip_prefix("[ ] ")
                .map(|r| ("☐", r))
                .or_else(|| rest.strip_prefix("[x] ").or_else(|| rest.strip_prefix("[X] ")).map(|r| ("☑", r)))
            {
                Some((check, r)) => format!("{check} {}", inline(r, color)),
                None => inline(rest, color),
            };
            out.push(format!("{}{bullet} {rest}", "  ".repeat(level + 1)));
            continue;
        }
        out.push(format!("{}{}", " ".repeat(indent), inline(trimmed, color)));
    }
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out.join("\n")
}

fn fence_of(line: &str) -> Option<&'static str> {
    ["```", "~~~"].into_iter().find(|f| line.starts_with(f))
}

fn heading_of(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let rest = &line[level..];
    ((1..=6).contains(&level) && (rest.is_empty() || rest.starts_with(' ')))
        .then(|| (level, rest.trim().trim_end_matches('#').trim_end()))
}

fn is_rule(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3 && ['-', '*', '_'].iter().any(|&m| compact.chars().all(|c| c == m))
}

fn is_table_separator(line: &str) -> bool {
    let cells = table_cells(line);
    line.trim_start().starts_with('|')
        && !cells.is_empty()
        && cells.iter().all(|c| {
            let c = c.trim();
            c.contains('-') && c.chars().all(|ch| matches!(ch, '-' | ':' | ' '))
        })
}

fn table_cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix('|').unwrap_or(line);
    let line = line.strip_suffix('|').unwrap_or(line);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            c => cell.push(c),
        }
    }
    cells.push(cell.trim().to_owned());
    cells
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Center,
    Right,
}

fn render_table(lines: &[&str], color: bool) -> Vec<String> {
    let aligns: Vec<Align> = table_cells(lines[1])
        .iter()
        .map(|c| match (c.starts_with(':'), c.ends_with(':')) {
            (true, true) => Align::Center,
            (false, true) => Align::Right,
            _ => Align::Left,
        })
        .collect();
    let rows: Vec<Vec<String>> = std::iter::once(lines[0])
        .chain(lines[2..].iter().copied())
        .map(|l| table_cells(l).iter().map(|c| inline(c, color)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| display_width(s)).max().unwrap_or(0).max(1))
        .collect();
    let rule = |left: &str, mid: &str, right: &str| {
        let segments: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{left}{}{right}", segments.join(mid))
    };
    let row = |cells: &Vec<String>, bold: bool| {
        let mut s = String::from("│");
        for (c, width) in widths.iter().enumerate() {
            let text = cells.get(c).map(String::as_str).unwrap_or_default();
            let pad = width - display_width(text);
            let (before, after) = match aligns.get(c).copied().unwrap_or(Align::Left) {
                Align::Left => (0, pad),
                Align::Right => (pad, 0),
                Align::Center => (pad / 2, pad - pad / 2),
            };
            let text = if bold && color { format!("{BOLD}{text}{NO_BOLD}") } else { text.to_owned() };
            s.push_str(&format!(" {}{text}{} │", " ".repeat(before), " ".repeat(after)));
        }
        s
    };
    let mut out = vec![rule("┌", "┬", "┐"), row(&rows[0], true), rule("├", "┼", "┤")];
    out.extend(rows[1..].iter().map(|r| row(r, false)));
    out.push(rule("└", "┴", "┘"));
    out
}

/// Inline Markdown: `**bold**` and `` `code` `` (ANSI with `color`, kept as is
/// without), links as `text (url)`, images as `[image: alt]`.
fn inline(text: &str, color: bool) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after.find('`') {
                let code = &after[..end];
                if color {
                    out.push_str(&format!("{CODE}{code}{NO_CODE}"));
                } else {
                    out.push_str(&format!("`{code}`"));
                }
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**").or_else(|| rest.strip_prefix("__")) {
            let mark = &rest[..2];
            if let Some(end) = after.find(mark).filter(|&e| e > 0) {
                let inner = inline(&after[..end], color);
                if color {
                    out.push_str(&format!("{BOLD}{inner}{NO_BOLD}"));
                } else {
                    out.push_str(&format!("{mark}{inner}{mark}"));
                }
                rest = &after[end + 2..];
                continue;
            }
        }
        let image = rest.starts_with("![");
        if image || rest.starts_with('[') {
            let open = if image { 2 } else { 1 };
            if let Some((label, url, len)) = link_at(&rest[open..]) {
                if image {
                    out.push_str(&format!("[image: {label}]"));
                } else if label == url {
                    out.push_str(url);
                } else {
                    out.push_str(&format!("{} ({url})", inline(label, color)));
                }
                rest = &rest[open + len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `label](url)` at the start of `s`: the label, the url and the length consumed.
fn link_at(s: &str) -> Option<(&str, &str, usize)> {
    let close = s.find("](")?;
    let label = &s[..close];
    if label.contains('[') {
        return None;
    }
    let after = &s[close + 2..];
    let end = after.find(')')?;
    Some((label, after[..end].trim(), close + 2 + end + 1))
}

/// Columns a string takes in a terminal: ANSI escapes take none, East Asian
/// wide characters (CJK, Hangul, full-width forms, most emoji) take two.
pub fn display_width(s: &str) -> usize {
    let mut width = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        width += char_width(c);
    }
    width
}

fn char_width(c: char) -> usize {
    let cp = c as u32;
    if c.is_control() || matches!(cp, 0x300..=0x36F | 0x200B..=0x200F | 0xFE00..=0xFE0F) {
        return 0;
    }
    let wide = matches!(
        cp,
        0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x3FFFD
    );
    if wide {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_legible_in_plain_text() {
        let md = "## Markdown\n\n**Bold answer** for turn 2.\n\n- first item\n- second item\n  - nested item\n\n\
                  ```rust\nfn main() {}\n```\n\n| key | value |\n| --- | ---: |\n| turn | 2 |\n| fake | yes |\n\n\
                  See [the docs](https://example.com) and `code`.\n> quoted\n\n---\n";
        let shown = render_markdown(md, false);
        let expected = "\
Markdown
────────

**Bold answer** for turn 2.

  • first item
  • second item
    ◦ nested item

┌── rust
│ fn main() {}
└──

┌──────┬───────┐
│ key  │ value │
├──────┼───────┤
│ turn │     2 │
│ fake │   yes │
└──────┴───────┘

See the docs (https://example.com) and `code`.
▎ quoted

────────────────────────────────────────";
        assert_eq!(shown, expected);
    }

    #[test]
    fn color_replaces_marks_and_keeps_columns_aligned() {
        let shown = render_markdown("# T\n\n| a | b |\n|---|---|\n| **x** | `y` |\n", true);
        assert!(shown.contains(&format!("{BOLD}x{NO_BOLD}")), "{shown}");
        assert!(!shown.contains("**"), "{shown}");
        let widths: Vec<usize> = shown.lines().filter(|l| l.starts_with('│')).map(display_width).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{shown}");
        assert!(shown.lines().nth(1).is_some_and(|l| l.starts_with('═')), "{shown}");
    }

    #[test]
    fn wide_characters_and_unclosed_marks() {
        assert_eq!(display_width("中文ab"), 6);
        let shown = render_markdown("| 名称 | v |\n| - | - |\n| 值 | 1 |", false);
        let widths: Vec<usize> = shown.lines().map(display_width).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{shown}");
        assert_eq!(render_markdown("a ** b ` c [d", false), "a ** b ` c [d");
        assert_eq!(render_markdown("| not a table", false), "| not a table");
        assert_eq!(render_markdown("```\nunclosed", false), "┌──\n│ unclosed\n└──");
    }
}
