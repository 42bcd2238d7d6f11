//! What the fake FastGPT makes of a question's images and files, so a test
//! (or a sandbox user) sees the whole path: the echo says what it received.
//!
//! FastGPT takes the user's content as an array of parts (`text`,
//! `image_url`, `file_url`). An `image_url` is a `data:` URL here, decoded to
//! count its bytes; a `file_url` is fetched as FastGPT's file reading does
//! (one GET of the URL, the type from `Content-Type`), and reported with
//! what came back, or with the error: a test then knows the link worked,
//! and what it served. Unlike FastGPT, the fake fetches loopback addresses
//! (everything runs on 127.0.0.1 in the tests).

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

/// The parts of the last user message's content, when it is an array.
fn parts(body: &Value) -> Vec<&Value> {
    let messages = body.get("messages").and_then(Value::as_array);
    let last = messages.and_then(|m| m.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")));
    match last.and_then(|m| m.get("content")) {
        Some(Value::Array(parts)) => parts.iter().collect(),
        _ => Vec::new(),
    }
}

/// Whether the question has images or files (then it needs no text).
pub(super) fn has_attachments(body: &Value) -> bool {
    parts(body).iter().any(|p| matches!(p.get("type").and_then(Value::as_str), Some("image_url" | "file_url")))
}

/// `"\n\nReceived: image image/png, 1234 bytes; file \"a.pdf\" application/pdf, 5678 bytes"`,
/// or nothing for a question without images and files.
pub(super) async fn received(body: &Value) -> String {
    let mut seen = Vec::new();
    for part in parts(body) {
        match part.get("type").and_then(Value::as_str) {
            Some("image_url") => {
                let url = part.pointer("/image_url/url").and_then(Value::as_str).unwrap_or("");
                seen.push(describe_image(url));
            }
            Some("file_url") => {
                let name = part.get("name").and_then(Value::as_str).unwrap_or("");
                let url = part.get("url").and_then(Value::as_str).unwrap_or("");
                seen.push(format!("file {name:?} {}", fetch(url).await));
            }
            _ => {}
        }
    }
    if seen.is_empty() {
        String::new()
    } else {
        format!("\n\nReceived: {}", seen.join("; "))
    }
}

fn describe_image(url: &str) -> String {
    let Some((mime, data)) = url.strip_prefix("data:").and_then(|u| u.split_once(";base64,")) else {
        return "image: not a base64 data URL".to_owned();
    };
    match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(bytes) => format!("image {mime}, {} bytes", bytes.len()),
        Err(e) => format!("image {mime}: bad base64 ({e})"),
    }
}

/// One GET of a file's URL: `application/pdf, 5678 bytes`, or what failed.
async fn fetch(url: &str) -> String {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => return format!("not fetched: {e}"),
    };
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return format!("fetch failed: {}", e.without_url()),
    };
    let status = response.status();
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    match response.bytes().await {
        Ok(bytes) if status.is_success() => format!("{content_type}, {} bytes", bytes.len()),
        Ok(_) => format!("fetch failed: HTTP {}", status.as_u16()),
        Err(e) => format!("fetch failed: {}", e.without_url()),
    }
}
