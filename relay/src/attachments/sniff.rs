//! What a downloaded image or file is, from its bytes: an image FastGPT's
//! vision models take, a document FastGPT's file reading parses, or neither.
//!
//! The magic bytes decide (the `infer` crate), never the name the user gave
//! or the type Lark announced: a `.pdf` that is a zip is not a PDF. Text
//! formats have no magic bytes, so for them the name's extension says which
//! (text, CSV, Markdown, HTML) once the bytes look like text. The name FastGPT
//! gets carries the extension of what the bytes are, because FastGPT picks
//! its parser by the extension.

/// Images the vision models behind FastGPT read (as `data:` URLs).
const IMAGES: [&str; 5] = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"];

/// Binary documents FastGPT reads: MIME type (as `infer` names it) and extension.
const DOCUMENTS: [(&str, &str); 4] = [
    ("application/pdf", "pdf"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
];

/// Text documents FastGPT reads, by extension: extension, MIME type.
const TEXTS: [(&str, &str); 6] = [
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("markdown", "text/markdown"),
    ("csv", "text/csv"),
    ("html", "text/html"),
    ("htm", "text/html"),
];

/// How much of a file is looked at to tell text from binary.
const TEXT_PROBE: usize = 8 * 1024;
/// The longest file name handed on, in characters (extension included).
const MAX_NAME_CHARS: usize = 100;

/// What the bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An image, sent inline as a `data:` URL.
    Image { mime: &'static str },
    /// A document, stored and sent as a link; `ext` is the extension its
    /// name must end with.
    Document { mime: String, ext: &'static str },
    /// Neither: `what` says what it seems to be, for the user's notice.
    Unsupported { what: String },
}

/// Sniffs `bytes`; `name` is the user's file name, if any.
pub fn sniff(bytes: &[u8], name: Option<&str>) -> Sniffed {
    if bytes.is_empty() {
        return Sniffed::Unsupported { what: "an empty file".into() };
    }
    let ext = name.and_then(extension);
    if let Some(kind) = infer::get(bytes) {
        let mime = kind.mime_type();
        if let Some(image) = IMAGES.iter().find(|m| **m == mime) {
            return Sniffed::Image { mime: image };
        }
        if let Some((mime, ext)) = DOCUMENTS.iter().find(|(m, _)| *m == mime) {
            return Sniffed::Document { mime: (*mime).to_owned(), ext };
        }
        // Text formats infer knows by their start (`<html`, `<?xml`, `#!`)
        // are read as text below; anything else is what infer says.
        if kind.matcher_type() != infer::MatcherType::Text {
            return Sniffed::Unsupported { what: format!("a .{} file ({mime})", kind.extension()) };
        }
    }
    if !looks_like_text(bytes) {
        return Sniffed::Unsupported {
            what: ext.map_or_else(|| "a binary file".to_owned(), |e| format!("a .{e} file")),
        };
    }
    let utf8 = std::str::from_utf8(bytes).is_ok();
    let charset = |mime: &str| if utf8 { format!("{mime}; charset=utf-8") } else { mime.to_owned() };
    match ext.as_deref().and_then(|e| TEXTS.iter().find(|(x, _)| *x == e)) {
        Some((ext, mime)) => Sniffed::Document { mime: charset(mime), ext },
        // Source code, logs, JSON...: read as plain text, when it is UTF-8
        // (without a known extension nothing else says which encoding).
        None if utf8 => Sniffed::Document { mime: charset("text/plain"), ext: "txt" },
        None => Sniffed::Unsupported {
            what: ext.map_or_else(|| "a file of unknown type".to_owned(), |e| format!("a .{e} file")),
        },
    }
}

/// Text in any 8-bit encoding (UTF-8, GBK, Latin-1...) has no NUL byte.
fn looks_like_text(bytes: &[u8]) -> bool {
    !bytes[..bytes.len().min(TEXT_PROBE)].contains(&0)
}

/// The lower-case extension of a file name.
fn extension(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty() && ext.len() <= 10).then(|| ext.to_ascii_lowercase())
}

/// The name a document is stored and served under: the user's name made safe
/// (no path, no control or quoting characters, at most [`MAX_NAME_CHARS`]),
/// ending in `.{ext}` (appended when the name says otherwise).
pub fn safe_name(user_name: Option<&str>, ext: &str) -> String {
    let base = user_name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String =
        base.chars()
            .map(|c| {
                if c.is_control() || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|' | ';' | '%') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
    let cleaned = cleaned.trim_matches(|c: char| c.is_whitespace() || c == '.');
    let stem_and_ext = match extension(cleaned) {
        Some(have) if same_extension(&have, ext) => cleaned.to_owned(),
        _ if cleaned.is_empty() => format!("file.{ext}"),
        _ => format!("{cleaned}.{ext}"),
    };
    shorten(&stem_and_ext, ext)
}

fn same_extension(have: &str, want: &str) -> bool {
    have == want || matches!((have, want), ("markdown", "md") | ("md", "markdown") | ("htm", "html") | ("html", "htm"))
}

/// Cuts a long name's stem so that the whole fits, keeping the extension.
fn shorten(name: &str, ext: &str) -> String {
    if name.chars().count() <= MAX_NAME_CHARS {
        return name.to_owned();
    }
    let keep = MAX_NAME_CHARS.saturating_sub(ext.chars().count() + 1);
    let stem: String = name.chars().take(keep).collect();
    format!("{}.{ext}", stem.trim_end_matches(['.', ' ']))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest files of each kind, as their writers start them.
    pub(crate) mod samples {
        pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
        pub const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";
        pub const GIF: &[u8] = b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff!";
        pub const WEBP: &[u8] = b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0/\0\0\0\x10\x07\x10\x11\x11\x88\x88\xfe\x07\0";
        pub const BMP: &[u8] = b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0\x01\0\0\0\x01\0\0\0\x01\0\x18\0";
        pub const PDF: &[u8] = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n";
        pub const TIFF: &[u8] = b"II*\0\x08\0\0\0\0\0";
        pub const GZIP: &[u8] = b"\x1f\x8b\x08\0\0\0\0\0\0\x03\x03\0\0\0\0\0\0\0\0\0";
        pub const MP3: &[u8] = b"ID3\x03\0\0\0\0\0\x0f\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

        /// A zip whose first entry is `name` (what tells an Office file apart).
        pub fn zip_with(name: &str) -> Vec<u8> {
            // Local file header: signature, version, then 20 bytes up to the name's length.
            let mut z = b"PK\x03\x04\x14\0".to_vec();
            z.extend_from_slice(&[0; 20]);
            z.extend_from_slice(&(name.len() as u16).to_le_bytes());
            z.extend_from_slice(&[0, 0]);
            z.extend_from_slice(name.as_bytes());
            z.extend_from_slice(&[0; 64]);
            z
        }
    }
    use samples::*;

    #[test]
    fn images_by_their_magic_bytes() {
        for (bytes, mime) in
            [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp"), (BMP, "image/bmp")]
        {
            assert_eq!(sniff(bytes, None), Sniffed::Image { mime }, "{mime}");
            assert_eq!(sniff(bytes, Some("holiday.pdf")), Sniffed::Image { mime }, "the name does not decide");
        }
        assert!(matches!(sniff(TIFF, Some("scan.tiff")), Sniffed::Unsupported { .. }), "not for vision models");
    }

    #[test]
    fn documents_by_their_magic_bytes() {
        let doc = |bytes: &[u8], name| sniff(bytes, Some(name));
        assert_eq!(doc(PDF, "report"), Sniffed::Document { mime: "application/pdf".into(), ext: "pdf" });
        let docx = zip_with("word/document.xml");
        assert!(matches!(doc(&docx, "a.docx"), Sniffed::Document { ext: "docx", .. }));
        let xlsx = zip_with("xl/workbook.xml");
        assert!(matches!(doc(&xlsx, "a.bin"), Sniffed::Document { ext: "xlsx", .. }));
        let pptx = zip_with("ppt/presentation.xml");
        assert!(matches!(doc(&pptx, "a.pptx"), Sniffed::Document { ext: "pptx", .. }));
        let zip = zip_with("photos/1.jpg");
        assert!(matches!(doc(&zip, "report.pdf"), Sniffed::Unsupported { what } if what.contains("zip")));
        assert!(matches!(doc(GZIP, "a.gz"), Sniffed::Unsupported { .. }));
        assert!(matches!(doc(MP3, "song.mp3"), Sniffed::Unsupported { .. }));
        assert!(matches!(doc(b"", "empty.txt"), Sniffed::Unsupported { what } if what.contains("empty")));
    }

    #[test]
    fn text_by_its_extension_once_it_looks_like_text() {
        let text = |bytes: &[u8], name| sniff(bytes, Some(name));
        assert_eq!(
            text(b"a,b\n1,2\n", "data.CSV"),
            Sniffed::Document { mime: "text/csv; charset=utf-8".into(), ext: "csv" }
        );
        assert!(matches!(text(b"# Title\n", "notes.md"), Sniffed::Document { ext: "md", .. }));
        assert!(matches!(text(b"<!DOCTYPE html><html></html>", "page.htm"), Sniffed::Document { ext: "htm", .. }));
        assert!(matches!(text(b"<html><body>x</body></html>", "page"), Sniffed::Document { ext: "txt", .. }));
        // GBK text (not UTF-8): read by its extension, charset left to FastGPT.
        let gbk = b"\xc4\xe3\xba\xc3\xa3\xac\xca\xc0\xbd\xe7";
        assert_eq!(text(gbk, "hello.txt"), Sniffed::Document { mime: "text/plain".into(), ext: "txt" });
        assert!(matches!(text(gbk, "hello.dat"), Sniffed::Unsupported { .. }), "unknown encoding, unknown type");
        assert!(matches!(text(b"fn main() {}\n", "main.rs"), Sniffed::Document { ext: "txt", .. }));
        assert!(matches!(text(b"a\0b", "a.txt"), Sniffed::Unsupported { .. }), "a NUL: binary");
    }

    #[test]
    fn names_are_made_safe_and_carry_the_right_extension() {
        assert_eq!(safe_name(Some("report.pdf"), "pdf"), "report.pdf");
        assert_eq!(safe_name(Some("Report.PDF"), "pdf"), "Report.PDF");
        assert_eq!(safe_name(Some("report"), "pdf"), "report.pdf");
        assert_eq!(safe_name(Some("report.txt"), "pdf"), "report.txt.pdf", "the bytes decide the type");
        assert_eq!(safe_name(Some("../../etc/passwd"), "txt"), "passwd.txt");
        assert_eq!(safe_name(Some("C:\\Users\\me\\plan.docx"), "docx"), "plan.docx");
        assert_eq!(safe_name(Some("a\"b;c\r\n.csv"), "csv"), "a_b_c__.csv");
        assert_eq!(safe_name(Some("..."), "pdf"), "file.pdf");
        assert_eq!(safe_name(None, "pdf"), "file.pdf");
        assert_eq!(safe_name(Some("季度报告.xlsx"), "xlsx"), "季度报告.xlsx");
        assert_eq!(safe_name(Some("notes.markdown"), "md"), "notes.markdown");
        let long = safe_name(Some(&format!("{}.pdf", "x".repeat(300))), "pdf");
        assert_eq!(long.chars().count(), MAX_NAME_CHARS);
        assert!(long.ends_with(".pdf"));
    }
}
