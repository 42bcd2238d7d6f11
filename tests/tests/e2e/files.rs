//! Images and files reach FastGPT: an image
//! message, a post with images, a PDF through a signed link served by the
//! ingress, and each refusal with its notice, FastGPT not asked.
//!
//! The fake Lark serves the messages' resources (with its codes and broken
//! bodies); the fake FastGPT decodes the images and fetches the files' links
//! as FastGPT does, and its echo says what it received.

use std::time::Duration;

use lark_bridge_tests::eventually::{eventually, throughout, until};
use lark_bridge_tests::fake_lark::resources::BodyFault;
use lark_bridge_tests::fake_lark::{Endpoint, Failure};
use lark_bridge_tests::harness::{Bridge, Options, APP_ID};
use lark_bridge_tests::lark_events::{text_run, ChatRef};
use relay::attachments::notice;
use serde_json::{json, Value};

use crate::pipeline::WAIT;

/// A 1x1 PNG.
const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\x0d\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99\x3d\x1d\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

/// A small PDF, padded to `size` bytes with a comment.
fn pdf(size: usize) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec();
    while pdf.len() < size {
        pdf.extend_from_slice(b"% padding\n");
    }
    pdf
}

const SIGNING_KEY: &str = "e2e-files-signing-key-0123456789abcdef";
const MAX_FILE_BYTES: usize = 256 * 1024;

fn chat(id: &str) -> ChatRef {
    ChatRef::P2p { chat_id: id.into() }
}

/// The bridge with files on: the ingress holds the signing key, the relay
/// also its public address (known once the ingress listens). `env` adds to
/// small limits (the bucket reserves its limit on JetStream's disk).
async fn start(env: Vec<(&'static str, String)>) -> Bridge {
    let mut all = vec![
        ("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY", SIGNING_KEY.to_owned()),
        ("LARK_BRIDGE__NATS__FILES_MAX_BYTES", (4 * 1024 * 1024).to_string()),
        ("LARK_BRIDGE__RELAY__MAX_FILE_BYTES", MAX_FILE_BYTES.to_string()),
    ];
    all.retain(|(k, _)| !env.iter().any(|(e, _)| e == k));
    all.extend(env);
    let mut b = Bridge::start_with(Options { relays: 0, env: all, ..Default::default() }).await;
    b.settings.ingress.public_url = Some(b.url("/").parse().expect("the ingress's URL"));
    b.spawn_relay().await;
    b
}

/// The content parts FastGPT got in its `n`-th request.
fn parts(b: &Bridge, n: usize) -> Vec<Value> {
    let body = &b.fastgpt.requests()[n].body;
    body.pointer("/messages/0/content").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// The one reply shown for `message_id`.
async fn reply_to(b: &Bridge, message_id: &str) -> String {
    eventually(WAIT, &format!("a reply to {message_id}"), || async {
        b.lark.visible_messages().iter().find(|m| m.reply_to() == Some(message_id)).map(|m| m.text())
    })
    .await
}

/// Checks for a while that the chat shows exactly one answer: nothing more
/// comes after it (a retry must not answer twice).
async fn one_answer_throughout(b: &Bridge) {
    throughout(Duration::from_millis(1500), "one answer", || async { b.lark.visible_messages().len() == 1 }).await;
}

/// The status of `GET {path}` sent byte for byte, path unresolved.
async fn raw_get(b: &Bridge, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = b.ingress_addr.expect("the ingress runs");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("read");
    let head = String::from_utf8_lossy(&answer);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {head}"))
}

/// `exp` and `sig` of a link.
fn query(link: &str) -> (String, String) {
    let url = reqwest::Url::parse(link).expect("a link");
    let get = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()).expect(k);
    (get("exp"), get("sig"))
}

#[tokio::test]
async fn an_image_reaches_fastgpt_as_a_data_url() {
    let b = start(vec![]).await;
    b.lark.resources().add_image("om_img", "img_v2_photo", PNG);
    b.deliver_ok(&b.events().message_id("om_img").image(&chat("oc_img"), "ou_i", "img_v2_photo")).await;
    let said = reply_to(&b, "om_img").await;
    assert!(said.contains(&format!("Received: image image/png, {} bytes", PNG.len())), "{said}");
    let parts = parts(&b, 0);
    assert_eq!(parts.len(), 1, "an image alone, without an empty text part: {parts:?}");
    assert_eq!(parts[0]["type"], "image_url");
    assert!(parts[0]
        .pointer("/image_url/url")
        .and_then(Value::as_str)
        .is_some_and(|u| u.starts_with("data:image/png;base64,iVBOR")));
    let downloads = b.lark.resources().downloads();
    assert_eq!(downloads.len(), 1);
    assert_eq!(downloads[0].type_param.as_deref(), Some("image"), "images are downloaded with type=image");
    b.stop().await;
}

#[tokio::test]
async fn a_post_with_images_asks_its_text_with_them() {
    let b = start(vec![]).await;
    b.lark.resources().add_image("om_post_img", "img_a", PNG);
    b.lark.resources().add_image("om_post_img", "img_b", PNG);
    let img = |key: &str| json!({ "tag": "img", "image_key": key });
    let post = b.events().message_id("om_post_img").post(
        &chat("oc_post"),
        "ou_p",
        "Screenshots",
        vec![vec![text_run("Why does this fail?")], vec![img("img_a")], vec![img("img_b")], vec![img("img_a")]],
        &[],
    );
    b.deliver_ok(&post).await;
    let said = reply_to(&b, "om_post_img").await;
    assert!(said.contains("Screenshots\nWhy does this fail?"), "the post's text is the question: {said}");
    let parts = parts(&b, 0);
    let kinds: Vec<&str> = parts.iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(kinds, ["text", "image_url", "image_url"], "each image once: {parts:?}");
    assert_eq!(parts[0]["text"], "Screenshots\nWhy does this fail?");
    b.stop().await;
}

#[tokio::test]
async fn a_pdf_reaches_fastgpt_through_a_signed_link() {
    let b = start(vec![]).await;
    let file = pdf(40_000);
    b.lark.resources().add_file("om_pdf", "file_v2_report", file.clone());
    let content = json!({ "file_key": "file_v2_report", "file_name": "Q3 report.pdf" });
    b.deliver_ok(&b.events().message_id("om_pdf").message(&chat("oc_pdf"), "ou_f", "file", &content, &[])).await;
    let said = reply_to(&b, "om_pdf").await;
    assert!(said.contains(&format!("file \"Q3 report.pdf\" application/pdf, {} bytes", file.len())), "{said}");
    let parts = parts(&b, 0);
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(parts[0]["type"], "file_url");
    assert_eq!(parts[0]["name"], "Q3 report.pdf");
    let link = parts[0]["url"].as_str().expect("a link").to_owned();
    assert!(link.starts_with(&b.url("/files/")) && link.contains("/Q3%20report.pdf?exp="), "{link}");
    assert_eq!(b.lark.resources().downloads()[0].type_param.as_deref(), Some("file"));

    // The link serves the file, as FastGPT fetches it.
    let got = b.http.get(&link).send().await.expect("served");
    assert_eq!(got.status(), 200);
    let h = got.headers().clone();
    assert_eq!(h["content-type"], "application/pdf");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["accept-ranges"], "bytes");
    let disposition = h["content-disposition"].to_str().expect("ASCII");
    assert!(disposition.starts_with("attachment; filename=\"Q3 report.pdf\""), "{disposition}");
    assert_eq!(got.bytes().await.expect("body").as_ref(), file.as_slice());

    // HEAD: the headers alone.
    let head = b.http.head(&link).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], file.len().to_string().as_str());
    assert!(head.bytes().await.expect("no body").is_empty());

    // One range.
    let part = b.http.get(&link).header("range", "bytes=100-199").send().await.expect("range");
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 100-199/{}", file.len()).as_str());
    assert_eq!(part.bytes().await.expect("body").as_ref(), &file[100..200]);
    let tail = b.http.get(&link).header("range", "bytes=-10").send().await.expect("suffix");
    assert_eq!(tail.bytes().await.expect("body").as_ref(), &file[file.len() - 10..]);
    let past = b.http.get(&link).header("range", format!("bytes={}-", file.len())).send().await.expect("past");
    assert_eq!(past.status(), 416);

    // Anything else is 404, all alike.
    let (exp, sig) = query(&link);
    let object = link.split("/files/").nth(1).and_then(|r| r.split('/').next()).expect("object").to_owned();
    let later = exp.parse::<u64>().expect("exp") + 60;
    let mut flipped = sig.clone().into_bytes();
    flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).expect("hex");
    let other_object = common::topology::keys::file_object("support", "om_other", "file_other");
    for (what, path) in [
        ("tampered signature", format!("/files/{object}/Q3%20report.pdf?exp={exp}&sig={flipped}")),
        ("expiry moved", format!("/files/{object}/Q3%20report.pdf?exp={later}&sig={sig}")),
        ("another object's signature", format!("/files/{other_object}/Q3%20report.pdf?exp={exp}&sig={sig}")),
        ("no signature", format!("/files/{object}/Q3%20report.pdf?exp={exp}")),
        ("another name", format!("/files/{object}/other.pdf?exp={exp}&sig={sig}")),
        ("traversal in the name", format!("/files/{object}/..%2F..%2Flark%2Fsupport%2Fevents?exp={exp}&sig={sig}")),
        ("traversal", format!("/files/{object}/../../status?exp={exp}&sig={sig}")),
        ("traversal", format!("/files/../lark/support/events?exp={exp}&sig={sig}")),
        ("encoded traversal", format!("/files/%2e%2e/Q3%20report.pdf?exp={exp}&sig={sig}")),
        ("no name", format!("/files/{object}?exp={exp}&sig={sig}")),
        ("listing", "/files/".to_owned()),
        ("listing", "/files".to_owned()),
    ] {
        // Sent as written: an HTTP client would resolve the `..` itself.
        assert_eq!(raw_get(&b, &path).await, 404, "{what}: {path}");
    }
    b.stop().await;
}

/// A redelivered event (here: FastGPT failed the first time) downloads and
/// stores again under the same object name: one object, one answer.
#[tokio::test]
async fn a_retried_file_replaces_its_object_and_is_answered_once() {
    let b = start(vec![]).await;
    b.fastgpt
        .push_responses(vec![lark_bridge_tests::fake_fastgpt::FakeAnswer::Status { status: 503, body: Value::Null }]);
    b.lark.resources().add_file("om_again", "file_again", pdf(10_000));
    let content = json!({ "file_key": "file_again", "file_name": "again.pdf" });
    b.deliver_ok(&b.events().message_id("om_again").message(&chat("oc_again"), "ou_a", "file", &content, &[])).await;
    let said = reply_to(&b, "om_again").await;
    assert!(said.contains("file \"again.pdf\" application/pdf"), "{said}");
    assert_eq!(b.fastgpt.requests().len(), 2, "asked again after the 503");
    assert_eq!(b.lark.resources().downloads().len(), 2, "downloaded at each attempt");
    let store = b.js.get_object_store(b.topology().files_bucket()).await.expect("the files bucket");
    let mut objects = store.list().await.expect("list");
    let mut names = Vec::new();
    while let Some(o) = futures::StreamExt::next(&mut objects).await {
        names.push(o.expect("object").name);
    }
    assert_eq!(names.len(), 1, "the second store replaced the first: {names:?}");
    one_answer_throughout(&b).await;
    b.stop().await;
}

#[tokio::test]
async fn too_big_is_refused_by_our_limit_and_by_larks() {
    let b = start(vec![]).await;
    // Announced larger than relay.max_file_bytes: refused before reading.
    b.lark.resources().add_file("om_big", "file_big", pdf(MAX_FILE_BYTES + 1));
    // Not announced (chunked): cut off at the limit.
    b.lark.resources().add_file("om_big_chunked", "file_big_chunked", pdf(MAX_FILE_BYTES * 2));
    b.lark.resources().fault_next("om_big_chunked", "file_big_chunked", vec![BodyFault::Unannounced]);
    // Over Lark's 100 MB: 234037.
    b.lark.resources().too_large("om_huge", "file_huge");
    for (id, key) in [("om_big", "file_big"), ("om_big_chunked", "file_big_chunked"), ("om_huge", "file_huge")] {
        let content = json!({ "file_key": key, "file_name": "big.pdf" });
        b.deliver_ok(&b.events().message_id(id).message(&chat(&format!("oc_{id}")), "ou_b", "file", &content, &[]))
            .await;
    }
    for id in ["om_big", "om_big_chunked", "om_huge"] {
        assert_eq!(reply_to(&b, id).await, notice::too_big(MAX_FILE_BYTES as u64), "{id}");
    }
    assert!(b.fastgpt.requests().is_empty(), "FastGPT is not asked");
    b.stop().await;
}

#[tokio::test]
async fn what_cannot_be_read_gets_a_notice_naming_why() {
    let b = start(vec![]).await;
    // 234043: nothing to download (as for stickers, cards, merged forwards).
    b.lark.resources().not_downloadable("om_card", "file_card");
    let card = json!({ "file_key": "file_card", "file_name": "card" });
    b.deliver_ok(&b.events().message_id("om_card").message(&chat("oc_card"), "ou_n", "file", &card, &[])).await;
    // A type FastGPT does not read.
    let mut zip = b"PK\x03\x04\x14\0".to_vec();
    zip.extend_from_slice(&[0; 20]);
    zip.extend_from_slice(&[8, 0, 0, 0]);
    zip.extend_from_slice(b"song.mp3");
    zip.extend_from_slice(&[0; 64]);
    b.lark.resources().add_file("om_zip", "file_zip", zip);
    let archive = json!({ "file_key": "file_zip", "file_name": "music.zip" });
    b.deliver_ok(&b.events().message_id("om_zip").message(&chat("oc_zip"), "ou_n", "file", &archive, &[])).await;
    // A sticker is not even downloaded.
    let sticker = json!({ "file_key": "file_sticker" });
    b.deliver_ok(&b.events().message_id("om_sticker").message(&chat("oc_st"), "ou_n", "sticker", &sticker, &[])).await;

    assert_eq!(reply_to(&b, "om_card").await, notice::NOT_DOWNLOADABLE);
    let zip_said = reply_to(&b, "om_zip").await;
    assert!(zip_said.contains("\"music.zip\"") && zip_said.contains("I read PDF"), "{zip_said}");
    assert_eq!(reply_to(&b, "om_sticker").await, notice::not_readable("sticker"));
    assert!(b.fastgpt.requests().is_empty(), "FastGPT is not asked");
    assert_eq!(b.lark.resources().downloads().len(), 2, "no download for the sticker");
    b.stop().await;
}

#[tokio::test]
async fn a_failing_download_is_retried_and_answered_once() {
    let b = start(vec![]).await;
    b.lark.resources().add_image("om_flaky", "img_flaky", PNG.repeat(100));
    b.lark.fail_next(Endpoint::Resource, vec![Failure::Http500]);
    b.lark.resources().fault_next("om_flaky", "img_flaky", vec![BodyFault::CutHalfway]);
    b.deliver_ok(&b.events().message_id("om_flaky").image(&chat("oc_flaky"), "ou_f", "img_flaky")).await;
    let said = reply_to(&b, "om_flaky").await;
    assert!(said.contains(&format!("Received: image image/png, {} bytes", PNG.len() * 100)), "whole: {said}");
    let downloads = b.lark.resources().downloads();
    assert_eq!(downloads.len(), 3, "a 500, a body cut halfway, then whole: {downloads:?}");
    assert_eq!(b.fastgpt.requests().len(), 1, "FastGPT asked once");
    one_answer_throughout(&b).await;
    b.stop().await;
}

#[tokio::test]
async fn a_download_failing_at_every_attempt_gets_a_notice() {
    let b = start(vec![("LARK_BRIDGE__RELAY__MAX_ATTEMPTS", "2".into())]).await;
    b.lark.resources().add_image("om_down", "img_down", PNG);
    b.lark.fail_next(Endpoint::Resource, vec![Failure::Http500, Failure::Http500]);
    b.deliver_ok(&b.events().message_id("om_down").image(&chat("oc_down"), "ou_d", "img_down")).await;
    assert_eq!(reply_to(&b, "om_down").await, notice::download_failed(2));
    assert!(b.fastgpt.requests().is_empty());
    b.stop().await;
}

#[tokio::test]
async fn a_missing_scope_is_a_notice_and_an_error_for_the_operator() {
    let b = start(vec![]).await;
    b.lark.remove_scope(APP_ID, "im:message:readonly");
    b.lark.resources().add_image("om_scope", "img_scope", PNG);
    b.deliver_ok(&b.events().message_id("om_scope").image(&chat("oc_scope"), "ou_s", "img_scope")).await;
    assert_eq!(reply_to(&b, "om_scope").await, notice::REFUSED);
    assert!(b.fastgpt.requests().is_empty());
    b.stop().await;
}

#[tokio::test]
async fn a_full_files_bucket_refuses_the_next_file() {
    // Room for one file of 150 KiB (with the room kept for its metadata), not two.
    let b = start(vec![
        ("LARK_BRIDGE__NATS__FILES_MAX_BYTES", (300 * 1024).to_string()),
        ("LARK_BRIDGE__RELAY__MAX_FILE_BYTES", (200 * 1024).to_string()),
    ])
    .await;
    for id in ["om_first", "om_second"] {
        b.lark.resources().add_file(id, "file_1", pdf(150 * 1024));
    }
    let content = json!({ "file_key": "file_1", "file_name": "a.pdf" });
    b.deliver_ok(&b.events().message_id("om_first").message(&chat("oc_full1"), "ou_x", "file", &content, &[])).await;
    assert!(reply_to(&b, "om_first").await.contains("application/pdf"));
    b.deliver_ok(&b.events().message_id("om_second").message(&chat("oc_full2"), "ou_x", "file", &content, &[])).await;
    assert_eq!(reply_to(&b, "om_second").await, notice::STORE_FULL);
    assert_eq!(b.fastgpt.requests().len(), 1, "FastGPT is not asked about the refused file");
    b.stop().await;
}

#[tokio::test]
async fn without_files_a_file_gets_a_notice_and_images_still_work() {
    let b = Bridge::start().await;
    b.lark.resources().add_file("om_nofiles", "file_1", pdf(2_000));
    b.lark.resources().add_image("om_stillimg", "img_1", PNG);
    let content = json!({ "file_key": "file_1", "file_name": "a.pdf" });
    b.deliver_ok(&b.events().message_id("om_nofiles").message(&chat("oc_nf"), "ou_x", "file", &content, &[])).await;
    b.deliver_ok(&b.events().message_id("om_stillimg").image(&chat("oc_ni"), "ou_x", "img_1")).await;
    assert_eq!(reply_to(&b, "om_nofiles").await, notice::FILES_DISABLED);
    assert!(reply_to(&b, "om_stillimg").await.contains("Received: image image/png"));
    assert_eq!(b.fastgpt.requests().len(), 1, "only the image is asked");
    assert_eq!(b.http.get(b.url("/files/")).send().await.expect("answer").status(), 404, "no files route");
    b.stop().await;
}

#[tokio::test]
async fn links_expire_with_their_files() {
    let b = start(vec![("LARK_BRIDGE__NATS__FILES_MAX_AGE_SECS", "2".into())]).await;
    let file = pdf(1_000);
    b.lark.resources().add_file("om_short", "file_short", file.clone());
    let content = json!({ "file_key": "file_short", "file_name": "short.pdf" });
    b.deliver_ok(&b.events().message_id("om_short").message(&chat("oc_short"), "ou_x", "file", &content, &[])).await;
    let said = reply_to(&b, "om_short").await;
    assert!(said.contains(&format!("application/pdf, {} bytes", file.len())), "{said}");
    let link = parts(&b, 0)[0]["url"].as_str().expect("a link").to_owned();
    until(WAIT, "the link expires with its file", || async {
        b.http.get(&link).send().await.is_ok_and(|r| r.status() == 404)
    })
    .await;
    let store = b.js.get_object_store(b.topology().files_bucket()).await.expect("the files bucket");
    let object = link.split("/files/").nth(1).and_then(|r| r.split('/').next()).expect("object").to_owned();
    // JetStream removes expired messages on its own schedule, a moment later.
    until(WAIT, "the object expired too", || async { store.info(&object).await.is_err() }).await;
    b.stop().await;
}

/// The resident memory of process `pid`, in bytes (`VmRSS`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// A client that sends `GET {path}` and then never reads: a socket with a
/// tiny receive buffer, so the ingress's writes stall almost at once.
async fn stalled_get(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let mut conn = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    conn
}

/// Clients that ask for a file and stop reading cost the ingress a few
/// chunks each, not the file: the real ingress binary, a 10 MiB file, 16
/// stalled downloads, its resident memory measured before and during.
#[tokio::test]
async fn stalled_downloads_cost_a_few_chunks_each_not_the_file() {
    use crate::procs::{ProcBridge, Service};
    const SIZE: usize = 10 * 1024 * 1024;
    const CLIENTS: u64 = 16;
    let b = ProcBridge::start(vec![
        ("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY".into(), SIGNING_KEY.into()),
        ("LARK_BRIDGE__NATS__FILES_MAX_BYTES".into(), (24 * 1024 * 1024).to_string()),
    ])
    .await;
    // The file as the relay stores it (default chunks of 128 KiB), with its link.
    let topology = common::topology::Topology::new(&b.settings.nats);
    let store = topology.files(&b.js).await.expect("the files bucket");
    let object = common::topology::keys::file_object("support", "om_big_download", "file_big");
    let file: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let meta = async_nats::jetstream::object_store::ObjectMetadata {
        name: object.clone(),
        metadata: [
            (common::file_link::META_NAME.to_owned(), "big.pdf".to_owned()),
            (common::file_link::META_TYPE.to_owned(), "application/pdf".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    store.put(meta, &mut file.as_slice()).await.expect("stored");
    let addr = b.addr(Service::Ingress);
    let signer = common::file_link::LinkSigner::new(
        secrecy::SecretString::from(SIGNING_KEY.to_owned()),
        topology.files_max_age(),
    );
    let base = reqwest::Url::parse(&format!("http://{addr}/")).expect("the ingress's URL");
    let link = signer.link(&base, &object, "big.pdf", common::file_link::now_secs());
    let path = link.strip_prefix(&format!("http://{addr}")).expect("a path").to_owned();

    // A whole download and a range across chunks first: the bytes are right,
    // and what one download allocates is in the baseline.
    let got = b.http.get(&link).send().await.expect("served");
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.expect("body").as_ref() == file.as_slice(), "the whole file, byte for byte");
    let (from, to) = (131_000, 400_000);
    let part = b.http.get(&link).header("range", format!("bytes={from}-{to}")).send().await.expect("range");
    assert_eq!(part.status(), 206);
    assert!(part.bytes().await.expect("body").as_ref() == &file[from..=to], "a range across chunk boundaries");

    let pid = b.pid(Service::Ingress).expect("the ingress runs");
    let served = || b.raw_logs().iter().filter(|l| l.contains("serving a file")).count();
    let before = rss(pid);
    let already = served();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(stalled_get(addr, &path).await);
    }
    // Every download started, then memory watched until it stops growing
    // for 2 s (or for 20 s at most): what a stalled download buffers, it
    // buffers as fast as NATS sends it.
    while served() < already + CLIENTS as usize {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut during, mut still) = (before, 0);
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss(pid);
        if now > during + 256 * 1024 {
            (during, still) = (now, 0);
        } else {
            during = during.max(now);
            still += 1;
            if still == 20 {
                break;
            }
        }
    }
    let growth = during.saturating_sub(before);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "ingress VmRSS: {:.1} MiB before, {:.1} MiB with {CLIENTS} stalled downloads of a {:.0} MiB file: +{:.1} MiB \
         ({:.2} MiB per download)",
        mib(before),
        mib(during),
        mib(SIZE as u64),
        mib(growth),
        mib(growth / CLIENTS)
    );
    assert!(
        // 2.5 MiB: hyper's write buffer (400 KiB), a chunk being decoded and
        // the allocator's slack, with room; the push consumer's prefetch
        // alone was 4 MiB and more.
        growth < CLIENTS * 5 * 512 * 1024,
        "a stalled download holds at most a few chunks: +{:.1} MiB for {CLIENTS} (the file is {:.0} MiB)",
        mib(growth),
        mib(SIZE as u64)
    );

    // Others are still served meanwhile.
    let got = b.http.get(&link).header("range", "bytes=-1000").send().await.expect("served");
    assert!(got.bytes().await.expect("body").as_ref() == &file[SIZE - 1000..]);
    drop(clients);
    b.stop().await;
}

/// `ingress.public_url` without `ingress.files_signing_key` looks like files
/// are set up: the ingress says at start, as a warning, which key is missing
/// and how to set it.
#[tokio::test]
async fn a_public_url_without_the_signing_key_is_a_warning_naming_the_key() {
    use crate::procs::{ProcBridge, Service};
    let b =
        ProcBridge::start(vec![("LARK_BRIDGE__INGRESS__PUBLIC_URL".into(), "https://bot.example.com".into())]).await;
    let logs = b.logs(Service::Ingress);
    let warned = logs.iter().find(|l| {
        l["level"] == "WARN"
            && l.pointer("/fields/message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains("files are off") && m.contains("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY"))
    });
    let warned = warned.unwrap_or_else(|| panic!("a warning naming the key: {logs:#?}"));
    assert_eq!(warned.pointer("/fields/missing").and_then(Value::as_str), Some("ingress.files_signing_key"));
    b.stop().await;
}
