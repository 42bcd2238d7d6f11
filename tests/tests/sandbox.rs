//! The sandbox chat end to end: a scripted person talks to the whole bridge
//! (ingress, relay, responder, fake Lark and fake FastGPT, in process) through
//! `sandbox_chat::run`, the function behind `sandbox chat`, and the test reads
//! what it printed: private chat, Reset, group members with their own
//! histories, a topic shared by everyone in it, a Markdown card, and /quit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt as _, BufReader};

use lark_bridge_tests::fake_fastgpt::FakeAnswer;
use lark_bridge_tests::harness::{Bridge, APP_ID, BOT_OPEN_ID, ENCRYPT_KEY, VERIFICATION_TOKEN};
use lark_bridge_tests::sandbox_chat::{self, ChatOptions, Target, Timing};

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

#[tokio::test]
async fn a_scripted_person_chats_in_private_group_and_topic() {
    let b = Bridge::start().await;
    let target = Target {
        ingress: b.events_url(),
        lark: b.lark.base_url(),
        encrypt_key: Some(ENCRYPT_KEY.to_owned()),
        verification_token: Some(VERIFICATION_TOKEN.to_owned()),
        app_id: APP_ID.to_owned(),
        bot_open_id: BOT_OPEN_ID.to_owned(),
    };
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

    // An answer too long for one card comes in parts, shown in order.
    b.fastgpt.push_responses(vec![FakeAnswer::long_markdown(40 * 1024)]);
    // (Parts are paced at 5 per second into one chat: the default quiet period waits for them.)
    let timing = Timing { timeout: Duration::from_secs(10), quiet: Timing::default().quiet, ..timing };
    let options = ChatOptions { timing, ..options };
    let mut printed = Vec::new();
    sandbox_chat::run(target, options, "/group\nlong\n".as_bytes(), &mut printed).await.expect("the chat runs");
    let out = String::from_utf8(printed).expect("UTF-8 output");
    let first = out.find("[group] bot (part 1/2, card)>").unwrap_or_else(|| panic!("part 1:\n{out}"));
    let second = out.find("[group] bot (part 2/2, card)>").unwrap_or_else(|| panic!("part 2:\n{out}"));
    assert!(first < second && !out.contains("part 3"), "{out}");
    assert!(out[first..second].contains("  Section 1\n  ─────────"), "{out}");

    // Nothing to talk to: the chat refuses to start, naming the fake Lark.
    let gone = Target { lark: "http://127.0.0.1:9".to_owned(), ..Target::default() };
    let err = sandbox_chat::run(gone, options, "".as_bytes(), &mut Vec::new()).await.expect_err("no fake Lark");
    assert!(format!("{err:#}").contains("cannot reach the fake Lark at http://127.0.0.1:9"), "{err:#}");
    b.stop().await;
}
