//! What the bot tells a user whose image or file it cannot pass on: one
//! short notice naming the reason and what to do, instead of an answer.

/// Megabytes, for the user (`20 MB`).
fn megabytes(bytes: u64) -> String {
    let mb = bytes as f64 / (1024.0 * 1024.0);
    if mb >= 10.0 || mb.fract() == 0.0 {
        format!("{mb:.0} MB")
    } else {
        format!("{mb:.1} MB")
    }
}

/// What the bot reads, for the notices that refuse something.
const READS: &str = "I read PDF, Word (.docx), Excel (.xlsx), PowerPoint (.pptx), text, CSV, Markdown and HTML \
                     files, and PNG, JPEG, GIF, WebP and BMP images";

/// Over `relay.max_file_bytes` (for all of a message's images and files), or
/// over Lark's own limit.
pub fn too_big(limit: u64) -> String {
    format!(
        "Sorry, that is too big for me: I can take up to {} of images and files per message. Please send a \
         smaller file, or paste the part you are asking about.",
        megabytes(limit)
    )
}

/// Lark's 234043: stickers, cards and merged forwards have nothing to download.
pub const NOT_DOWNLOADABLE: &str = "Sorry, I cannot open this message: Lark does not let bots download stickers, \
                                    cards or forwarded chats. Please send the content as text, an image or a file.";

/// A type FastGPT does not read.
pub fn unsupported(name: Option<&str>, what: &str) -> String {
    let which = match name.filter(|n| !n.is_empty()) {
        Some(name) => format!("\"{name}\" ({what})"),
        None => what.to_owned(),
    };
    format!("Sorry, I cannot read {which}. {READS}.")
}

/// Files need `ingress.public_url` and `ingress.files_signing_key`.
pub const FILES_DISABLED: &str = "Sorry, this bot is not set up to read files yet (images work). Please paste the \
                                  text into the chat, or ask your administrator to enable files.";

/// The files bucket is at its size limit.
pub const STORE_FULL: &str = "Sorry, I cannot take more files right now: my file storage is full. Please try again \
                              later, or paste the text into the chat.";

/// Lark's download kept failing for all the attempts.
pub fn download_failed(attempts: u32) -> String {
    format!(
        "Sorry, I could not download your image or file from Lark after {attempts} attempts. Please send it again \
         in a few minutes."
    )
}

/// The file could not be stored for FastGPT (NATS unavailable) for all the attempts.
pub fn store_failed(attempts: u32) -> String {
    format!("Sorry, I could not keep your file for the assistant after {attempts} attempts. Please send it again in a few minutes.")
}

/// Lark refuses the bot the download (a missing scope): the operator must act.
pub const REFUSED: &str = "Sorry, I am not allowed to open images and files in this chat yet. Please tell your \
                           administrator.";

/// Messages that are not text, images or files (audio, video, stickers...),
/// by Lark's `message_type`.
pub fn not_readable(message_type: &str) -> String {
    let what = match message_type {
        "audio" => "voice messages",
        "media" | "video" => "videos",
        "sticker" => "stickers",
        "interactive" => "cards",
        "merge_forward" => "forwarded chats",
        "share_chat" | "share_user" => "shared chats or contacts",
        "location" => "locations",
        _ => "this kind of message",
    };
    format!("Sorry, I cannot read {what}. I read text, images and files: please type your question.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_the_reason() {
        assert!(too_big(20 * 1024 * 1024).contains("20 MB"));
        assert!(too_big(1536 * 1024).contains("1.5 MB"));
        assert!(unsupported(Some("song.mp3"), "a .mp3 file").contains("\"song.mp3\""));
        assert!(not_readable("audio").contains("voice messages"));
        assert!(not_readable("sticker").contains("stickers"));
        assert!(not_readable("something_new").contains("this kind of message"));
        assert!(download_failed(5).contains("5 attempts"));
    }
}
