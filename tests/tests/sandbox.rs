//! The sandbox chat end to end: a scripted person talks to the whole bridge
//! (ingress, relay, responder, fake Lark and fake FastGPT, in process) through
//! `sandbox_chat::run`, the function behind `sandbox chat`, and the test reads
//! what it printed: private chat, Reset, group members with their own
//! histories, a topic shared by everyone in it, a Markdown card, and /quit;
//! replies printed as they arrive, long lines sent whole, and what `sandbox
//! say` refuses to send; images and files sent from local paths (`/image`,
//! `/file`, `sandbox say --image`), over the Request URL and the long
//! connection, with the fake FastGPT's account of what reached it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt as _, BufReader};

use lark_bridge_tests::fake_fastgpt::FakeAnswer;
use lark_bridge_tests::harness::{Bridge, Options, APP_ID, BOT_OPEN_ID, ENCRYPT_KEY, VERIFICATION_TOKEN};
use lark_bridge_tests::lark_events::ChatRef;
use lark_bridge_tests::sandbox_chat::{self, ChatOptions, LarkUser, Target, Timing};

const SCRIPT: &str = "\
/help
hello
Reset
hello again
/group
hi from you
/as alice
hi from alice
/as you
you again
/topic
topic question
/as bob
bob in the topic
/topic new
markdown please
/quit
never sent
";

/// The lines of `output` from the first one containing `from` on.
fn after<'a>(output: &'a str, from: &str) -> &'a str {
    let at = output.find(from).unwrap_or_else(|| panic!("{from:?} not in the output:\n{output}"));
    let start = output[..at].rfind('\n').map_or(0, |n| n + 1);
    &output[start..]
}

/// The line that follows the echoed input line `input`: the bot's reply.
fn reply_to<'a>(output: &'a str, input: &str) -> &'a str {
    after(output, input).lines().nth(1).unwrap_or_else(|| panic!("no line after {input:?}:\n{output}"))
}

/// The chat's target: the bridge of this test.
fn target_of(b: &Bridge) -> Target {
    Target {
        ingress: b.events_url(),
        lark: b.lark.base_url(),
        encrypt_key: Some(ENCRYPT_KEY.to_owned()),
        verification_token: Some(VERIFICATION_TOKEN.to_owned()),
        app_id: APP_ID.to_owned(),
        bot_open_id: BOT_OPEN_ID.to_owned(),
    }
}

/// What the chat printed so far, readable while it still runs.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_scripted_person_chats_in_private_group_and_topic() {
    let b = Bridge::start().await;
    let target = target_of(&b);
    let timing =
        Timing { timeout: Duration::from_secs(10), quiet: Duration::from_millis(300), poll: Duration::from_millis(25) };
    let options = ChatOptions { timing, echo_input: true, color: false };
    let mut printed = Vec::new();
    let started = Instant::now();
    sandbox_chat::run(target, options, SCRIPT.as_bytes(), &mut printed).await.expect("the chat runs to /quit");
    let elapsed = started.elapsed();
    let out = String::from_utf8(printed).expect("UTF-8 output");
    println!("{out}");

    // The private chat: one history, a new one after Reset.
    assert!(out.contains("/quit or Ctrl-D"), "banner:\n{out}");
    assert!(out.contains("/topic new starts another topic"), "help:\n{out}");
    assert_eq!(reply_to(&out, "[private] you> hello"), "[private] bot> Echo (turn 1): hello");
    let reset = reply_to(&out, "[private] you> Reset");
    assert!(reset.starts_with("[private] bot> New conversation started"), "{reset}");
    assert_eq!(reply_to(&out, "[private] you> hello again"), "[private] bot> Echo (turn 1): hello again");

    // A group: every member has their own history with the bot.
    assert_eq!(reply_to(&out, "[group] you> hi from you"), "[group] bot> Echo (turn 1): hi from you");
    assert_eq!(reply_to(&out, "[group] alice> hi from alice"), "[group] bot> Echo (turn 1): hi from alice");
    assert_eq!(reply_to(&out, "[group] you> you again"), "[group] bot> Echo (turn 2): you again");

    // A topic: one history shared by everyone in it, the reply in the topic.
    let topic_line = after(&out, "] you> topic question").lines().next().expect("the input line");
    let topic = topic_line.strip_prefix("[topic ").and_then(|l| l.split(']').next()).expect("a topic label");
    assert!(topic.starts_with("omt_"), "{topic_line}");
    assert_eq!(reply_to(&out, "] you> topic question"), format!("[topic {topic}] bot> Echo (turn 1): topic question"));
    assert_eq!(
        reply_to(&out, "] bob> bob in the topic"),
        format!("[topic {topic}] bot> Echo (turn 2): bob in the topic")
    );

    // Another topic: a history of its own; the Markdown answer is a card,
    // rendered for the terminal.
    let card = after(&out, "] bob> markdown please");
    let card_header = card.lines().nth(1).expect("the card's header");
    assert!(card_header.starts_with("[topic omt_") && card_header.ends_with("] bot (card)>"), "{card_header}");
    assert!(!card_header.contains(topic), "a new topic: {card_header}");
    assert!(card.contains("  **Echo (turn 1)**: markdown please"), "{card}");
    assert!(card.contains("  • first item") && card.contains("    ◦ nested item"), "{card}");
    assert!(card.contains("  ┌── rust") && card.contains("  │     println!(\"turn 1\");"), "{card}");
    assert!(card.contains("  │ turn │ 1     │"), "{card}");

    // /quit ends the chat; nothing after it is sent.
    assert!(out.trim_end().ends_with("bye"), "{out}");
    assert!(!out.contains("never sent"), "{out}");
    let asked: Vec<String> = b.fastgpt.requests().into_iter().map(|r| r.content).collect();
    assert_eq!(
        asked,
        [
            "hello",
            "hello again",
            "hi from you",
            "hi from alice",
            "you again",
            "topic question",
            "bob in the topic",
            "markdown please"
        ],
        "Reset is answered by the bridge itself"
    );
    assert!(!out.contains("no reply within"), "{out}");
    assert!(elapsed < Duration::from_secs(15), "the chat took {elapsed:?}");
    b.stop().await;
}

#[tokio::test]
async fn refusals_timeouts_late_replies_and_split_answers() {
    let b = Bridge::start().await;
    // A wrong Encrypt Key: the ingress refuses the message, the chat says so.
    let target = Target {
        ingress: b.events_url(),
        lark: b.lark.base_url(),
        encrypt_key: Some("not-the-key".to_owned()),
        verification_token: Some(VERIFICATION_TOKEN.to_owned()),
        app_id: APP_ID.to_owned(),
        bot_open_id: BOT_OPEN_ID.to_owned(),
    };
    let timing = Timing {
        timeout: Duration::from_millis(500),
        quiet: Duration::from_millis(300),
        poll: Duration::from_millis(25),
    };
    let options = ChatOptions { timing, echo_input: true, color: false };
    let mut printed = Vec::new();
    sandbox_chat::run(target.clone(), options, "hello\n".as_bytes(), &mut printed).await.expect("the chat runs to EOF");
    let out = String::from_utf8(printed).expect("UTF-8 output");
    assert!(reply_to(&out, "[private] you> hello").starts_with("not sent: the ingress at "), "{out}");
    assert!(out.trim_end().ends_with("bye"), "EOF ends the chat: {out}");

    // FastGPT is slow: the chat gives up waiting and says where to look; the
    // answer, when it comes while the person is idle, is shown as late.
    let target = Target { encrypt_key: Some(ENCRYPT_KEY.to_owned()), ..target };
    b.fastgpt.push_responses(vec![FakeAnswer::Delay(Duration::from_secs(1), Box::new(FakeAnswer::Echo))]);
    let (mut typing, input) = tokio::io::duplex(1024);
    let person = tokio::spawn(async move {
        typing.write_all(b"slow\n").await.expect("type");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        typing.write_all(b"/quit\n").await.expect("type");
    });
    let mut printed = Vec::new();
    sandbox_chat::run(target.clone(), options, BufReader::new(input), &mut printed).await.expect("the chat runs");
    person.await.expect("the person typed");
    let out = String::from_utf8(printed).expect("UTF-8 output");
    let line = reply_to(&out, "[private] you> slow");
    assert!(line.starts_with("no reply within 0.5 s: check .sandbox/logs/*.log"), "{out}");
    assert!(out.contains("[private] bot (late reply to \"slow\", part 1)> Echo (turn 1): slow"), "{out}");

    // An answer too long for one card comes in parts, shown in order as they
    // arrive: the first as a card (it may be the whole answer), then "part 2".
    b.fastgpt.push_responses(vec![FakeAnswer::long_markdown(40 * 1024)]);
    // (Parts are paced at 5 per second into one chat: the default wait after a card is longer.)
    let timing = Timing { timeout: Duration::from_secs(10), quiet: Timing::default().quiet, ..timing };
    let options = ChatOptions { timing, ..options };
    let mut printed = Vec::new();
    sandbox_chat::run(target, options, "/group\nlong\n".as_bytes(), &mut printed).await.expect("the chat runs");
    let out = String::from_utf8(printed).expect("UTF-8 output");
    let first = out.find("[group] bot (card)>").unwrap_or_else(|| panic!("part 1:\n{out}"));
    let second = out.find("[group] bot (part 2, card)>").unwrap_or_else(|| panic!("part 2:\n{out}"));
    assert!(first < second && !out.contains("part 3"), "{out}");
    assert!(out[first..second].contains("  Section 1\n  ─────────"), "{out}");

    // Nothing to talk to: the chat refuses to start, naming the fake Lark.
    let gone = Target { lark: "http://127.0.0.1:9".to_owned(), ..Target::default() };
    let err = sandbox_chat::run(gone, options, "".as_bytes(), &mut Vec::new()).await.expect_err("no fake Lark");
    assert!(format!("{err:#}").contains("cannot reach the fake Lark at http://127.0.0.1:9"), "{err:#}");
    b.stop().await;
}

/// Replies are printed the moment they arrive: a text reply ends the wait at
/// once, however long the wait after a card would be; a card is on the screen
/// while the chat still waits for a possible next part; and a line far longer
/// than a terminal's 4,095-byte line buffer reaches FastGPT whole.
#[tokio::test]
async fn replies_show_as_they_arrive_and_long_lines_arrive_whole() {
    let b = Bridge::start().await;
    let hour = Duration::from_secs(3600);
    let timing = Timing { timeout: hour, quiet: hour, poll: Duration::from_millis(25) };
    let options = ChatOptions { timing, echo_input: true, color: false };
    let long = "0123456789".repeat(1000);
    let script = format!("hello\n{long}\nReset\n/quit\n");
    let mut printed = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        sandbox_chat::run(target_of(&b), options, script.as_bytes(), &mut printed),
    )
    .await
    .expect("text replies end each wait at once, not after the hour-long wait for more parts")
    .expect("the chat runs to /quit");
    let out = String::from_utf8(printed).expect("UTF-8 output");
    assert_eq!(reply_to(&out, "[private] you> hello"), "[private] bot> Echo (turn 1): hello");
    assert_eq!(reply_to(&out, &format!("[private] you> {long}")), format!("[private] bot> Echo (turn 2): {long}"));
    assert!(reply_to(&out, "[private] you> Reset").starts_with("[private] bot> New conversation started"), "{out}");
    let asked: Vec<usize> = b.fastgpt.requests().into_iter().map(|r| r.content.len()).collect();
    assert_eq!(asked, [5, long.len()], "the long line reached FastGPT whole");

    // A card: printed while the chat still waits (an hour here) for a next part.
    let screen = Screen::default();
    let mut writer = screen.clone();
    let chat = sandbox_chat::run(target_of(&b), options, "markdown please\n".as_bytes(), &mut writer);
    let card_shown = async {
        while !screen.text().contains("[private] bot (card)>") {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    tokio::select! {
        done = chat => panic!("the chat ended before the wait after the card did: {done:?}\n{}", screen.text()),
        shown = tokio::time::timeout(Duration::from_secs(30), card_shown) => {
            shown.unwrap_or_else(|_| panic!("the card was not printed while the chat waited:\n{}", screen.text()));
        }
    }
    assert!(screen.text().contains("  **Echo (turn 1)**: markdown please"), "{}", screen.text());
    b.stop().await;
}

/// `sandbox say ""` in a private chat: Lark sends no empty message there, so
/// the sandbox says so and sends nothing; in a group, a bare @mention of the
/// bot is a message, and the bot answers with its hint.
#[tokio::test]
async fn an_empty_message_is_refused_in_private_and_hinted_in_a_group() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["say", "--lark", "http://127.0.0.1:9", ""])
        .output()
        .expect("run sandbox say");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Lark sends no empty message in a private chat"), "{stderr}");
    assert!(!stderr.contains("@mention, for example"), "no group hint in a private chat: {stderr}");

    let b = Bridge::start().await;
    let mut user = LarkUser::connect(target_of(&b)).await.expect("the fake Lark answers");
    let p2p = ChatRef::P2p { chat_id: "oc_empty_p2p".into() };
    let err = user.send(&p2p, "ou_empty", "  ").await.expect_err("nothing to send");
    assert!(format!("{err:#}").contains("no empty message in a private chat"), "{err:#}");

    let group = ChatRef::Group { chat_id: "oc_empty_group".into() };
    let id = user.send(&group, "ou_empty", "").await.expect("a bare @mention is sent");
    let timing = Timing { timeout: Duration::from_secs(10), ..Timing::default() };
    let replies = user.wait_for_replies(&id, timing).await.expect("replies").replies;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].text.contains("in the same message as the @mention"), "{}", replies[0].text);
    assert!(b.fastgpt.requests().is_empty(), "FastGPT is not asked");
    b.stop().await;
}

/// A 1x1 PNG.
const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\x0d\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99\x3d\x1d\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

/// A small PDF, padded to `size` bytes with comments.
fn pdf(size: usize) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec();
    while pdf.len() < size {
        pdf.extend_from_slice(b"% padding\n");
    }
    pdf
}

/// The bridge with files on, as `deploy/run-local`'s sandbox config has it:
/// `ingress.files_signing_key`, and `ingress.public_url` (known once the
/// ingress listens) for the relay's links; a small files bucket (it reserves
/// its limit on JetStream's disk) and files up to 8 MB.
async fn bridge_with_files() -> Bridge {
    let env = vec![
        ("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY", "sandbox-test-files-signing-key-0123456789".to_owned()),
        ("LARK_BRIDGE__NATS__FILES_MAX_BYTES", (16 * 1024 * 1024).to_string()),
        ("LARK_BRIDGE__RELAY__MAX_FILE_BYTES", (8 * 1024 * 1024).to_string()),
    ];
    let mut b = Bridge::start_with(Options { relays: 0, env, ..Default::default() }).await;
    b.settings.ingress.public_url = Some(b.url("/").parse().expect("the ingress's URL"));
    b.spawn_relay().await;
    b
}

/// From the echoed input line `input` to the next prompt: the notes and
/// replies it got.
fn answer_to<'a>(output: &'a str, input: &str) -> &'a str {
    let from = after(output, input);
    let rest = &from[from.find('\n').map_or(from.len(), |n| n + 1)..];
    let end = rest.find("] you> ").and_then(|p| rest[..p].rfind('\n')).map_or(rest.len(), |n| n + 1);
    &rest[..end]
}

/// `/image PATH` and `/file PATH` through the real bridge: each is uploaded
/// to the fake Lark, sent as an image or a file message (encrypted and
/// signed), downloaded by the relay, and the fake FastGPT's echo says what
/// it received (a PDF over axum's default 2 MB body, fetched through the
/// ingress's signed link). What Lark would not send is refused before any
/// upload, with the reason; `sandbox say --image` does the same.
#[tokio::test]
async fn images_and_files_from_local_paths_reach_fastgpt() {
    let b = bridge_with_files().await;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let png = dir.path().join("pixel.png");
    std::fs::write(&png, PNG).expect("write the PNG");
    let report = pdf(3 * 1024 * 1024);
    let pdf_path = dir.path().join("Q3 report.pdf");
    std::fs::write(&pdf_path, &report).expect("write the PDF");
    let big = dir.path().join("big.bin");
    // Sparse: only its length is set; refused on that alone.
    std::fs::File::create(&big).and_then(|f| f.set_len(100 * 1024 * 1024 + 1)).expect("a sparse file");
    let (png, pdf_path, big, dir_path) =
        (png.display(), pdf_path.display(), big.display(), dir.path().display().to_string());
    let script = format!(
        "/help\n/image {png}\n/file '{pdf_path}'\n/image\n/image {dir_path}/missing.png\n/file {dir_path}\n\
         /file {big}\n/group\n/image {png}\n/quit\n"
    );
    let timing =
        Timing { timeout: Duration::from_secs(20), quiet: Duration::from_millis(300), poll: Duration::from_millis(25) };
    let options = ChatOptions { timing, echo_input: true, color: false };
    let mut printed = Vec::new();
    sandbox_chat::run(target_of(&b), options, script.as_bytes(), &mut printed).await.expect("the chat runs to /quit");
    let out = String::from_utf8(printed).expect("UTF-8 output");
    println!("{out}");

    let help = answer_to(&out, "[private] you> /help");
    assert!(help.contains("\n  /image PATH ") && help.contains("\n  /file PATH "), "{help}");
    let image = answer_to(&out, &format!("[private] you> /image {png}"));
    let note = format!("(image pixel.png, {} bytes, sent with image_key img_v3_", PNG.len());
    assert!(image.starts_with(&note), "{image}");
    assert!(image.contains(&format!("Received: image image/png, {} bytes", PNG.len())), "{image}");
    assert!(image.contains("[private] bot"), "{image}");
    let file = answer_to(&out, "[private] you> /file '");
    assert!(file.starts_with("(file Q3 report.pdf, 3.0 MB, sent with file_key file_v3_"), "{file}");
    let received = format!("Received: file \"Q3 report.pdf\" application/pdf, {} bytes", report.len());
    assert!(file.contains(&received), "{file}");

    // Refused before any upload, each with its reason.
    assert!(answer_to(&out, "[private] you> /image\n").starts_with("Usage: /image PATH"), "{out}");
    let missing = answer_to(&out, "/missing.png");
    assert_eq!(missing, format!("not sent: no such file: {dir_path}/missing.png\n"));
    let folder = answer_to(&out, &format!("[private] you> /file {dir_path}\n"));
    assert_eq!(folder, format!("not sent: {dir_path} is a directory: /file sends one file\n"));
    let too_big = answer_to(&out, "/big.bin");
    let refusal = format!("not sent: {big} is 100.0 MB (104857601 bytes), over Lark's limit of 100 MB");
    assert!(too_big.starts_with(&refusal), "{too_big}");
    assert!(too_big.contains("234037") && too_big.contains("not uploaded"), "{too_big}");

    // In a group: an image message carries no @mention; the reply lands in the group.
    let group = answer_to(&out, &format!("[group] you> /image {png}"));
    assert!(group.contains("[group] bot"), "{group}");
    assert!(group.contains(&format!("Received: image image/png, {} bytes", PNG.len())), "{group}");

    let downloads = b.lark.resources().downloads();
    let kinds: Vec<_> = downloads.iter().map(|d| (d.type_param.as_deref(), d.code)).collect();
    assert_eq!(kinds, [(Some("image"), 0), (Some("file"), 0), (Some("image"), 0)], "three uploads, three downloads");
    assert_eq!(b.fastgpt.requests().len(), 3, "FastGPT asked once per image or file");

    // `sandbox say --image`: the same message, its reply printed.
    let bin = env!("CARGO_BIN_EXE_sandbox");
    let said = tokio::process::Command::new(bin)
        .args(["say", "--ingress", &b.events_url(), "--lark", &b.lark.base_url(), "--encrypt-key", ENCRYPT_KEY])
        .args(["--verification-token", VERIFICATION_TOKEN, "--app-id", APP_ID, "--bot-open-id", BOT_OPEN_ID])
        .args(["--timeout", "20", "--image", &png.to_string()])
        .output()
        .await
        .expect("run sandbox say");
    let (stdout, stderr) = (String::from_utf8_lossy(&said.stdout), String::from_utf8_lossy(&said.stderr));
    assert!(said.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("Received: image image/png, {} bytes", PNG.len())), "{stdout}");
    // Refused before the fake Lark is even looked for.
    let refused = tokio::process::Command::new(bin)
        .args(["say", "--lark", "http://127.0.0.1:9", "--file", &dir_path])
        .output()
        .await
        .expect("run sandbox say");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("is a directory"), "{stderr}");
    b.stop().await;
}

/// A channel on the long connection: `/image` goes the way text does, the
/// Request URL refusing it and the fake Lark pushing it over the connection.
#[tokio::test]
async fn an_image_reaches_a_long_connection_channel() {
    let b = Bridge::start_with(Options { long_connection: true, ..Default::default() }).await;
    let connected = b.lark.long_connection().wait_for_connections(APP_ID, 1, Duration::from_secs(20)).await;
    assert_eq!(connected, 1, "the ingress dialled the fake Lark");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let png = dir.path().join("pixel.png");
    std::fs::write(&png, PNG).expect("write the PNG");
    let target = Target { encrypt_key: None, verification_token: None, ..target_of(&b) };
    let timing =
        Timing { timeout: Duration::from_secs(20), quiet: Duration::from_millis(300), poll: Duration::from_millis(25) };
    let options = ChatOptions { timing, echo_input: true, color: false };
    let script = format!("/image {}\n/quit\n", png.display());
    let mut printed = Vec::new();
    sandbox_chat::run(target, options, script.as_bytes(), &mut printed).await.expect("the chat runs to /quit");
    let out = String::from_utf8(printed).expect("UTF-8 output");
    let image = answer_to(&out, "[private] you> /image ");
    assert!(image.contains(&format!("Received: image image/png, {} bytes", PNG.len())), "{out}");
    b.stop().await;
}
