//! Images and files from local paths, sent as a Lark user sends them: the
//! bytes are uploaded to the fake Lark (`POST /_sandbox/resources/{message_id}/{key}`)
//! under a fresh `image_key` or `file_key` of a fresh message, which is then
//! pushed to the bridge as an `image` message (`{"image_key"}`) or a `file`
//! message (`{"file_key", "file_name"}`), like any other message. The bridge
//! downloads the resource from the fake Lark, and the fake FastGPT's echo says
//! what reached it ("Received: image image/png, N bytes").
//!
//! What cannot be sent is refused before anything is uploaded, with the
//! reason: no such path, a path that cannot be read, a directory, an empty
//! file (Lark sends none), or one over 100 MB (Lark serves a bot nothing
//! larger: its code 234037).

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt as _;

use crate::lark_events::random_hex;

/// The largest image or file Lark lets a bot download (`common::config::MAX_FILE_BYTES`).
pub const LARK_MAX_BYTES: u64 = common::config::MAX_FILE_BYTES;

/// The two kinds of message that carry a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachmentKind {
    /// An image message (`/image PATH`).
    Image,
    /// A file message (`/file PATH`).
    File,
}

impl AttachmentKind {
    /// The message's `message_type`, which is also the resource's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::File => "file",
        }
    }
}

/// An image or a file read from disk, ready to be sent.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub kind: AttachmentKind,
    /// The file's name (a file message carries it; an image message does not).
    pub name: String,
    /// The whole file (shared, not copied, by the upload).
    pub bytes: bytes::Bytes,
}

impl Attachment {
    /// Reads `path` (as typed: `~/` is the home folder, and the quotes or
    /// backslashes a terminal adds to a dropped path are taken off). Refuses,
    /// with the reason, what Lark would not send or a bot could not download.
    pub async fn read(kind: AttachmentKind, path: &str) -> anyhow::Result<Self> {
        let path = typed_path(path);
        let shown = path.display();
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("no such file: {shown}"),
            Err(e) => bail!("cannot read {shown}: {e}"),
        };
        if meta.is_dir() {
            bail!("{shown} is a directory: /{} sends one file", kind.as_str());
        }
        if meta.len() > LARK_MAX_BYTES {
            bail!(
                "{shown} is {} ({} bytes), over Lark's limit of 100 MB: Lark lets a bot download no image \
                 or file that large (its code 234037), so it is not uploaded",
                human_bytes(meta.len()),
                meta.len()
            );
        }
        if meta.len() == 0 {
            bail!("{shown} is empty: Lark sends no empty {}", kind.as_str());
        }
        let file = tokio::fs::File::open(&path).await.map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        // Whatever the file grew to since: never past the limit.
        file.take(LARK_MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
        if bytes.len() as u64 > LARK_MAX_BYTES {
            bail!("{shown} grew over Lark's limit of 100 MB while it was read: it is not uploaded");
        }
        let name = path.file_name().map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
        Ok(Self { kind, name, bytes: bytes.into() })
    }

    /// A fresh key in Lark's style: `img_v3_...` or `file_v3_...`.
    pub fn new_key(&self) -> String {
        match self.kind {
            AttachmentKind::Image => format!("img_v3_{}", random_hex(12)),
            AttachmentKind::File => format!("file_v3_{}", random_hex(12)),
        }
    }

    /// The message's content, as Lark sends it, for the resource `key`.
    pub fn content(&self, key: &str) -> Value {
        match self.kind {
            AttachmentKind::Image => json!({ "image_key": key }),
            AttachmentKind::File => json!({ "file_key": key, "file_name": self.name }),
        }
    }

    /// `image shot.png, 1.2 MB`.
    pub fn describe(&self) -> String {
        format!("{} {}, {}", self.kind.as_str(), self.name, human_bytes(self.bytes.len() as u64))
    }
}

/// A path as typed into the chat: surrounding quotes off (`'/a b.png'`, as
/// a terminal pastes a dropped file), `\ ` for a space, `~/` for the home folder.
fn typed_path(typed: &str) -> PathBuf {
    let typed = typed.trim();
    let unquoted = ['\'', '"']
        .iter()
        .find_map(|&q| typed.strip_prefix(q).and_then(|t| t.strip_suffix(q)).filter(|_| typed.len() >= 2));
    let path = match unquoted {
        Some(inner) => inner.to_owned(),
        None => unescape(typed),
    };
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// `a\ b` as `a b`: the backslashes a shell would take off.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next)) if matches!(next, ' ' | '\\' | '\'' | '"' | '(' | ')' | '&') => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// `67 bytes`, `12.3 KB`, `1.2 MB` (of 1024).
pub fn human_bytes(n: u64) -> String {
    const KB: f64 = 1024.0;
    let f = n as f64;
    if n < 1024 {
        format!("{n} bytes")
    } else if f < KB * KB {
        format!("{:.1} KB", f / KB)
    } else {
        format!("{:.1} MB", f / (KB * KB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_paths_lose_what_a_terminal_adds() {
        assert_eq!(typed_path("'/tmp/a b.png'"), PathBuf::from("/tmp/a b.png"));
        assert_eq!(typed_path("\"/tmp/a b.png\""), PathBuf::from("/tmp/a b.png"));
        assert_eq!(typed_path("/tmp/a\\ b\\(1\\).png"), PathBuf::from("/tmp/a b(1).png"));
        assert_eq!(typed_path("  report.pdf "), PathBuf::from("report.pdf"));
        assert_eq!(typed_path("'"), PathBuf::from("'"));
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(typed_path("~/x.pdf"), Path::new(&home).join("x.pdf"));
        }
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(human_bytes(67), "67 bytes");
        assert_eq!(human_bytes(2048), "2.0 KB");
        assert_eq!(human_bytes(LARK_MAX_BYTES + 1), "100.0 MB");
        assert_eq!(human_bytes(150 * 1024 * 1024), "150.0 MB");
    }

    #[tokio::test]
    async fn what_lark_would_not_send_is_refused_before_any_upload() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let err = |r: anyhow::Result<Attachment>| format!("{:#}", r.expect_err("refused"));
        let missing = dir.path().join("missing.png");
        let shown = err(Attachment::read(AttachmentKind::Image, &missing.to_string_lossy()).await);
        assert_eq!(shown, format!("no such file: {}", missing.display()));
        let shown = err(Attachment::read(AttachmentKind::File, &dir.path().to_string_lossy()).await);
        assert!(shown.ends_with("is a directory: /file sends one file"), "{shown}");
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, b"").expect("write");
        let shown = err(Attachment::read(AttachmentKind::File, &empty.to_string_lossy()).await);
        assert!(shown.ends_with("is empty: Lark sends no empty file"), "{shown}");
        // Sparse: nothing written, only its length set.
        let big = dir.path().join("big.bin");
        std::fs::File::create(&big).and_then(|f| f.set_len(LARK_MAX_BYTES + 1)).expect("a sparse file");
        let shown = err(Attachment::read(AttachmentKind::File, &big.to_string_lossy()).await);
        assert!(shown.contains("is 100.0 MB (104857601 bytes), over Lark's limit of 100 MB"), "{shown}");
        assert!(shown.contains("234037"), "{shown}");

        let pdf = dir.path().join("My report.pdf");
        std::fs::write(&pdf, b"%PDF-1.4\n").expect("write");
        let typed = format!("'{}'", pdf.display());
        let file = Attachment::read(AttachmentKind::File, &typed).await.expect("read");
        assert_eq!((file.name.as_str(), file.bytes.len()), ("My report.pdf", 9));
        assert_eq!(file.describe(), "file My report.pdf, 9 bytes");
        let key = file.new_key();
        assert!(key.starts_with("file_v3_"), "{key}");
        assert_eq!(file.content(&key), json!({ "file_key": key, "file_name": "My report.pdf" }));
        let image = Attachment { kind: AttachmentKind::Image, ..file };
        assert_eq!(image.content("img_1"), json!({ "image_key": "img_1" }));
    }
}
