//! FastGPT's message content with images and files (its OpenAI-style content
//! array): `[{"type": "text", "text": ...}, {"type": "image_url",
//! "image_url": {"url": "data:image/png;base64,..."}}, {"type": "file_url",
//! "name": ..., "url": ...}]`. FastGPT turns `image_url` parts into images
//! for vision models and `file_url` parts into documents its file reading
//! fetches and parses; a question without them stays a plain string.

use base64::Engine as _;
use serde_json::{json, Value};

/// One image or file of a question.
#[derive(Clone, PartialEq, Eq)]
pub enum ContentPart {
    /// An image, inline: FastGPT passes a `data:` URL on to the model.
    Image { data_url: String },
    /// A document FastGPT fetches from `url` (a signed link to the ingress);
    /// `name` ends with the extension FastGPT picks its parser by.
    File { name: String, url: String },
}

impl ContentPart {
    /// An image part: `data:{mime};base64,{bytes}`.
    pub fn image(mime: &str, bytes: &[u8]) -> Self {
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        Self::Image { data_url: format!("data:{mime};base64,{data}") }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Self::Image { data_url } => json!({ "type": "image_url", "image_url": { "url": data_url } }),
            Self::File { name, url } => json!({ "type": "file_url", "name": name, "url": url }),
        }
    }
}

/// Logs and `Ask`'s `Debug` show no megabytes of base64, and no link (it
/// opens the file until it expires).
impl std::fmt::Debug for ContentPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Image { data_url } => {
                let mime = data_url.strip_prefix("data:").and_then(|u| u.split(';').next()).unwrap_or("?");
                write!(f, "Image({mime}, {} bytes of data URL)", data_url.len())
            }
            Self::File { name, .. } => write!(f, "File({name:?})"),
        }
    }
}

/// The `content` of the user's message: `text` alone when there are no
/// parts; else the array, with the text first (left out when empty: an image
/// alone is asked as it is, as FastGPT's own chat sends it).
pub fn message_content(text: &str, parts: &[ContentPart]) -> Value {
    if parts.is_empty() {
        return Value::String(text.to_owned());
    }
    let mut items = Vec::with_capacity(parts.len() + 1);
    if !text.is_empty() {
        items.push(json!({ "type": "text", "text": text }));
    }
    items.extend(parts.iter().map(ContentPart::to_json));
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_alone_stays_a_string() {
        assert_eq!(message_content("hello", &[]), json!("hello"));
    }

    #[test]
    fn parts_make_fastgpts_array() {
        let parts = [
            ContentPart::image("image/png", b"\x89PNG"),
            ContentPart::File { name: "report.pdf".into(), url: "https://h/files/x/report.pdf?exp=1&sig=2".into() },
        ];
        assert_eq!(
            message_content("what is this?", &parts),
            json!([
                { "type": "text", "text": "what is this?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw==" } },
                { "type": "file_url", "name": "report.pdf", "url": "https://h/files/x/report.pdf?exp=1&sig=2" },
            ])
        );
        assert_eq!(message_content("", &parts[..1]).as_array().map(Vec::len), Some(1), "no empty text part");
    }

    #[test]
    fn debug_shows_neither_the_data_nor_the_link() {
        let parts = [
            ContentPart::image("image/jpeg", &[7; 3000]),
            ContentPart::File { name: "a.pdf".into(), url: "https://h/files/x/a.pdf?exp=1&sig=secret".into() },
        ];
        let shown = format!("{parts:?}");
        assert!(shown.contains("image/jpeg") && shown.contains("a.pdf"), "{shown}");
        assert!(!shown.contains("BwcH") && !shown.contains("secret"), "{shown}");
    }
}
