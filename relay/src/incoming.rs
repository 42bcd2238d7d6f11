//! What an incoming Lark message asks ([`Asked`]): its text with mentions
//! resolved, `Reset`, nothing (a bare @bot), images and files to pass on, or
//! something unreadable. (Not FastGPT's question cards: those are
//! `common::question`, and the one waiting per conversation `crate::questions`.)
//!
//! The bot's own mention placeholder (`@_user_1`, recognised by the bot's
//! open_id) is removed; other people's mentions become `@Name`. Rich text
//! (`post`) contributes its title and every text run of every line, in order,
//! links as their text, code blocks as their code, and its images. An image
//! or a file message is asked as it is, without text.

use common::lark::event::{Content, Mention, Message, PostContent};
use common::lark::resource::ResourceType;

use crate::attachments::Resource;

/// What a message asks: what the relay does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// Ask FastGPT this text.
    Ask(String),
    /// Ask FastGPT this text (possibly empty) with these images or files,
    /// once they are downloaded.
    WithResources { text: String, resources: Vec<Resource> },
    /// Start a new history for this conversation.
    Reset,
    /// No text left (a bare @bot, an empty post): answer with a hint.
    Empty,
    /// Not text, image or file (audio, video, sticker...): its `message_type`.
    NotText(String),
}

/// The exact commands that start a new history (case-sensitive, as FastGPT's
/// own channel accepts them).
pub const RESET_COMMANDS: [&str; 2] = ["Reset", "/reset"];

pub fn read(message: &Message, bot_open_id: Option<&str>) -> Result<Asked, serde_json::Error> {
    let text = match message.content()? {
        Content::Text { text } => resolve_mentions(&text, &message.mentions, bot_open_id),
        Content::Post(post) => {
            let text = post_text(&post, &message.mentions, bot_open_id);
            let images: Vec<Resource> = post
                .image_keys()
                .into_iter()
                .map(|key| Resource { key: key.to_owned(), kind: ResourceType::Image, file_name: None })
                .collect();
            if !images.is_empty() {
                return Ok(Asked::WithResources { text: text.trim().to_owned(), resources: images });
            }
            if text.trim().is_empty() && post.has_media() {
                return Ok(Asked::NotText("media".into()));
            }
            text
        }
        Content::Image { image_key } => {
            let image = Resource { key: image_key, kind: ResourceType::Image, file_name: None };
            return Ok(Asked::WithResources { text: String::new(), resources: vec![image] });
        }
        Content::File { file_key, file_name } => {
            let name = Some(file_name).filter(|n| !n.is_empty());
            let file = Resource { key: file_key, kind: ResourceType::File, file_name: name };
            return Ok(Asked::WithResources { text: String::new(), resources: vec![file] });
        }
        Content::Other { message_type } => return Ok(Asked::NotText(message_type)),
    };
    let text = text.trim();
    Ok(if RESET_COMMANDS.contains(&text) {
        Asked::Reset
    } else if text.is_empty() {
        Asked::Empty
    } else {
        Asked::Ask(text.to_owned())
    })
}

/// Is this mention the bot? By open_id when known; otherwise (bot info not
/// available) a mention with no person's name is taken to be the bot's.
fn is_bot(m: &Mention, bot_open_id: Option<&str>) -> bool {
    match bot_open_id {
        Some(bot) => m.id.open_id.as_deref() == Some(bot),
        None => false,
    }
}

fn resolve_mentions(text: &str, mentions: &[Mention], bot_open_id: Option<&str>) -> String {
    // Longest keys first, so `@_user_10` is not taken for `@_user_1` + "0".
    let mut ordered: Vec<&Mention> = mentions.iter().collect();
    ordered.sort_by_key(|m| std::cmp::Reverse(m.key.len()));
    let mut out = text.to_owned();
    for m in ordered {
        let replacement = if is_bot(m, bot_open_id) { String::new() } else { format!("@{}", m.name) };
        out = out.replace(&m.key, &replacement);
    }
    if bot_open_id.is_none() {
        // Without the bot's id, drop the leading placeholders left unresolved:
        // in a group the bot is the one mentioned first.
        out = strip_leading_placeholders(&out, mentions);
    }
    collapse_spaces(&out)
}

fn strip_leading_placeholders(text: &str, mentions: &[Mention]) -> String {
    let mut rest = text.trim_start();
    'again: loop {
        for m in mentions {
            let named = format!("@{}", m.name);
            if let Some(r) = rest.strip_prefix(named.as_str()) {
                rest = r.trim_start();
                continue 'again;
            }
        }
        return rest.to_owned();
    }
}

/// Removing a mention leaves double spaces: fold runs of spaces, keep newlines.
fn collapse_spaces(s: &str) -> String {
    s.lines()
        .map(|l| l.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn post_text(post: &PostContent, mentions: &[Mention], bot_open_id: Option<&str>) -> String {
    let mut lines = Vec::new();
    if !post.title.trim().is_empty() {
        lines.push(post.title.trim().to_owned());
    }
    for line in &post.content {
        let mut out = String::new();
        for run in line {
            match run.tag.as_str() {
                "text" | "code_block" | "md" => out.push_str(run.text.as_deref().unwrap_or("")),
                "a" => {
                    out.push_str(run.text.as_deref().filter(|t| !t.is_empty()).or(run.href.as_deref()).unwrap_or(""))
                }
                "at" => {
                    let key = run.user_id.as_deref().unwrap_or("");
                    match mentions.iter().find(|m| m.key == key) {
                        Some(m) if is_bot(m, bot_open_id) => {}
                        Some(m) => out.push_str(&format!("@{}", m.name)),
                        None => {
                            if let Some(n) = run.user_name.as_deref().filter(|n| !n.is_empty()) {
                                out.push_str(&format!("@{n}"));
                            }
                        }
                    }
                }
                _ => {} // img, media, emotion, hr: not text
            }
        }
        let out = out.trim();
        if !out.is_empty() {
            lines.push(out.to_owned());
        }
    }
    collapse_spaces(&lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::lark::event::UserIds;

    fn mention(key: &str, open_id: &str, name: &str) -> Mention {
        Mention {
            key: key.into(),
            id: UserIds { open_id: Some(open_id.into()), ..Default::default() },
            name: name.into(),
        }
    }

    fn msg(message_type: &str, content: &str, mentions: Vec<Mention>) -> Message {
        Message {
            message_id: "om_1".into(),
            root_id: None,
            parent_id: None,
            create_time: None,
            chat_id: "oc_1".into(),
            thread_id: None,
            chat_type: "group".into(),
            message_type: message_type.into(),
            content: content.into(),
            mentions,
        }
    }

    fn text(t: &str, mentions: Vec<Mention>) -> Message {
        msg("text", &serde_json::json!({ "text": t }).to_string(), mentions)
    }

    const BOT: Option<&str> = Some("ou_bot");

    #[test]
    fn removes_the_bots_mention_and_names_the_others() {
        let m = text(
            "@_user_1 ask @_user_2 about it",
            vec![mention("@_user_1", "ou_bot", "Bot"), mention("@_user_2", "ou_tom", "Tom")],
        );
        assert_eq!(read(&m, BOT).expect("reads"), Asked::Ask("ask @Tom about it".into()));
    }

    #[test]
    fn placeholder_ten_is_not_placeholder_one() {
        let mut mentions: Vec<Mention> =
            (1..=10).map(|i| mention(&format!("@_user_{i}"), &format!("ou_{i}"), &format!("P{i}"))).collect();
        mentions[0] = mention("@_user_1", "ou_bot", "Bot");
        let m = text("@_user_1 hi @_user_10", mentions);
        assert_eq!(read(&m, BOT).expect("reads"), Asked::Ask("hi @P10".into()));
    }

    #[test]
    fn a_bare_mention_is_empty() {
        let m = text("@_user_1  ", vec![mention("@_user_1", "ou_bot", "Bot")]);
        assert_eq!(read(&m, BOT).expect("reads"), Asked::Empty);
    }

    #[test]
    fn without_bot_info_the_leading_mention_is_dropped() {
        let m = text("@_user_1 hello", vec![mention("@_user_1", "ou_x", "Bot")]);
        assert_eq!(read(&m, None).expect("reads"), Asked::Ask("hello".into()));
    }

    #[test]
    fn reset_is_exact() {
        assert_eq!(read(&text("Reset", vec![]), BOT).expect("reads"), Asked::Reset);
        assert_eq!(read(&text(" /reset ", vec![]), BOT).expect("reads"), Asked::Reset);
        let m = text("@_user_1 Reset", vec![mention("@_user_1", "ou_bot", "Bot")]);
        assert_eq!(read(&m, BOT).expect("reads"), Asked::Reset);
        assert_eq!(read(&text("reset", vec![]), BOT).expect("reads"), Asked::Ask("reset".into()));
        assert_eq!(read(&text("Reset please", vec![]), BOT).expect("reads"), Asked::Ask("Reset please".into()));
    }

    #[test]
    fn post_sample_reads_all_text_runs_in_order() {
        let content =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/lark-samples/post_content.json"))
                .expect("sample");
        let m = msg("post", &content, vec![mention("@_user_1", "ou_bot", "Bot")]);
        let image = Resource {
            key: "img_47354fbc-a159-40ed-86ab-2ad0f1acb42g".into(),
            kind: ResourceType::Image,
            file_name: None,
        };
        assert_eq!(
            read(&m, BOT).expect("reads"),
            Asked::WithResources {
                text: "我是一个标题\n第一行 :超链接\n第二行:文本测试\nfunc main() int64 {\nreturn 0\n}".into(),
                resources: vec![image],
            },
            "the post's text is the question, its image (twice in the post) goes once"
        );
    }

    #[test]
    fn images_and_files_are_asked_as_they_are() {
        let m = msg("image", r#"{"image_key":"img_1"}"#, vec![]);
        let image = Resource { key: "img_1".into(), kind: ResourceType::Image, file_name: None };
        assert_eq!(read(&m, BOT).expect("reads"), Asked::WithResources { text: String::new(), resources: vec![image] });
        let m = msg("file", r#"{"file_key":"file_1","file_name":"report.pdf"}"#, vec![]);
        let file = Resource { key: "file_1".into(), kind: ResourceType::File, file_name: Some("report.pdf".into()) };
        assert_eq!(read(&m, BOT).expect("reads"), Asked::WithResources { text: String::new(), resources: vec![file] });
        let post = r#"{"title":"","content":[[{"tag":"img","image_key":"img_2"}]]}"#;
        let Asked::WithResources { text, resources } = read(&msg("post", post, vec![]), BOT).expect("reads") else {
            panic!("an image alone")
        };
        assert_eq!((text.as_str(), resources.len()), ("", 1));
    }

    #[test]
    fn what_cannot_be_read_is_named() {
        let m = msg("sticker", r#"{"file_key":"f"}"#, vec![]);
        assert_eq!(read(&m, BOT).expect("reads"), Asked::NotText("sticker".into()));
        let m = msg("audio", r#"{"file_key":"f","duration":2000}"#, vec![]);
        assert_eq!(read(&m, BOT).expect("reads"), Asked::NotText("audio".into()));
        let video_only = r#"{"title":"","content":[[{"tag":"media","file_key":"f","image_key":"i"}]]}"#;
        assert_eq!(read(&msg("post", video_only, vec![]), BOT).expect("reads"), Asked::NotText("media".into()));
    }

    #[test]
    fn bad_content_is_an_error() {
        assert!(read(&msg("text", "not json", vec![]), BOT).is_err());
    }
}
